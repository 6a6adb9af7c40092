"""Deployment configurations shaped like Azure ML v1's: Python classes and v1's ``deploymentconfig.json``/YAML.

:mod:`cloud_targets.config.model` holds the typed objects every target reads; the rules v1 applied
(names, auth, autoscale, numbers) and the v1 file reader live beside it.
"""

from cloud_targets.config.model import (
    AciDeploymentConfig,
    AksDeploymentConfig,
    DeploymentConfig,
    DeploymentConfigError,
    LocalDeploymentConfig,
)

__all__ = [
    "AciDeploymentConfig",
    "AksDeploymentConfig",
    "DeploymentConfig",
    "DeploymentConfigError",
    "LocalDeploymentConfig",
]
