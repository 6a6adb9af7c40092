"""Azure ML v1's naming rules and the value checks the configurations share."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from cloud_targets.config.errors import DeploymentConfigError
from cloud_targets.config.schema import Kind

#: v1's ``webservice_name_validation``: 3-32 chars, lowercase letters, digits and dashes, starts with a
#: letter, ends with a letter or digit.
SERVICE_NAME_REGEX = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: v1's ``NAMESPACE_REGEX``: a Kubernetes namespace is a DNS-1123 label.
NAMESPACE_REGEX = r"^[a-z0-9]([a-z0-9-]{,61}[a-z0-9])?$"


def _suggest_service_name(name: str) -> str | None:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.strip().lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).lstrip("-0123456789")[:32].rstrip("-")
    if len(cleaned) < 3:
        return None
    return cleaned


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for an error message, kept short: a container by its kind and size (a YAML alias bomb is
    never expanded), long text cut."""
    if isinstance(value, Mapping | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a number of more than 38 digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_service_name(name: Any) -> str:
    """``name`` when it is a valid web service name (v1's rule), else :class:`DeploymentConfigError`."""
    if isinstance(name, str) and 3 <= len(name) <= 32 and re.fullmatch(SERVICE_NAME_REGEX, name):
        return name
    hint = _suggest_service_name(name) if isinstance(name, str) else None
    raise DeploymentConfigError(
        f"service name {shown(name)} is invalid: it must only consist of lowercase letters, numbers, or dashes, start "
        "with a letter, end with a letter or number, and be between 3 and 32 characters long (Azure ML v1's rule)"
        + (f"; for example {hint!r}" if hint and hint != name else "")
    )


VERSION_NAME_RULE = (
    "1 to 32 lowercase letters, numbers or dashes, starting with a letter and ending with a letter or number"
)


def version_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name an endpoint version (it names processes, containers and Kubernetes objects)."""
    if isinstance(name, str) and 1 <= len(name) <= 32 and re.fullmatch(SERVICE_NAME_REGEX, name):
        return None
    return f"version name {shown(name)} is invalid: use {VERSION_NAME_RULE} (e.g. 'blue', 'v2')"


def validate_version_name(name: Any) -> str:
    """``name`` when it can name an endpoint version, else :class:`DeploymentConfigError`."""
    problem = version_name_problem(name)
    if problem:
        raise DeploymentConfigError(problem)
    return name


def is_valid_namespace(namespace: str) -> bool:
    """True for a Kubernetes namespace v1 accepted (a DNS-1123 label, at most 63 characters)."""
    return bool(re.match(NAMESPACE_REGEX, namespace))


_KIND_WORDS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "map": "a mapping of names to strings",
}


def kind_problem(value: Any, kind: Kind, what: str, secret: bool = False) -> str | None:
    """Why ``value`` is not of ``kind`` (``None`` when it is, or is ``None``); secrets are never echoed."""
    if value is None:
        return None
    if kind in ("int", "float") and isinstance(value, float) and not math.isfinite(value):
        return f"{what} must be a finite number, not {'a float' if secret else value}"
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "map": isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()),
    }[kind]
    if ok:
        return None
    text = f"a {type(value).__name__}" if secret else shown(value)
    return f"{what} must be {_KIND_WORDS[kind]}, not {text}"


def coerce(value: Any, kind: Kind, what: str, secret: bool = False) -> Any:
    """A file value as ``kind`` (``"true"``/``"false"`` strings, whole floats and scalar tag values are
    accepted); anything else is a :class:`DeploymentConfigError` naming ``what``."""
    if kind == "bool" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "map" and isinstance(value, Mapping):
        bad = [k for k, v in value.items() if isinstance(v, Mapping | list | tuple) or v is None]
        if bad:
            raise DeploymentConfigError(f"{what} must map names to plain values; {', '.join(map(str, bad))} do not")
        return {str(k): v if isinstance(v, str) else _scalar_text(v) for k, v in value.items()}
    problem = kind_problem(value, kind, what, secret)
    if problem:
        raise DeploymentConfigError(problem)
    return value


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = [
    "NAMESPACE_REGEX",
    "SERVICE_NAME_REGEX",
    "coerce",
    "is_valid_namespace",
    "kind_problem",
    "shown",
    "validate_service_name",
    "validate_version_name",
    "version_name_problem",
]
