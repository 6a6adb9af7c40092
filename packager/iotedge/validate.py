"""Validate IoT Edge deployment manifests offline: the published schema, then what it cannot see.

:func:`validate_manifest` returns a list of :class:`Problem` (``path``: a JSON path such as
``modulesContent.$edgeAgent.properties.desired.modules.scorer.settings.createOptions``; ``message``: what
is wrong and what to change); empty means valid. :func:`validate_file` reads a file first (size-bounded).

Checks: SchemaStore's ``azure-iot-edge-deployment-2.0.json`` (draft-04, shipped in
``packager/iotedge/schemas/``); every route parses (:mod:`packager.iotedge.routes`) and names deployed
modules; module names (IoT Hub module ids, the schema's pattern, container names); images
(:class:`packager.image.reference.ImageRef`); ``createOptions`` chunks
(:func:`packager.iotedge.create_options.from_settings`); env values are strings; desired properties within
IoT Hub's twin limits; no unexpanded ``${...}`` placeholders. Layered deployments
(``properties.desired.modules.<name>`` style keys) are checked with their own rules.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any, BinaryIO

from packager.errors import InvalidInputError

__all__ = [
    "MAX_FILE_BYTES",
    "Problem",
    "is_layered",
    "load_schema",
    "validate_file",
    "validate_manifest",
    "validate_text",
]

SCHEMA_FILE = "azure-iot-edge-deployment-2.0.json"
MAX_FILE_BYTES = 4 * 2**20  # far above any twin limit: a bigger file is not a manifest

# IoT Hub twin limits (learn.microsoft.com/azure/iot-hub/iot-hub-devguide-device-twins, "Tags and properties
# format" and "Device twin size"; the same rules apply to module twins): desired properties at most 32 KB,
# counted as the characters of every key and string value (control characters excluded), 8 per number,
# 4 per boolean; objects at most 10 levels deep; keys up to 1 KB of UTF-8 without control characters
# (C0, C1), '.', '$' or space; string values up to 4 KB of UTF-8.
TWIN_DESIRED_MAX = 32 * 1024
TWIN_MAX_DEPTH = 10
TWIN_KEY_MAX_BYTES = 1024
TWIN_STRING_MAX_BYTES = 4 * 1024
# IoT Hub module ids: case-sensitive, up to 128 characters of ASCII letters, digits and
# - : . + % _ # * ? ! ( ) , = @ ; $ '  (IoT Hub identity registry, "Module identity properties").
MODULE_ID_MAX = 128
_MODULE_ID_RE = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$']+")
_SCHEMA_MODULE_RE = re.compile(r"[A-Za-z0-9_-]+")  # the deployment schema's pattern for modules
_CONTAINER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")  # docker names the container after the module
SYSTEM_MODULES = ("edgeAgent", "edgeHub")

_PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BAD_KEY_RE = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")
_DESIRED = "properties.desired"
_TWIN_KEY_MESSAGE = "twin property names cannot hold"
_KEY_RULE = "rename it without '.', '$', spaces or control characters (at most 1 KB)"


@dataclass(frozen=True)
class Problem:
    """One thing to fix: where (a JSON path) and what to change."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


@cache
def load_schema() -> dict[str, Any]:
    """The shipped deployment manifest schema (SchemaStore, Apache-2.0; see schemas/NOTICE)."""
    text = resources.files("packager.iotedge").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator() -> Any:
    from jsonschema import Draft4Validator

    schema = load_schema()
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


@cache
def _sub_validator(*pointer: str) -> Any:
    """A validator for a part of the schema (its definitions kept so ``$ref`` resolves)."""
    from jsonschema import Draft4Validator

    schema = load_schema()
    node: Any = schema
    for key in pointer:
        node = node[key]
    return Draft4Validator({**node, "definitions": schema["definitions"]})


def _desired_schema(module: str, *rest: str) -> tuple[str, ...]:
    """The schema pointer to ``rest`` inside the desired properties of a manifest's ``module`` twin."""
    return ("properties", "modulesContent", "properties", module, "properties", _DESIRED, "properties", *rest)


_EACH_NAME = ("patternProperties", "^[^\\.\\$# ]+$")  # the schema of each entry in a map of names
_MODULE_SCHEMA = _desired_schema("$edgeAgent", "modules", "patternProperties", "^[a-zA-Z0-9_-]+$")
_CREDENTIALS_SCHEMA = _desired_schema(
    "$edgeAgent", "runtime", "properties", "settings", "properties", "registryCredentials", *_EACH_NAME
)
_ROUTE_SCHEMA = _desired_schema("$edgeHub", "routes", *_EACH_NAME)


# ------------------------------------------------------------------------------------------ schema


def _schema_message(error: Any) -> str | None:
    """A message that says what to change; None to drop the error (reported better elsewhere)."""
    v = error.validator
    path = list(error.absolute_path)
    if v == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else error.message
        hints = {
            "schemaVersion": ' (e.g. "1.1")',
            "modulesContent": " (the manifest's top level)",
            "$edgeAgent": " (the edge agent's desired properties: runtime, systemModules, modules)",
            "$edgeHub": " (the edge hub's desired properties: schemaVersion, routes)",
            "systemModules": " (edgeAgent and edgeHub)",
            "restartPolicy": ' (e.g. "always")',
            "status": ' ("running" or "stopped")',
            "type": ' ("docker")',
        }
        return f"missing required property {name!r}: add it{hints.get(name, '')}"
    if v == "additionalProperties":
        if path[-2:] == [_DESIRED, "modules"]:
            return None  # module names: _check_module_name says which rule and how to rename
        extra = re.findall(r"'([^']+)'", error.message.split("(")[-1])
        allowed = sorted(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        if patterns and not allowed:
            hint = f"; names must match {' or '.join(patterns)}"
        what = ", ".join(repr(e) for e in extra) or "a property"
        return f"unexpected property {what}: remove it or fix its spelling{hint}"
    if v == "enum":
        options = ", ".join(json.dumps(o) for o in error.validator_value)
        return f"{json.dumps(error.instance)} is not allowed: use one of {options}"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"must be of type {want}, not {_json_type(error.instance)}"
    if v == "anyOf":  # the schema's one anyOf: a route string or object
        return 'a route is a string ("FROM ... INTO ...") or {"route": "...", "priority": 0-9, "timeToLiveSecs": N}'
    if v in ("minimum", "maximum"):
        bound = "or more" if v == "minimum" else "or less"
        return f"{error.instance} is out of range: use {error.validator_value} {bound}"
    if v == "pattern":
        return f"{json.dumps(error.instance)} does not match {error.validator_value}: fix the value"
    return error.message


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _errors(errors: Iterator[Any]) -> Iterator[Any]:
    """Errors, with an anyOf replaced by the errors of the branch whose type fits the instance."""
    for error in errors:
        if error.validator == "anyOf":
            kind = _json_type(error.instance)
            fitting = [e for e in error.context or () if _branch_type(error.validator_value, e) == kind]
            if fitting:
                yield from _errors(iter(fitting))
                continue
        yield error


def _branch_type(branches: list[Any], error: Any) -> str | None:
    index = error.relative_schema_path[0] if error.relative_schema_path else None
    branch = branches[index] if isinstance(index, int) and index < len(branches) else {}
    return branch.get("type") if isinstance(branch, dict) else None


def _schema_problems(validator: Any, doc: Any, base: str = "") -> Iterator[Problem]:
    for error in sorted(_errors(validator.iter_errors(doc)), key=lambda e: [str(p) for p in e.absolute_path]):
        message = _schema_message(error)
        if message is None:
            continue
        path = base
        for key in error.absolute_path:
            path = _join(path, key)
        yield Problem(path, message)


# ------------------------------------------------------------------------------------ other checks


def _check_module_name(name: str, path: str) -> Iterator[Problem]:
    if name in SYSTEM_MODULES or name.startswith("$"):
        yield Problem(path, f"module name {name!r} is reserved for the IoT Edge runtime: rename the module")
        return
    if len(name) > MODULE_ID_MAX:
        yield Problem(path, f"module name is {len(name)} characters: IoT Hub module ids have at most {MODULE_ID_MAX}")
        return
    if not _MODULE_ID_RE.fullmatch(name):
        bad = sorted({c for c in name if not _MODULE_ID_RE.fullmatch(c)})
        yield Problem(
            path,
            f"module name {name!r} has {''.join(bad)!r}: IoT Hub module ids allow ASCII letters, digits and "
            "- : . + % _ # * ? ! ( ) , = @ ; $ '; rename the module",
        )
        return
    if not _SCHEMA_MODULE_RE.fullmatch(name):
        yield Problem(path, f"module name {name!r}: deployment manifests allow only letters, digits, '-' and '_'")
        return
    if not _CONTAINER_NAME_RE.fullmatch(name):
        yield Problem(
            path,
            f"module name {name!r}: the edge agent names the container after the module, and container names "
            "start with a letter or digit and have at least 2 characters",
        )


def _check_image(settings: Any, path: str) -> Iterator[Problem]:
    from packager.image.reference import ImageRef

    if not isinstance(settings, dict):
        return
    image = settings.get("image")
    if not isinstance(image, str) or _PLACEHOLDER_RE.search(image):
        return  # the schema reports a missing image; the placeholder check reports ${...}
    try:
        ImageRef.parse(image)
    except InvalidInputError as exc:
        yield Problem(_join(path, "image"), f"not a valid image reference: {exc}")


def _check_create_options(settings: Any, path: str) -> Iterator[Problem]:
    from packager.iotedge.create_options import from_settings

    if not isinstance(settings, dict):
        return
    try:
        from_settings(settings, where=path)
    except InvalidInputError as exc:
        message = str(exc)
        # from_settings names ``where`` (and a chunk key): move that into the path
        if message.startswith(path + "."):
            rest = message[len(path) + 1 :]
            key, _, tail = rest.partition(" ")
            yield Problem(_join(path, key), tail)
        elif message.startswith(path + ": "):
            yield Problem(path, message[len(path) + 2 :])
        else:
            yield Problem(path, message)


def _check_env(env: Any, path: str) -> Iterator[Problem]:
    if not isinstance(env, dict):
        return
    for name, item in env.items():
        if isinstance(item, dict) and "value" in item and not isinstance(item["value"], str):
            shown = json.dumps(item["value"])
            yield Problem(
                _join(_join(path, name), "value"),
                f"environment values are strings: write {json.dumps(shown)} instead of {shown}",
            )


def _check_module(name: str, module: Any, path: str) -> Iterator[Problem]:
    if not isinstance(module, dict):
        return
    settings = module.get("settings")
    yield from _check_image(settings, _join(path, "settings"))
    yield from _check_create_options(settings, _join(path, "settings"))
    yield from _check_env(module.get("env"), _join(path, "env"))


def _route_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("route"), str):
        return value["route"]
    return None


def _check_route(name: str, value: Any, path: str, modules: set[str] | None) -> Iterator[Problem]:
    from packager.iotedge.routes import RouteError, parse_route

    text = _route_text(value)
    if text is None:
        return  # the schema says what a route looks like
    where = path if isinstance(value, str) else _join(path, "route")
    if _PLACEHOLDER_RE.search(text):
        return
    try:
        route = parse_route(text)
    except RouteError as exc:
        yield Problem(where, f"route does not parse: {exc}")
        return
    if modules is None:
        return
    for role, module in (("reads from", route.source.module), ("sends to", route.sink.module)):
        if module and module not in modules:
            known = ", ".join(sorted(modules)) or "none"
            yield Problem(
                where,
                f"route {name!r} {role} module {module!r}, which is not in $edgeAgent modules (deployed: {known}): "
                "add the module or fix the route",
            )


def _twin_size(value: Any) -> int:
    """IoT Hub's count: characters of keys and strings (no control characters), 8 per number, 4 per boolean."""
    if isinstance(value, dict):
        return sum(len(_CONTROL_RE.sub("", k)) + _twin_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_twin_size(v) for v in value)
    if isinstance(value, str):
        return len(_CONTROL_RE.sub("", value))
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    return 0


def _check_twin(desired: Any, path: str, depth: int = 0) -> Iterator[Problem]:
    """Keys, string values and depth of desired properties (``depth``: levels below properties.desired)."""
    if isinstance(desired, dict):
        if depth > TWIN_MAX_DEPTH:
            yield Problem(path, f"desired properties nest {depth} levels deep: IoT Hub allows {TWIN_MAX_DEPTH}")
            return
        for key, value in desired.items():
            child = _join(path, key)
            if _BAD_KEY_RE.search(key):
                bad = sorted({c for c in key if _BAD_KEY_RE.fullmatch(c)})
                shown = ", ".join(repr(c) for c in bad)
                yield Problem(child, f"{_TWIN_KEY_MESSAGE} {shown}: {_KEY_RULE}")
            elif len(key.encode()) > TWIN_KEY_MAX_BYTES:
                size = len(key.encode())
                yield Problem(child, f"twin property name is {size} bytes: IoT Hub allows {TWIN_KEY_MAX_BYTES}")
            yield from _check_twin(value, child, depth + 1)
    elif isinstance(desired, list):
        for i, value in enumerate(desired):
            yield from _check_twin(value, _join(path, i), depth)
    elif isinstance(desired, str) and len(desired.encode()) > TWIN_STRING_MAX_BYTES:
        yield Problem(
            path,
            f"string is {len(desired.encode())} bytes: twin values are at most {TWIN_STRING_MAX_BYTES} "
            "(split it, or ship the data in the image or a volume)",
        )


def _check_twin_size(desired: Any, path: str) -> Iterator[Problem]:
    size = _twin_size(desired)
    if size > TWIN_DESIRED_MAX:
        yield Problem(
            path,
            f"desired properties are {size} bytes by IoT Hub's count: a module twin allows {TWIN_DESIRED_MAX} "
            "(move large values out of the twin)",
        )


def _placeholders(value: Any, path: str) -> Iterator[Problem]:
    if isinstance(value, dict):
        for key, item in value.items():
            child = _join(path, key)
            for m in _PLACEHOLDER_RE.finditer(key):
                yield _placeholder_problem(child, m.group(1))
            yield from _placeholders(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _placeholders(item, _join(path, i))
    elif isinstance(value, str):
        for m in _PLACEHOLDER_RE.finditer(value):
            yield _placeholder_problem(path, m.group(1))


def _placeholder_problem(path: str, name: str) -> Problem:
    return Problem(
        path,
        f"unexpanded placeholder ${{{name}}}: set {name or 'the variable'} (environment or .env) and generate the "
        "manifest again, or write the value",
    )


def _schema_version(desired: Any) -> str | None:
    return desired.get("schemaVersion") if isinstance(desired, dict) else None


# -------------------------------------------------------------------------------------- manifests


def is_layered(doc: Any) -> bool:
    """A layered deployment: $edgeAgent/$edgeHub content as ``properties.desired.<path>`` keys."""
    content = doc.get("modulesContent") if isinstance(doc, dict) else None
    if not isinstance(content, dict):
        return False
    agent = content.get("$edgeAgent")
    if isinstance(agent, dict) and _DESIRED in agent:
        return False
    for section in ("$edgeAgent", "$edgeHub"):
        part = content.get(section)
        if isinstance(part, dict) and any(k.startswith(_DESIRED + ".") for k in part):
            return True
    return False


def validate_manifest(doc: Any) -> list[Problem]:
    """Every problem in a deployment manifest (full or layered); empty when it is valid."""
    if not isinstance(doc, dict):
        return [Problem("", f"a deployment manifest is a JSON object, not {_json_type(doc)}")]
    try:
        problems = list(_layered(doc) if is_layered(doc) else _full(doc))
        problems.extend(_placeholders(doc, ""))
    except RecursionError:
        return [Problem("", "nested too deeply to be a deployment manifest")]
    named = {p.path for p in problems if not p.message.startswith(_TWIN_KEY_MESSAGE)}
    out: list[Problem] = []
    seen: set[Problem] = set()
    for p in problems:
        duplicate = p.message.startswith(_TWIN_KEY_MESSAGE) and p.path in named  # e.g. a bad module name
        if p not in seen and not duplicate:
            seen.add(p)
            out.append(p)
    return out


def _full(doc: dict[str, Any]) -> Iterator[Problem]:
    yield from _schema_problems(_validator(), doc)
    content = doc.get("modulesContent")
    if not isinstance(content, dict):
        return
    agent_path = f"modulesContent.$edgeAgent.{_DESIRED}"
    hub_path = f"modulesContent.$edgeHub.{_DESIRED}"
    agent = (content.get("$edgeAgent") or {}).get(_DESIRED) if isinstance(content.get("$edgeAgent"), dict) else None
    hub = (content.get("$edgeHub") or {}).get(_DESIRED) if isinstance(content.get("$edgeHub"), dict) else None
    modules: dict[str, Any] = {}
    if isinstance(agent, dict):
        raw = agent.get("modules")
        modules = raw if isinstance(raw, dict) else {}
        for name, module in modules.items():
            path = _join(_join(agent_path, "modules"), name)
            yield from _check_module_name(name, path)
            yield from _check_module(name, module, path)
            if isinstance(module, dict) and "startupOrder" in module and _schema_version(agent) == "1.0":
                yield Problem(_join(path, "startupOrder"), 'startupOrder needs $edgeAgent schemaVersion "1.1" or later')
        system = agent.get("systemModules")
        if isinstance(system, dict):
            for name in SYSTEM_MODULES:
                if isinstance(system.get(name), dict):
                    path = _join(_join(agent_path, "systemModules"), name)
                    yield from _check_module(name, system[name], path)
    if isinstance(hub, dict) and isinstance(hub.get("routes"), dict):
        for name, value in hub["routes"].items():
            path = _join(_join(hub_path, "routes"), name)
            yield from _check_route(name, value, path, set(modules) if isinstance(agent, dict) else None)
            if isinstance(value, dict) and _schema_version(hub) == "1.0":
                yield Problem(path, 'route priority and timeToLiveSecs need $edgeHub schemaVersion "1.1" or later')
    for section, value in content.items():
        path = _join("modulesContent", section)
        if not isinstance(value, dict):
            continue
        desired = value.get(_DESIRED)
        if desired is not None:
            yield from _check_twin(desired, _join(path, _DESIRED))
            yield from _check_twin_size(desired, _join(path, _DESIRED))
        if section not in ("$edgeAgent", "$edgeHub") and isinstance(agent, dict) and section not in modules:
            yield Problem(
                path,
                f"desired properties for module {section!r}, which is not in $edgeAgent modules: "
                "add the module or remove this section",
            )


_LAYERED_AGENT = re.compile(r"properties\.desired\.modules\.(.+)")  # a '.' in the name is reported as such
_LAYERED_CREDENTIALS = re.compile(r"properties\.desired\.runtime\.settings\.registryCredentials\.([^.]+)")
_LAYERED_ROUTE = re.compile(r"properties\.desired\.routes\.([^.]+)")
_LAYERED_TTL = "properties.desired.storeAndForwardConfiguration.timeToLiveSecs"


def _layered(doc: dict[str, Any]) -> Iterator[Problem]:
    """Layered deployments: keys ``properties.desired.<path>``; modules and routes may live in the base."""
    extra = sorted(set(doc) - {"modulesContent"})
    for key in extra:
        yield Problem(key, "unexpected property: a deployment has only modulesContent")
    content = doc["modulesContent"]
    for section, value in content.items():
        path = _join("modulesContent", section)
        if not isinstance(value, dict):
            yield Problem(path, f"must be an object of desired properties, not {_json_type(value)}")
            continue
        if section == "$edgeAgent":
            yield from _layered_agent(value, path)
        elif section == "$edgeHub":
            yield from _layered_hub(value, path)
        else:
            yield from _check_module_name(section, path)
            for key, item in value.items():
                if key != _DESIRED and not key.startswith(_DESIRED + "."):
                    yield Problem(_join(path, key), f"module twin content is {_DESIRED} or {_DESIRED}.<property>")
                    continue
                if key == _DESIRED and not isinstance(item, dict):
                    yield Problem(_join(path, key), f"must be an object, not {_json_type(item)}")
            yield from _layered_twin(value, path)


def _layered_twin(section: dict[str, Any], path: str) -> Iterator[Problem]:
    """Twin limits for ``properties.desired[.<a>.<b>]`` keys: names, depth and size as IoT Hub merges them."""
    size = 0
    for key, item in section.items():
        if key != _DESIRED and not key.startswith(_DESIRED + "."):
            continue
        segments = key.split(".")[2:]
        for segment in segments:
            if not segment or _BAD_KEY_RE.search(segment) or len(segment.encode()) > TWIN_KEY_MAX_BYTES:
                yield Problem(_join(path, key), f"twin property name {segment!r} is not valid: {_KEY_RULE}")
        yield from _check_twin(item, _join(path, key), depth=len(segments))
        size += sum(len(_CONTROL_RE.sub("", k)) for k in segments) + _twin_size(item)
    if size > TWIN_DESIRED_MAX:
        yield Problem(
            path,
            f"desired properties are {size} bytes by IoT Hub's count: a module twin allows {TWIN_DESIRED_MAX} "
            "(move large values out of the twin)",
        )


def _layered_agent(agent: dict[str, Any], path: str) -> Iterator[Problem]:
    for key, value in agent.items():
        where = _join(path, key)
        module = _LAYERED_AGENT.fullmatch(key)
        credentials = _LAYERED_CREDENTIALS.fullmatch(key)
        if module:
            yield from _check_module_name(module.group(1), where)
            yield from _schema_problems(_sub_validator(*_MODULE_SCHEMA), value, where)
            yield from _check_module(module.group(1), value, where)
        elif credentials:
            yield from _schema_problems(_sub_validator(*_CREDENTIALS_SCHEMA), value, where)
        else:
            yield Problem(
                where,
                "a layered deployment adds to $edgeAgent only properties.desired.modules.<name> and "
                "properties.desired.runtime.settings.registryCredentials.<name>; runtime and systemModules "
                "belong to the base deployment",
            )
    yield from _layered_twin(agent, path)


def _layered_hub(hub: dict[str, Any], path: str) -> Iterator[Problem]:
    for key, value in hub.items():
        where = _join(path, key)
        route = _LAYERED_ROUTE.fullmatch(key)
        if route:
            yield from _schema_problems(_sub_validator(*_ROUTE_SCHEMA), value, where)
            yield from _check_route(route.group(1), value, where, None)  # modules may be in the base deployment
        elif key == _LAYERED_TTL:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                yield Problem(where, "timeToLiveSecs is a whole number of seconds (0 or more)")
        else:
            yield Problem(
                where,
                f"a layered deployment adds to $edgeHub only properties.desired.routes.<name> (and {_LAYERED_TTL})",
            )
    yield from _layered_twin(hub, path)


def validate_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Read a manifest (at most :data:`MAX_FILE_BYTES`) and validate it; unreadable input raises
    :class:`InvalidInputError`, JSON syntax errors are one :class:`Problem` with line and column."""
    try:
        with open(path, "rb") as f:
            return validate_text(f, os.fspath(path))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None


def validate_text(source: bytes | str | BinaryIO, name: str = "stdin") -> list[Problem]:
    """Validate manifest text (bytes, str or a binary stream, read up to :data:`MAX_FILE_BYTES` + 1)."""
    data = source if isinstance(source, bytes | str) else source.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInputError(f"{name} is over {MAX_FILE_BYTES // 2**20} MiB: not a deployment manifest")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        doc = json.loads(text)
    except UnicodeDecodeError as exc:
        return [Problem("", f"not UTF-8 text (byte {exc.start}): save the manifest as UTF-8")]
    except json.JSONDecodeError as exc:
        return [Problem("", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
    except RecursionError:
        return [Problem("", "JSON nested too deeply to be a deployment manifest")]
    return validate_manifest(doc)
