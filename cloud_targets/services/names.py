"""Azure ML v1's web service name rule, checked before anything is built."""

from __future__ import annotations

from cloud_targets.config.rules import validate_service_name

SERVICE_NAME_RULE = "3 to 32 characters of lowercase letters, digits and dashes, starting with a letter"


def check_service_name(name: object) -> str:
    """Return ``name`` if v1 would accept it as a service name, else raise
    :class:`~cloud_targets.config.errors.DeploymentConfigError` (an InvalidInputError) with v1's rule."""
    return validate_service_name(name)
