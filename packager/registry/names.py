"""Model names, ``NAME[:VERSION]`` references and ``key=value`` pairs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edge_module.model_dir import MODEL_NAME_RE as NAME_RE
from edge_module.model_dir import MODEL_NAME_RULE as NAME_RULE
from packager.errors import InvalidInputError


def validate_name(name: object) -> str:
    """Return ``name`` if it follows Azure ML's model-name rules, else raise ``InvalidInputError``."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"model name must be a non-empty string ({NAME_RULE})")
    if not NAME_RE.fullmatch(name):
        raise InvalidInputError(f"invalid model name {name!r}: use {NAME_RULE}")
    return name


def validate_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"invalid model version {version!r}: versions are whole numbers from 1")
    return version


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split ``NAME[:VERSION]`` (``VERSION`` may be ``latest``) into name and version."""
    name, sep, version = ref.rpartition(":")
    if not sep:
        return validate_name(ref), None
    validate_name(name)
    if version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInputError(f"invalid model reference {ref!r}: expected NAME or NAME:VERSION with VERSION >= 1")
    return name, int(version)


def parse_pairs(pairs: Iterable[str], what: str) -> dict[str, str]:
    """Turn ``["k=v", ...]`` into a dict; ``what`` names the option in errors."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"invalid {what} {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def string_map(values: Mapping[str, object] | None, what: str) -> dict[str, str]:
    """Check a tags/properties mapping: string keys, scalar values (stored as strings)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"{what} must be a dict of strings, not {type(values).__name__}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{what} keys must be non-empty strings, got {key!r}")
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float | bool):
            out[key] = str(value)
        else:
            raise InvalidInputError(f"{what} value for {key!r} must be a string, not {type(value).__name__}")
    return out


def match_filters(values: Mapping[str, str], filters: object, what: str) -> bool:
    """Azure ML v1 list filters: ``"key"``, ``"key=value"``, ``[key, value]`` items, or a dict."""
    if filters is None:
        return True
    if isinstance(filters, Mapping):
        items: list[tuple[str, str | None]] = [(k, None if v is None else str(v)) for k, v in filters.items()]
    elif isinstance(filters, str):
        raise InvalidInputError(f"{what} filter must be a list or dict, not a string")
    else:
        items = []
        for item in filters:  # type: ignore[union-attr]
            if isinstance(item, str):
                key, sep, value = item.partition("=")
                items.append((key, value if sep else None))
            elif isinstance(item, list | tuple) and len(item) == 2:
                items.append((str(item[0]), str(item[1])))
            else:
                raise InvalidInputError(f"invalid {what} filter {item!r}: use 'key', 'key=value' or [key, value]")
    return all(key in values and (want is None or values[key] == want) for key, want in items)
