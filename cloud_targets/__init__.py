"""Deployment targets (Local, ACI, AKS, IoT Hub): deploy and manage services and endpoints.

The v1-shaped API::

    from cloud_targets import Model, LocalWebservice, Webservice
    service = Model.deploy(ws, "digits-svc", [model], inference_config, LocalWebservice.deploy_configuration())
    service.wait_for_deployment()
    service.run('{"data": [[...]]}')

ACI and AKS take v1's ``deployment_target``: ``AciCompute(subscription_id, resource_group, location)`` or
``KubernetesCompute(context=..., kubeconfig=...)`` (default: the environment, see
:mod:`cloud_targets.targets.compute`). ``service.warnings`` lists the settings the target does not honour.
"""

from cloud_targets.endpoints import AksEndpoint, Endpoint, EndpointVersion
from cloud_targets.model import Model, ModelPackage
from cloud_targets.targets.compute import AciCompute, KubernetesCompute
from cloud_targets.webservice import AciWebservice, AksWebservice, LocalWebservice, Webservice, WebserviceException

__all__ = [
    "AciCompute",
    "AciWebservice",
    "AksEndpoint",
    "AksWebservice",
    "Endpoint",
    "EndpointVersion",
    "KubernetesCompute",
    "LocalWebservice",
    "Model",
    "ModelPackage",
    "Webservice",
    "WebserviceException",
]
