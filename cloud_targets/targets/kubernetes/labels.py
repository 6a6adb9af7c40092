"""Kubernetes label rules: the labels every edgepack object carries, and user labels made valid."""

from __future__ import annotations

import re

MANAGED_BY = "edgepack"
SERVICE_LABEL = "edgepack.service"

_NAME_MAX = 63
_PREFIX_MAX = 253
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_INVALID_PREFIX_CHARS = re.compile(r"[^a-z0-9.-]+")
_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def standard_labels(name: str) -> dict[str, str]:
    """The labels on every object of service ``name`` (``selector`` picks them by ``edgepack.service``)."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        SERVICE_LABEL: name,
    }


def selector(name: str) -> dict[str, str]:
    """The Deployment's (immutable) pod selector and the label selector ``delete``/``logs`` use."""
    return {SERVICE_LABEL: name}


def selector_string(name: str) -> str:
    """``selector`` as a label-selector query string."""
    return ",".join(f"{k}={v}" for k, v in selector(name).items())


def _name_part(text: str) -> str:
    """A label name or value: <= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends (may be empty)."""
    text = _EDGE.sub("", _INVALID_NAME_CHARS.sub("-", text))
    return _EDGE.sub("", text[:_NAME_MAX])


def sanitize_key(key: str) -> str:
    """``prefix/name`` with an optional DNS-subdomain prefix; "" when nothing valid is left."""
    prefix, _, name = key.rpartition("/")
    name = _name_part(name)
    if not name:
        return ""
    if prefix:
        prefix = _INVALID_PREFIX_CHARS.sub("-", prefix.lower())
        labels = [p for p in (_EDGE.sub("", part) for part in prefix.split(".")) if p]
        prefix = ".".join(p[:_NAME_MAX] for p in labels)[:_PREFIX_MAX].strip(".-")
    return f"{prefix}/{name}" if prefix else name


def sanitize_value(value: str) -> str:
    """A label value: <= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends, or empty."""
    return _name_part(str(value))


def sanitize_labels(labels: dict[str, str], *, forbidden_values: set[str] | frozenset[str] = frozenset()) -> dict:
    """User labels made valid; pairs whose key sanitises to nothing, or that carry a secret, are dropped."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        if str(value) in forbidden_values or key in forbidden_values:
            continue
        clean_key = sanitize_key(str(key))
        if clean_key:
            out[clean_key] = sanitize_value(value)
    return out
