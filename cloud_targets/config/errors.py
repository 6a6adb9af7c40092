"""The error a deployment configuration v1 would have refused raises."""

from __future__ import annotations

from packager.errors import InvalidInputError


class DeploymentConfigError(InvalidInputError):
    """A deployment configuration Azure ML v1 would have refused; the message names v1's rule and the fix."""


__all__ = ["DeploymentConfigError"]
