"""Which :class:`EndpointTarget` serves a compute type: ``register_endpoint_target("AKS", factory)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packager.errors import InvalidInputError

_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_endpoint_target(compute_type: str, factory: Callable[..., Any]) -> None:
    """``factory(**kw)`` builds the target for endpoints of ``compute_type`` (case-insensitive)."""
    _FACTORIES[compute_type.upper()] = factory


def endpoint_target(compute_type: str, **kw: Any) -> Any:
    """The target for ``compute_type`` endpoints; a clear error naming the ones there are."""
    _register_builtin()
    factory = _FACTORIES.get(compute_type.upper())
    if factory is None:
        raise InvalidInputError(
            f"endpoints cannot run on compute type {compute_type!r}; use one of {', '.join(sorted(_FACTORIES))}"
        )
    return factory(**kw)


def _register_builtin() -> None:
    if "AKS" not in _FACTORIES:
        from cloud_targets.targets.kubernetes.endpoint import kubernetes_endpoint_target

        register_endpoint_target("AKS", kubernetes_endpoint_target)


__all__ = ["endpoint_target", "register_endpoint_target"]
