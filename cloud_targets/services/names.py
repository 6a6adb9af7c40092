"""Azure ML v1's web service name rule, checked before anything is built."""

from __future__ import annotations

import re

from packager.errors import InvalidInputError

SERVICE_NAME_RE = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]")
SERVICE_NAME_RULE = "3 to 32 characters of lowercase letters, digits and dashes, starting with a letter"


def check_service_name(name: object) -> str:
    """Return ``name`` if v1 would accept it as a service name, else raise :class:`InvalidInputError`."""
    if not isinstance(name, str) or not SERVICE_NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"invalid service name {name!r}: use {SERVICE_NAME_RULE}, not ending in a dash (e.g. 'digits-svc')"
        )
    return name
