"""Deploy IoT Edge manifests to Azure IoT Hub: one device or automatic (base and layered) deployments.

The SDK (azure-iot-hub, the ``cloud`` extra; it pulls uamqp, x86_64 cp311 wheels only) is imported when a
deployer is made, so building content and ``--dry-run`` need only the core install and jsonschema.
"""

from cloud_targets.iothub.connection import (
    ConnectionString,
    parse_connection_string,
    redact,
    resolve_connection_string,
    save_connection_string,
)
from cloud_targets.iothub.content import (
    InvalidManifestError,
    deployment_content,
    device_content,
    load_manifest,
    modules_content,
)
from cloud_targets.iothub.deployer import (
    API_VERSION,
    AuthError,
    DeployError,
    DeploymentExists,
    DeploymentNotFound,
    IotHubDeployer,
)

__all__ = [
    "API_VERSION",
    "AuthError",
    "ConnectionString",
    "DeployError",
    "DeploymentExists",
    "DeploymentNotFound",
    "InvalidManifestError",
    "IotHubDeployer",
    "deployment_content",
    "device_content",
    "load_manifest",
    "modules_content",
    "parse_connection_string",
    "redact",
    "resolve_connection_string",
    "save_connection_string",
]
