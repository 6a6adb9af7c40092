"""Deployment targets (Local, ACI, AKS, IoT Hub): deploy and manage services and endpoints.

The v1-shaped API::

    from cloud_targets import Model, LocalWebservice, Webservice
    service = Model.deploy(ws, "digits-svc", [model], inference_config, LocalWebservice.deploy_configuration())
    service.wait_for_deployment()
    service.run('{"data": [[...]]}')
"""

from cloud_targets.model import Model, ModelPackage
from cloud_targets.webservice import AciWebservice, AksWebservice, LocalWebservice, Webservice, WebserviceException

__all__ = [
    "AciWebservice",
    "AksWebservice",
    "LocalWebservice",
    "Model",
    "ModelPackage",
    "Webservice",
    "WebserviceException",
]
