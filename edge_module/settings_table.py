"""Declaring a setting once: its variables, flag, parser and help sit on its dataclass field.

A settings dataclass declares each field with :func:`setting`; from those declarations come the
environment reader (:func:`read_env`), the parsing of CLI flag values (:func:`read_flags`), the
argparse options (:func:`add_arguments`) and the help texts (:func:`describe`). ``edgepack serve``
builds its click options from the same rows, so both command lines accept the same flags.

This module imports nothing else of ``edge_module``: :mod:`edge_module.settings` and
:mod:`edge_module.transports.settings` both build on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MB = 1_000_000
SETTING = "edgepack.setting"  # the key of a field's metadata that holds its Setting

#: ``parse(raw, what)``: a value from its text; raises :class:`SettingsError` naming ``what`` (a variable or flag).
Parser = Callable[[str, str], Any]


class SettingsError(ValueError):
    """A setting has an unusable value; the message names the flag or variable and what is accepted."""


# -- parsers -------------------------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
}


def parse_size(value: str | int, what: str = "size") -> int:
    """``"100MB"``, ``"64KiB"``, ``"1048576"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE_RE.match(str(value))
    unit = (m.group(2) or "").lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise SettingsError(f"invalid {what} {value!r}: use bytes or a size such as 100MB, 64KiB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def text(value: str, what: str) -> str:
    return value


def integer(value: str, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"invalid {what} {value!r}: expected a whole number") from None


def number(value: str, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"invalid {what} {value!r}: expected a number") from None


def milliseconds(value: str, what: str) -> float:
    """A number of milliseconds, as seconds."""
    return number(value, what) / 1000


def boolean(value: str, what: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"invalid {what} {value!r}: use true or false")


def lower(value: str, what: str) -> str:
    return value.strip().lower()


def upper(value: str, what: str) -> str:
    return value.strip().upper()


def origins(value: str | tuple[str, ...] | list[str], what: str = "origins") -> tuple[str, ...]:
    """``"https://a, https://b/"`` → ``("https://a", "https://b")``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(o.strip().rstrip("/") for o in items if o.strip())


def read_text_file(value: str, what: str) -> str:
    """The content of the file ``value`` names."""
    try:
        with open(value, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise SettingsError(f"cannot read {what}: {exc}") from None


# -- declaring -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """How one field of a settings dataclass is set: from the environment and, with ``flag``, the command line."""

    env: tuple[str, ...]  # variables in precedence order; the first one set (non-empty) wins
    parse: Parser = text
    help: str = ""
    flag: str | None = None  # None: environment only
    metavar: str | None = None
    secret: bool = False  # kept out of repr and help; best set by its variable (flags show in ps)
    switch: bool = False  # a flag without a value that turns the setting on
    multiple: bool = False  # a repeatable flag; ``parse`` returns a tuple and the values are joined
    env_parse: Mapping[str, Parser] = dataclasses.field(default_factory=dict)  # per-variable parsers
    shown: str | None = None  # the default as help shows it (else str(default))
    name: str = ""  # the field's name, filled in by table()
    default: Any = None  # the field's default, filled in by table()

    @property
    def dest(self) -> str:
        """The flag's key in parsed arguments (``--mqtt-ca`` → ``mqtt_ca``)."""
        return (self.flag or "").lstrip("-").replace("-", "_")

    def parse_env(self, value: str, var: str) -> Any:
        return self.env_parse.get(var, self.parse)(value, var)


def setting(
    default: Any,
    *env: str,
    parse: Parser = text,
    help: str = "",
    flag: str | None = None,
    metavar: str | None = None,
    secret: bool = False,
    switch: bool = False,
    multiple: bool = False,
    env_parse: Mapping[str, Parser] | None = None,
    shown: str | None = None,
) -> Any:
    """A dataclass field with its default and its :class:`Setting` (secrets stay out of ``repr``)."""
    declared = Setting(env, parse, help, flag, metavar, secret, switch, multiple, dict(env_parse or {}), shown)
    return dataclasses.field(default=default, repr=not secret, metadata={SETTING: declared})


def table(cls: type) -> list[Setting]:
    """The settings of the dataclass ``cls``, in field order (fields without :func:`setting` are left out)."""
    rows = []
    for f in dataclasses.fields(cls):
        declared = f.metadata.get(SETTING)
        if declared is not None:
            rows.append(dataclasses.replace(declared, name=f.name, default=f.default))
    return rows


def find_row(cls: type, name: str) -> Setting | None:
    """The setting of the field ``name`` of ``cls`` (None for a field without one)."""
    return next((r for r in table(cls) if r.name == name), None)


# -- reading -------------------------------------------------------------------------------------------
def first_set(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """``(name, value)`` of the first variable set to a non-empty value."""
    for name in names:
        value = env.get(name)
        if value is not None and value != "":
            return name, value
    return None


def read_env(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """Field values of ``cls`` from the variables that are set (parsed, not validated yet)."""
    values: dict[str, Any] = {}
    for r in table(cls):
        found = first_set(env, r.env)
        if found is not None:
            values[r.name] = r.parse_env(found[1], found[0])
    return values


def read_flags(cls: type, flags: Mapping[str, Any]) -> dict[str, Any]:
    """Field values of ``cls`` from parsed command-line arguments keyed by :attr:`Setting.dest`.

    Values are the flags' text (True for a switch, a sequence for a repeatable flag); None or an
    empty sequence means not given."""
    values: dict[str, Any] = {}
    for r in table(cls):
        if r.flag is None:
            continue
        raw = flags.get(r.dest)
        if raw is None or (r.multiple and not raw):
            continue
        if r.switch:
            values[r.name] = bool(raw)
        elif r.multiple:
            values[r.name] = tuple(item for one in raw for item in r.parse(one, r.flag))
        else:
            values[r.name] = r.parse(raw, r.flag)
    return values


def parse_overrides(cls: type, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` that are not None, checked against the fields of ``cls``; text is parsed by the field's parser."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise TypeError(f"unknown setting {key!r}")
        if value is None:
            continue
        r = find_row(cls, key)
        values[key] = r.parse(value, key.replace("_", " ")) if r is not None and isinstance(value, str) else value
    return values


def env_and_overrides(cls: type, env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Field values of ``cls``: the environment's, then the ``overrides`` that are not None."""
    return {**read_env(cls, env), **parse_overrides(cls, overrides)}


# -- describing ----------------------------------------------------------------------------------------
def shown_default(r: Setting) -> str:
    if r.secret:
        return ""
    if r.shown is not None:
        return r.shown
    return "" if r.default is None or r.default == () or r.default is False else str(r.default)


def describe(r: Setting) -> str:
    """The help text of a flag: what it does, then its variables and default in brackets."""
    where = ", ".join(r.env)
    default = shown_default(r)
    return f"{r.help} [{where}{'; ' + default if default else ''}]".strip()


def env_only(cls: type) -> Iterator[Setting]:
    return (r for r in table(cls) if r.flag is None)


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """argparse options for the settings of ``cls`` that have a flag (every value is kept as text)."""
    for r in table(cls):
        if r.flag is None:
            continue
        kwargs: dict[str, Any] = {"dest": r.dest, "help": describe(r).replace("%", "%%")}
        if r.switch:
            parser.add_argument(r.flag, action="store_true", default=None, **kwargs)
        else:
            parser.add_argument(r.flag, action="append" if r.multiple else "store", metavar=r.metavar, **kwargs)


def env_reference(classes: Mapping[str, type]) -> str:
    """A plain-text list of the environment-only settings of ``classes`` (title → dataclass)."""
    flagged = {name for cls in classes.values() for r in table(cls) if r.flag for name in r.env}
    lines = []
    for title, cls in classes.items():
        rows = [r for r in env_only(cls) if not set(r.env) <= flagged]
        if not rows:
            continue
        lines.append(f"{title}:")
        for r in rows:
            default = shown_default(r)
            lines.append(f"  {', '.join(r.env)}{' [' + default + ']' if default else ''}")
            if r.help:
                lines.append(f"      {r.help}")
    return "\n".join(lines)
