"""Errors edgepack raises on purpose: each names the problem and how to fix it.

The CLI prints ``error: <message>`` on one line and exits with ``exit_code``:
2 for bad input (usage), 1 for failures.
"""

from __future__ import annotations


class EdgepackError(Exception):
    """Base class: a failure the user can act on. Exit code 1."""

    exit_code = 1


class InvalidInputError(EdgepackError, ValueError):
    """The caller gave something unusable (bad name, missing path, empty folder). Exit code 2."""

    exit_code = 2


class NotFoundError(EdgepackError, LookupError):
    """A model, version or file that does not exist."""


class IntegrityError(EdgepackError):
    """Stored content does not match its recorded digest (corrupted or missing blob)."""


class ConflictError(EdgepackError):
    """The request conflicts with what is stored (e.g. changing an add-only property)."""
