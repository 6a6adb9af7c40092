"""Deployment configurations shaped like Azure ML v1's: Python factories and v1's ``deploymentconfig.json``/YAML.

:mod:`~cloud_targets.config.model` holds the typed objects every target reads and v1's rules
(``validate()``); :mod:`~cloud_targets.config.factories` has v1's ``deploy_configuration`` functions,
:mod:`~cloud_targets.config.reader` v1's file reader, :mod:`~cloud_targets.config.rules` the naming rules.
"""

from cloud_targets.config.errors import DeploymentConfigError
from cloud_targets.config.factories import (
    aci_deploy_configuration,
    aks_deploy_configuration,
    aks_endpoint_deploy_configuration,
    local_deploy_configuration,
)
from cloud_targets.config.model import (
    AUTOSCALE_DEFAULTS,
    AciDeploymentConfig,
    AksDeploymentConfig,
    AksEndpointDeploymentConfig,
    AutoscaleSettings,
    DeploymentConfig,
    LocalDeploymentConfig,
)
from cloud_targets.config.reader import deployment_config_from_dict, load_deployment_config
from cloud_targets.config.rules import validate_service_name

__all__ = [
    "AUTOSCALE_DEFAULTS",
    "AciDeploymentConfig",
    "AksDeploymentConfig",
    "AksEndpointDeploymentConfig",
    "AutoscaleSettings",
    "DeploymentConfig",
    "DeploymentConfigError",
    "LocalDeploymentConfig",
    "aci_deploy_configuration",
    "aks_deploy_configuration",
    "aks_endpoint_deploy_configuration",
    "deployment_config_from_dict",
    "load_deployment_config",
    "local_deploy_configuration",
    "validate_service_name",
]
