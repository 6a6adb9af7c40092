"""Deployment configurations to and from a service record (keys left out), and their auth mode."""

from __future__ import annotations

import dataclasses
from typing import Any

from cloud_targets.config.model import (
    AciDeploymentConfig,
    AksDeploymentConfig,
    AksEndpointDeploymentConfig,
    DeploymentConfig,
    LocalDeploymentConfig,
)
from packager.errors import InvalidInputError

CONFIG_CLASSES: dict[str, type[DeploymentConfig]] = {
    "LOCAL": LocalDeploymentConfig,
    "ACI": AciDeploymentConfig,
    "AKS": AksDeploymentConfig,
    "AKSENDPOINT": AksEndpointDeploymentConfig,
}
SECRET_FIELDS = ("primary_key", "secondary_key")


def compute_type_of(config: DeploymentConfig) -> str:
    """The v1 compute type (``LOCAL``, ``ACI``, ``AKS``) of ``config``."""
    if not isinstance(config, DeploymentConfig) or not type(config).compute_type:
        raise InvalidInputError(
            "deployment_config must come from LocalWebservice/AciWebservice/AksWebservice.deploy_configuration(...)"
        )
    return type(config).compute_type


def serialize_config(config: DeploymentConfig) -> dict[str, Any]:
    """The config's fields and ``computeType``, without the keys."""
    doc = {k: v for k, v in dataclasses.asdict(config).items() if k not in SECRET_FIELDS}
    doc["computeType"] = compute_type_of(config)
    return doc


def deserialize_config(doc: dict[str, Any]) -> DeploymentConfig:
    """Inverse of :func:`serialize_config` (keys are not in the record: they live in the secrets file)."""
    cls = CONFIG_CLASSES[str(doc.get("computeType", "LOCAL")).upper()]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in doc.items() if k in names})


def with_settings(config: DeploymentConfig, settings: dict[str, Any]) -> DeploymentConfig:
    """A copy of ``config`` with ``settings`` (field names) changed; an unknown name is refused by name."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InvalidInputError(
            f"{type(config).__name__} has no setting {', '.join(unknown)}; settings: {', '.join(sorted(names))}"
        )
    return dataclasses.replace(config, **settings)


def auth_mode(config: DeploymentConfig) -> str:
    """``token``, ``key`` or ``none`` (v1: key and token auth are exclusive)."""
    if config.token_auth_enabled and config.auth_enabled:
        raise InvalidInputError("auth_enabled and token_auth_enabled cannot both be true (v1's rule): pick one")
    if config.token_auth_enabled:
        return "token"
    return "key" if config.auth_enabled else "none"


__all__ = ["CONFIG_CLASSES", "auth_mode", "compute_type_of", "deserialize_config", "serialize_config", "with_settings"]
