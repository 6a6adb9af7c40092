"""IoT Edge routes: ``FROM <source> [WHERE <condition>] INTO <sink>``, parsed once, evaluated per message.

API (stable: the local edge runtime routes messages with it)::

    route = parse_route('FROM /messages/modules/gen/outputs/out WHERE $body.t > 20 INTO $upstream')
    route.source       # Source(kind="module", module="gen", output="out")
    route.sink         # Sink(kind="upstream")  or  Sink(kind="module", module="scorer", input="in1")
    route.condition    # Condition (compiled once) or None
    route.matches_source("gen", "out")                              # -> True
    route.accepts("gen", "out", {"kind": "x"}, {"contentType": "application/json",
                  "contentEncoding": "utf-8"}, b'{"t": 25}')         # source and condition -> True
    route.condition.evaluate(app_properties, system_properties, body_json=None)  # -> bool
    parse_routes(hub_desired["routes"])  # {name: Route} with priority / time_to_live_secs of object routes

Sources (edgeHub's): ``/*`` (everything, twin change notifications too), ``/messages/*`` (telemetry of
leaf devices and modules), ``/messages/modules/*`` (any module), ``/messages/modules/<id>/*`` and
``/messages/modules/<id>/outputs/*`` (any output of one module), ``/messages/modules/<id>/outputs/<name>``,
``/twinChangeNotifications``. Sinks: ``$upstream`` and ``BrokeredEndpoint("/modules/<id>/inputs/<name>")``.

Conditions follow IoT Hub's message routing query language (learn.microsoft.com/azure/iot-hub/
iot-hub-devguide-routing-query-syntax; edgeHub's Microsoft.Azure.Devices.Routing.Core):

- literals: ``'str'``/``"str"`` (escapes ``\\' \\" \\\\ \\uXXXX``), numbers (``12``, ``1.5e3``, ``0x1F``; all
  doubles), ``true``, ``false``, ``null``, ``undefined``;
- ``name``: an application property (exact name, else case-insensitively: IoT Hub's properties are case
  insensitive); ``$name``: an application property of that name if the message has one, else the system
  property (``$contentType``, ``$contentEncoding``, ``$connectionDeviceId``, ``$connectionModuleId``,
  ``$messageId``, ``$correlationId``, ``$userId``, ``$outputName``, ``$enqueuedTime``, ...; the caller's
  ``system_properties`` may use these names without ``$`` or the wire names, e.g. ``iothub-connection-module-id``);
  ``$body.a.b[0]``: the JSON body, only when ``$contentType`` is ``application/json`` and
  ``$contentEncoding`` is UTF-8, UTF-16 or UTF-32 (case-insensitive);
- operators by precedence (loosest first): ``??`` (coalesce), ``OR``, ``AND``, ``NOT``, ``= != <>``,
  ``< <= > >=``, ``+ - ||`` (concat), ``* / %``, unary ``-``; keywords are case-insensitive;
- functions (case-insensitive): IS_DEFINED, IS_NULL, IS_BOOL, IS_NUMBER, IS_STRING, IS_ARRAY, IS_OBJECT,
  IS_PRIMITIVE, AS_NUMBER, LENGTH, LOWER, UPPER, CONCAT, SUBSTRING, INDEX_OF, STARTS_WITH, ENDS_WITH,
  CONTAINS, ABS, CEILING, FLOOR, SIGN, SQRT, SQUARE, EXP, POWER.

Values are typed as in IoT Hub: application properties are strings, so ``severity > 3`` is never true
for a string property (use ``AS_NUMBER(severity) > 3``); an operator on mismatched types or on a missing
property gives *undefined*; AND/OR use three-valued logic; a condition routes the message only when it
is exactly true. Identifiers may hold ``-`` and ``.`` (as in edgeHub): write ``a - 1`` with spaces.
Parse errors raise :class:`RouteError` with ``position`` (0-based offset in the route text) and
``expected``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "UNDEFINED",
    "Condition",
    "Route",
    "RouteError",
    "Sink",
    "Source",
    "parse_condition",
    "parse_route",
    "parse_routes",
]


class RouteError(ValueError):
    """A route or condition that does not parse: ``position`` (0-based), ``expected`` and ``found``."""

    def __init__(self, text: str, position: int, expected: str, found: str | None = None) -> None:
        self.text = text
        self.name: str | None = None  # the route's name, set by parse_routes
        self.position = position
        self.expected = expected
        self.found = (
            found if found is not None else (repr(text[position : position + 12]) if position < len(text) else "end")
        )
        super().__init__(f"at character {position + 1}: expected {expected}, found {self.found}")


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()
"""The value of a missing property or an ill-typed operation."""

# ------------------------------------------------------------------------------------------- lexer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<unterminated>["'])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<sysprop>\$[A-Za-z0-9_.\-\[\]]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<op><>|!=|<=|>=|\|\||\?\?|[=<>()+\-*/%,])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # string number sysprop ident op end
    text: str
    pos: int
    value: Any = None


def _unescape(text: str, source: str, pos: int) -> str:
    def sub(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc[0] == "u":
            return chr(int(esc[1:], 16))
        if esc in "\"'\\":
            return esc
        raise RouteError(source, pos + m.start(), "an escape (\\' \\\" \\\\ or \\uXXXX)", repr(m.group(0)))

    return _ESCAPE_RE.sub(sub, text)


def _lex(source: str, start: int = 0) -> list[_Tok]:
    out: list[_Tok] = []
    pos = start
    while pos < len(source):
        m = _TOKEN_RE.match(source, pos)
        if m is None:
            raise RouteError(source, pos, "an operand or an operator")
        kind = m.lastgroup or ""
        text = m.group(0)
        if kind == "unterminated":
            raise RouteError(source, pos, f"a closing {text}", "end")
        if kind == "string":
            out.append(_Tok(kind, text, pos, _unescape(text[1:-1], source, pos + 1)))
        elif kind == "number":
            value = float(int(text, 16)) if text[:2] in ("0x", "0X") else float(text)
            out.append(_Tok(kind, text, pos, value))
        elif kind != "ws":
            out.append(_Tok(kind, text, pos))
        pos = m.end()
    out.append(_Tok("end", "", len(source)))
    return out


# ---------------------------------------------------------------------------------- evaluation


class _Message:
    """What one evaluation reads; the body is parsed at most once, only if the condition needs it."""

    __slots__ = ("_body", "_parsed", "app", "sys")

    def __init__(self, app: Mapping[str, Any], sys: Mapping[str, Any], body: Any) -> None:
        self.app = app
        self.sys = sys
        self._body = body
        self._parsed: Any = _NOT_PARSED

    def app_property(self, name: str) -> Any:
        value = self.app.get(name, UNDEFINED)
        if value is UNDEFINED:
            folded = name.casefold()
            for key, item in self.app.items():
                if key.casefold() == folded:
                    return item
        return value

    def system_property(self, name: str) -> Any:
        for key in _SYSTEM_ALIASES.get(name.casefold(), (name,)):
            if key in self.sys:
                return self.sys[key]
        return UNDEFINED

    def body(self) -> Any:
        if self._parsed is _NOT_PARSED:
            self._parsed = self._load_body()
        return self._parsed

    def _load_body(self) -> Any:
        ctype = self.system_property("contentType")
        enc = self.system_property("contentEncoding")
        if not isinstance(ctype, str) or ctype.split(";")[0].strip().lower() != "application/json":
            return UNDEFINED
        if not isinstance(enc, str) or enc.strip().lower().replace("_", "-") not in _JSON_ENCODINGS:
            return UNDEFINED
        body = self._body
        if body is None:
            return UNDEFINED
        if isinstance(body, bytes | bytearray | memoryview):
            try:
                body = bytes(body).decode(_JSON_ENCODINGS[enc.strip().lower().replace("_", "-")])
            except UnicodeDecodeError:
                return UNDEFINED
        if isinstance(body, str):
            try:
                return json.loads(body)
            except ValueError:
                return UNDEFINED
        return body


_NOT_PARSED = object()
_JSON_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "utf16": "utf-16", "utf-32": "utf-32"}
# query name (casefolded, no '$') -> keys a caller's system_properties may use for it
_SYSTEM_ALIASES: dict[str, tuple[str, ...]] = {
    "contenttype": ("contentType", "content-type", "$.ct", "iothub-contenttype"),
    "contentencoding": ("contentEncoding", "content-encoding", "$.ce", "iothub-contentencoding"),
    "connectiondeviceid": ("connectionDeviceId", "iothub-connection-device-id", "$.cdid"),
    "connectionmoduleid": ("connectionModuleId", "iothub-connection-module-id", "$.cmid"),
    "messageid": ("messageId", "message-id", "$.mid"),
    "correlationid": ("correlationId", "correlation-id", "$.cid"),
    "userid": ("userId", "user-id", "$.uid"),
    "to": ("to", "$.to"),
    "outputname": ("outputName", "iothub-outputname", "$.on"),
    "inputname": ("inputName", "iothub-inputname"),
    "enqueuedtime": ("enqueuedTime", "iothub-enqueuedtime"),
    "creationtimeutc": ("creationTimeUtc", "iothub-creation-time-utc", "$.ctime"),
    "connectionauthmethod": ("connectionAuthMethod", "iothub-connection-auth-method"),
    "messageschema": ("messageSchema", "$.schema"),
    "interfaceid": ("interfaceId", "dt-dataschema"),
    "componentname": ("componentName", "dt-subject"),
}

_Fn = Callable[[_Message], Any]


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type(v: Any) -> str:
    if v is UNDEFINED:
        return "undefined"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if _is_num(v):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _truth(v: Any) -> bool | None:
    """Three-valued: True, False or None (unknown: null, undefined or not a bool)."""
    return v if isinstance(v, bool) else None


def _and(a: _Fn, b: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        left = _truth(a(m))
        if left is False:
            return False
        right = _truth(b(m))
        if right is False:
            return False
        return True if left and right else UNDEFINED

    return run


def _or(a: _Fn, b: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        left = _truth(a(m))
        if left is True:
            return True
        right = _truth(b(m))
        if right is True:
            return True
        return False if left is False and right is False else UNDEFINED

    return run


def _not(a: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        v = _truth(a(m))
        return UNDEFINED if v is None else not v

    return run


def _coalesce(a: _Fn, b: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        v = a(m)
        return b(m) if v is UNDEFINED else v

    return run


def _compare(op: str, a: _Fn, b: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        left, right = a(m), b(m)
        lt, rt = _type(left), _type(right)
        if lt == "undefined" or rt == "undefined":
            return UNDEFINED
        if lt == "null" or rt == "null":
            if op in ("=", "!=", "<>") and lt == rt:
                return op == "="
            return UNDEFINED
        if lt != rt or lt in ("array", "object"):
            return UNDEFINED
        if op == "=":
            return left == right
        if op in ("!=", "<>"):
            return left != right
        if lt == "bool":
            return UNDEFINED
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left >= right

    return run


def _arith(op: str, a: _Fn, b: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        left, right = a(m), b(m)
        if op == "||":
            return left + right if isinstance(left, str) and isinstance(right, str) else UNDEFINED
        if not (_is_num(left) and _is_num(right)):
            return UNDEFINED
        try:
            if op == "+":
                return float(left + right)
            if op == "-":
                return float(left - right)
            if op == "*":
                return float(left * right)
            if op == "/":
                return left / right
            return math.fmod(left, right)
        except (ZeroDivisionError, ValueError, OverflowError):
            return UNDEFINED

    return run


def _negate(a: _Fn) -> _Fn:
    def run(m: _Message) -> Any:
        v = a(m)
        return -float(v) if _is_num(v) else UNDEFINED

    return run


def _const(value: Any) -> _Fn:
    return lambda m: value


def _app_property(name: str) -> _Fn:
    return lambda m: m.app_property(name)


def _path_steps(path: str, source: str, pos: int) -> list[str | int]:
    steps: list[str | int] = []
    for m in re.finditer(r"\.([^.\[\]]+)|\[(\d+)\]|(.)", path):
        if m.group(3) is not None:
            raise RouteError(source, pos + m.start(), "'.name' or '[index]' in a $body path", repr(m.group(0)))
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return steps


def _body_query(steps: list[str | int], prop: str) -> _Fn:
    def run(m: _Message) -> Any:
        if prop in m.app:
            return m.app[prop]
        value = m.body()
        for step in steps:
            indexable = (isinstance(step, int) and isinstance(value, list) and step < len(value)) or (
                isinstance(step, str) and isinstance(value, dict) and step in value
            )
            if not indexable:
                return UNDEFINED
            value = value[step]
        if _is_num(value):
            return float(value)
        return value

    return run


def _system_property(prop: str) -> _Fn:
    name = prop[1:]

    def run(m: _Message) -> Any:
        if prop in m.app:
            return m.app[prop]
        return m.system_property(name)

    return run


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _num_fn(f: Callable[..., float]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        if not all(_is_num(a) for a in args):
            return UNDEFINED
        try:
            return float(f(*args))
        except (ValueError, OverflowError, ZeroDivisionError):
            return UNDEFINED

    return run


def _as_number(v: Any) -> Any:
    if _is_num(v):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return UNDEFINED
    return UNDEFINED


def _substring(s: Any, start: Any, length: Any = None) -> Any:
    if not _str(s) or not _is_num(start) or (length is not None and not _is_num(length)):
        return UNDEFINED
    begin = max(int(start), 0)
    return s[begin:] if length is None else s[begin : begin + max(int(length), 0)]


# name -> (min args, max args, function); every function gets evaluated argument values
_FUNCTIONS: dict[str, tuple[int, int, Callable[..., Any]]] = {
    "is_defined": (1, 1, lambda v: v is not UNDEFINED),
    "is_null": (1, 1, lambda v: v is None),
    "is_bool": (1, 1, lambda v: isinstance(v, bool)),
    "is_number": (1, 1, _is_num),
    "is_string": (1, 1, _str),
    "is_array": (1, 1, lambda v: isinstance(v, list)),
    "is_object": (1, 1, lambda v: isinstance(v, dict)),
    "is_primitive": (1, 1, lambda v: v is None or isinstance(v, bool | int | float | str)),
    "as_number": (1, 1, _as_number),
    "length": (1, 1, lambda s: float(len(s)) if _str(s) else UNDEFINED),
    "lower": (1, 1, lambda s: s.lower() if _str(s) else UNDEFINED),
    "upper": (1, 1, lambda s: s.upper() if _str(s) else UNDEFINED),
    "concat": (2, 64, lambda *a: "".join(a) if all(map(_str, a)) else UNDEFINED),
    "substring": (2, 3, _substring),
    "index_of": (2, 2, lambda s, x: float(s.find(x)) if _str(s) and _str(x) else UNDEFINED),
    "starts_with": (2, 2, lambda s, x: s.startswith(x) if _str(s) and _str(x) else UNDEFINED),
    "ends_with": (2, 2, lambda s, x: s.endswith(x) if _str(s) and _str(x) else UNDEFINED),
    "contains": (2, 2, lambda s, x: x in s if _str(s) and _str(x) else UNDEFINED),
    "abs": (1, 1, _num_fn(abs)),
    "ceiling": (1, 1, _num_fn(math.ceil)),
    "floor": (1, 1, _num_fn(math.floor)),
    "sign": (1, 1, _num_fn(lambda x: (x > 0) - (x < 0))),
    "sqrt": (1, 1, _num_fn(math.sqrt)),
    "square": (1, 1, _num_fn(lambda x: x * x)),
    "exp": (1, 1, _num_fn(math.exp)),
    "power": (2, 2, _num_fn(math.pow)),
}


def _call(fn: Callable[..., Any], args: list[_Fn]) -> _Fn:
    if len(args) == 1:
        (a,) = args
        return lambda m: fn(a(m))
    if len(args) == 2:
        a, b = args
        return lambda m: fn(a(m), b(m))
    return lambda m: fn(*(arg(m) for arg in args))


# -------------------------------------------------------------------------------------- parser

_KEYWORDS = {"and", "or", "not", "true", "false", "null", "undefined"}
_STOP_WORDS = {"into"}  # ends a WHERE clause


class _Parser:
    """Precedence climbing over tokens; builds closures, never re-reads the text at evaluation time."""

    def __init__(self, source: str, tokens: list[_Tok]) -> None:
        self.source = source
        self.toks = tokens
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, expected: str) -> RouteError:
        t = self.tok
        return RouteError(self.source, t.pos, expected, "end" if t.kind == "end" else repr(t.text))

    def word(self, *words: str) -> bool:
        t = self.tok
        return t.kind == "ident" and t.text.lower() in words

    def op(self, *ops: str) -> bool:
        t = self.tok
        return t.kind == "op" and t.text in ops

    def take(self) -> _Tok:
        t = self.tok
        self.i += 1
        return t

    def expect_op(self, op: str, expected: str | None = None) -> _Tok:
        if not self.op(op):
            raise self.fail(expected or repr(op))
        return self.take()

    # expression := coalesce
    def expression(self) -> _Fn:
        left = self.or_()
        while self.op("??"):
            self.take()
            left = _coalesce(left, self.or_())
        return left

    def or_(self) -> _Fn:
        left = self.and_()
        while self.word("or"):
            self.take()
            left = _or(left, self.and_())
        return left

    def and_(self) -> _Fn:
        left = self.not_()
        while self.word("and"):
            self.take()
            left = _and(left, self.not_())
        return left

    def not_(self) -> _Fn:
        if self.word("not"):
            self.take()
            return _not(self.not_())
        return self.equality()

    def equality(self) -> _Fn:
        left = self.relational()
        while self.op("=", "!=", "<>"):
            op = self.take().text
            left = _compare(op, left, self.relational())
        return left

    def relational(self) -> _Fn:
        left = self.additive()
        while self.op("<", "<=", ">", ">="):
            op = self.take().text
            left = _compare(op, left, self.additive())
        return left

    def additive(self) -> _Fn:
        left = self.multiplicative()
        while self.op("+", "-", "||"):
            op = self.take().text
            left = _arith(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> _Fn:
        left = self.unary()
        while self.op("*", "/", "%"):
            op = self.take().text
            left = _arith(op, left, self.unary())
        return left

    def unary(self) -> _Fn:
        if self.op("-"):
            self.take()
            operand = self.unary()
            return _negate(operand)
        return self.primary()

    def primary(self) -> _Fn:
        t = self.tok
        if t.kind in ("string", "number"):
            self.take()
            return _const(t.value)
        if self.op("("):
            self.take()
            inner = self.expression()
            self.expect_op(")", "')'")
            return inner
        if t.kind == "sysprop":
            self.take()
            if t.text.lower().startswith("$body.") or t.text.lower().startswith("$body["):
                return _body_query(_path_steps(t.text[5:], self.source, t.pos + 5), t.text)
            if "[" in t.text or "]" in t.text:
                raise RouteError(self.source, t.pos, "a system property ($name) or a $body path", repr(t.text))
            return _system_property(t.text)
        if t.kind == "ident":
            low = t.text.lower()
            if low in ("true", "false"):
                self.take()
                return _const(low == "true")
            if low == "null":
                self.take()
                return _const(None)
            if low == "undefined":
                self.take()
                return _const(UNDEFINED)
            if low in _KEYWORDS or low in _STOP_WORDS:
                raise self.fail("an operand (property, literal, function or '(')")
            self.take()
            if self.op("("):
                return self.call(t)
            return _app_property(t.text)
        raise self.fail("an operand (property, literal, function or '(')")

    def call(self, name: _Tok) -> _Fn:
        spec = _FUNCTIONS.get(name.text.lower())
        if spec is None:
            known = ", ".join(n.upper() for n in _FUNCTIONS)
            raise RouteError(self.source, name.pos, f"a known function ({known})", repr(name.text))
        low, high, fn = spec
        self.take()  # (
        args: list[_Fn] = []
        if not self.op(")"):
            args.append(self.expression())
            while self.op(","):
                self.take()
                args.append(self.expression())
        close = self.expect_op(")", "',' or ')'")
        if not low <= len(args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            raise RouteError(
                self.source, name.pos, f"{count} argument(s) for {name.text.upper()}", f"{len(args)} ({close.pos})"
            )
        return _call(fn, args)


@dataclass(frozen=True)
class Condition:
    """A compiled WHERE clause; :meth:`evaluate` runs it against one message."""

    text: str
    _run: _Fn = field(repr=False, compare=False)

    def evaluate(
        self, app_properties: Mapping[str, Any], system_properties: Mapping[str, Any], body_json: Any = None
    ) -> bool:
        """True when the condition is exactly true for the message (null/undefined are false).

        ``body_json``: the body as bytes/str (JSON text, decoded with ``$contentEncoding``) or an already
        parsed value; it is read only by ``$body`` paths and only for JSON content."""
        return self._run(_Message(app_properties, system_properties, body_json)) is True

    def value(
        self, app_properties: Mapping[str, Any], system_properties: Mapping[str, Any], body_json: Any = None
    ) -> Any:
        """The raw value (``UNDEFINED``, None, bool, float, str, list, dict): for tests and diagnostics."""
        return self._run(_Message(app_properties, system_properties, body_json))


def parse_condition(text: str) -> Condition:
    """Compile a condition alone (what follows WHERE)."""
    parser = _Parser(text, _lex(text))
    if parser.tok.kind == "end":
        raise parser.fail("a condition")
    run = parser.expression()
    if parser.tok.kind != "end":
        raise parser.fail("an operator (AND, OR, =, <, +, ...) or the end of the condition")
    return Condition(text.strip(), run)


# --------------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Source:
    """``kind``: ``all`` (/*), ``messages`` (/messages/*), ``modules`` (/messages/modules/*), ``module``
    (one module; ``output`` None = any output), ``twinChangeNotifications``."""

    kind: str
    module: str | None = None
    output: str | None = None

    def matches(self, module: str | None, output: str | None = None, *, twin_change: bool = False) -> bool:
        if twin_change:
            return self.kind in ("all", "twinChangeNotifications")
        if self.kind in ("all", "messages"):
            return True
        if self.kind == "modules":
            return module is not None
        if self.kind == "module":
            return module == self.module and (self.output is None or output == self.output)
        return False


@dataclass(frozen=True)
class Sink:
    """``kind``: ``upstream`` ($upstream) or ``module`` (BrokeredEndpoint to ``module``'s ``input``)."""

    kind: str
    module: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        return (
            "$upstream"
            if self.kind == "upstream"
            else f'BrokeredEndpoint("/modules/{self.module}/inputs/{self.input}")'
        )


@dataclass(frozen=True)
class Route:
    text: str
    source: Source
    condition: Condition | None
    sink: Sink
    priority: int = 0  # 0 (highest) to 9, $edgeHub schemaVersion 1.1
    time_to_live_secs: int | None = None  # None: storeAndForwardConfiguration.timeToLiveSecs

    def matches_source(self, module: str | None, output: str | None = None, *, twin_change: bool = False) -> bool:
        """Whether a message from ``module`` (None: a leaf device) on ``output`` enters this route."""
        return self.source.matches(module, output, twin_change=twin_change)

    def accepts(
        self,
        module: str | None,
        output: str | None,
        app_properties: Mapping[str, Any],
        system_properties: Mapping[str, Any],
        body_json: Any = None,
    ) -> bool:
        """Source and condition both match."""
        if not self.source.matches(module, output):
            return False
        return self.condition is None or self.condition.evaluate(app_properties, system_properties, body_json)

    def modules(self) -> set[str]:
        """Modules this route names (source and sink)."""
        return {m for m in (self.source.module, self.sink.module) if m}


_WS_RE = re.compile(r"\s*")
_PATH_RE = re.compile(r"\S+")
_SEGMENT_RE = re.compile(r"[^/\s()\"'*]+")
_ENDPOINT_RE = re.compile(r"/modules/([^/\s]+)/inputs/([^/\s]+)")

_SOURCES = (
    "/*, /messages/*, /messages/modules/*, /messages/modules/<id>/*, /messages/modules/<id>/outputs/*, "
    "/messages/modules/<id>/outputs/<name> or /twinChangeNotifications"
)


def _keyword(text: str, pos: int, word: str) -> int | None:
    """Position after ``word`` (case-insensitive, then a space) at ``pos``, else None."""
    end = pos + len(word)
    if text[pos:end].lower() == word.lower() and (end == len(text) or text[end].isspace()):
        return end
    return None


def _source(text: str, pos: int) -> tuple[Source, int]:
    m = _PATH_RE.match(text, pos)
    if m is None:
        raise RouteError(text, pos, f"a source ({_SOURCES})")
    path = m.group(0)
    parts = path.split("/")
    ok = parts[0] == "" and all(p == "*" or _SEGMENT_RE.fullmatch(p) for p in parts[1:])
    rest = parts[1:]
    source: Source | None = None
    if ok:
        if rest == ["*"]:
            source = Source("all")
        elif rest == ["twinChangeNotifications"]:
            source = Source("twinChangeNotifications")
        elif rest == ["messages", "*"]:
            source = Source("messages")
        elif rest == ["messages", "modules", "*"]:
            source = Source("modules")
        elif len(rest) == 4 and rest[:2] == ["messages", "modules"] and rest[2] != "*" and rest[3] == "*":
            source = Source("module", rest[2])
        elif len(rest) == 5 and rest[:2] == ["messages", "modules"] and rest[2] != "*" and rest[3] == "outputs":
            source = Source("module", rest[2], None if rest[4] == "*" else rest[4])
    if source is None:
        raise RouteError(text, pos, f"a source ({_SOURCES})", repr(path))
    return source, m.end()


def _sink(text: str, parser: _Parser) -> Sink:
    t = parser.tok
    if t.kind == "sysprop":
        if t.text.lower() != "$upstream":
            raise parser.fail('$upstream or BrokeredEndpoint("/modules/<id>/inputs/<name>")')
        parser.take()
        return Sink("upstream")
    if t.kind == "ident" and t.text.lower() == "brokeredendpoint":
        parser.take()
        parser.expect_op("(", "'(' after BrokeredEndpoint")
        arg = parser.tok
        if arg.kind != "string":
            raise parser.fail('a quoted endpoint "/modules/<id>/inputs/<name>"')
        parser.take()
        m = _ENDPOINT_RE.fullmatch(arg.value)
        if m is None:
            raise RouteError(text, arg.pos, 'an endpoint "/modules/<id>/inputs/<name>"', repr(arg.value))
        parser.expect_op(")", "')'")
        return Sink("module", m.group(1), m.group(2))
    raise parser.fail('a sink: $upstream or BrokeredEndpoint("/modules/<id>/inputs/<name>")')


def parse_route(text: str) -> Route:
    """Parse ``[SELECT * ] FROM <source> [WHERE <condition>] INTO <sink>``; raises :class:`RouteError`."""
    if not isinstance(text, str):
        raise RouteError("", 0, "a route string", type(text).__name__)
    pos = _WS_RE.match(text, 0).end()  # type: ignore[union-attr]
    after = _keyword(text, pos, "SELECT")
    if after is not None:
        pos = _WS_RE.match(text, after).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] != "*":
            raise RouteError(text, pos, "'*' after SELECT")
        pos = _WS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
    after = _keyword(text, pos, "FROM")
    if after is None:
        raise RouteError(text, pos, "FROM")
    pos = _WS_RE.match(text, after).end()  # type: ignore[union-attr]
    source, pos = _source(text, pos)
    parser = _Parser(text, _lex(text, pos))
    condition = None
    if parser.word("where"):
        parser.take()
        if parser.word("into") or parser.tok.kind == "end":
            raise parser.fail("a condition after WHERE")
        first = parser.tok.pos
        run = parser.expression()
        if not parser.word("into"):
            raise parser.fail("an operator (AND, OR, =, <, +, ...) or INTO")
        condition = Condition(text[first : parser.tok.pos].strip(), run)
    if not parser.word("into"):
        raise parser.fail("WHERE or INTO")
    parser.take()
    sink = _sink(text, parser)
    if parser.tok.kind != "end":
        raise parser.fail("the end of the route")
    return Route(text, source, condition, sink)


def parse_routes(routes: Mapping[str, Any]) -> dict[str, Route]:
    """$edgeHub ``routes`` (name -> route string, or ``{"route", "priority", "timeToLiveSecs"}``) parsed;
    a bad one raises :class:`RouteError` whose ``name`` says which."""
    out: dict[str, Route] = {}
    for name, spec in routes.items():
        text = spec.get("route") if isinstance(spec, Mapping) else spec
        try:
            route = parse_route(text)
            if isinstance(spec, Mapping):
                priority = spec.get("priority", 0)
                ttl = spec.get("timeToLiveSecs")
                if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 9:
                    raise RouteError(str(text), 0, "priority 0 to 9", repr(priority))
                if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0):
                    raise RouteError(str(text), 0, "timeToLiveSecs 0 or more", repr(ttl))
                route = replace(route, priority=priority, time_to_live_secs=ttl)
        except RouteError as exc:
            exc.name = name
            exc.args = (f"route {name!r}: {exc.args[0]}",)
            raise
        out[name] = route
    return out
