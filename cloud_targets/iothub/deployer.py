"""Deploy IoT Edge manifests through the official SDK (azure-iot-hub's ``IoTHubConfigurationManager``).

The SDK signs every request with a SAS token made from the connection string
(``Authorization: SharedAccessSignature sr=<HostName>&sig=<HMAC-SHA256>&se=<expiry>&skn=<policy>``, one hour)
and sends REST calls to ``https://<HostName>`` with ``api-version=2021-04-12`` (azure-iot-hub 2.7):
``PUT /configurations/<id>`` (create), ``GET /configurations/<id>``, ``GET /configurations?top=N``,
``DELETE /configurations/<id>`` (``If-Match: *``) and ``POST /devices/<id>/applyConfigurationContent``.
Manifests are validated before any request. SDK errors become :class:`DeployError` with the status and
IoT Hub's message, secrets redacted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cloud_targets.iothub.connection import ConnectionString, parse_connection_string, redact
from cloud_targets.iothub.content import check_deployment_id, check_device_id, deployment_content, device_content
from packager.errors import ConflictError, EdgepackError, InvalidInputError, NotFoundError

__all__ = ["API_VERSION", "DeployError", "IotHubDeployer"]

log = logging.getLogger(__name__)

API_VERSION = "2021-04-12"  # what azure-iot-hub 2.7's generated client sends
_MAX_ERROR_CHARS = 500


class DeployError(EdgepackError):
    """IoT Hub refused or could not be reached (exit 1). ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(redact(message))
        self.status = status


class AuthError(DeployError):
    """401/403: the connection string's policy or key was refused."""


class DeploymentNotFound(DeployError, NotFoundError):
    """404: no such deployment or device."""


class DeploymentExists(DeployError, ConflictError):
    """409: a deployment with that id exists (IoT Hub never changes a deployment's content)."""


def _hub_message(response: Any) -> str:
    """IoT Hub's error text: ``{"Message": "ErrorCode:...;...", "ExceptionMessage": ...}``, bounded."""
    try:
        text = response.text[:4096]
    except Exception:
        return ""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return " ".join(text.split())[:_MAX_ERROR_CHARS]
    if isinstance(doc, dict):
        for key in ("Message", "message", "ExceptionMessage"):
            if isinstance(doc.get(key), str):
                return " ".join(doc[key].split())[:_MAX_ERROR_CHARS]
    return ""


class IotHubDeployer:
    """Deployments and device configuration on one IoT Hub.

    ``verify``: TLS verification for the hub (``True``, or a CA bundle path; ``REQUESTS_CA_BUNDLE`` is honoured
    too); ``timeout``: seconds per request; ``retries``: the SDK's retries on 408/5xx and connection errors.
    """

    def __init__(
        self, connection: ConnectionString, verify: bool | str = True, timeout: float = 30.0, retries: int = 3
    ):
        try:
            from azure.iot.hub import IoTHubConfigurationManager
        except ImportError as exc:
            raise EdgepackError(
                f"deploying to IoT Hub needs azure-iot-hub ({exc.name} is missing): pip install 'edgepack[cloud]'"
            ) from None
        self.host = connection.host_name
        try:
            self._manager = IoTHubConfigurationManager.from_connection_string(connection.value)
        except Exception as exc:  # the SDK's parser: never echo the string
            raise InvalidInputError(
                f"the IoT Hub connection string was refused by azure-iot-hub: {redact(str(exc))}"
            ) from None
        config = self._manager.protocol.config
        config.connection.verify = verify
        config.connection.timeout = timeout
        config.retry_policy.retries = retries
        config.enable_http_logger = False  # msrest would log request headers: the SAS token

    @classmethod
    def from_connection_string(cls, connection_string: str, **kwargs: Any) -> IotHubDeployer:
        """A deployer for the hub in ``connection_string`` (a service policy's, e.g. iothubowner)."""
        return cls(parse_connection_string(connection_string), **kwargs)

    # -- calls -----------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        from msrest.exceptions import ClientException, HttpOperationError

        try:
            return fn(*args)
        except HttpOperationError as exc:
            status = getattr(exc.response, "status_code", None)
            hub = _hub_message(exc.response)
            detail = f": {hub}" if hub else ""
            if status in (401, 403):
                raise AuthError(
                    f"{what}: IoT Hub {self.host} refused the credentials (HTTP {status}){detail}; check the "
                    "connection string's policy has registry write and service connect rights",
                    status,
                ) from None
            if status == 404:
                raise DeploymentNotFound(
                    f"{what}: not found on IoT Hub {self.host} (HTTP 404){detail}", status
                ) from None
            if status in (409, 412):
                raise DeploymentExists(
                    f"{what}: IoT Hub {self.host} reports a conflict (HTTP {status}){detail}; deployment content "
                    "cannot change: delete it or use a new deployment id",
                    status,
                ) from None
            raise DeployError(f"{what}: IoT Hub {self.host} answered HTTP {status}{detail}", status) from None
        except ClientException as exc:  # connection refused, TLS, timeouts (after the SDK's retries)
            reason = exc.inner_exception or exc
            hint = (
                " (the hub's TLS certificate is not trusted: REQUESTS_CA_BUNDLE names a CA file)"
                if "SSL" in str(reason)
                else ""
            )
            raise DeployError(
                f"{what}: cannot reach IoT Hub {self.host}{hint}: {type(reason).__name__}: {reason}"
            ) from None

    def apply_to_device(self, device_id: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """Set a device's modules to a full manifest (``az iot edge set-modules``); returns what was sent."""
        from azure.iot.hub.models import ConfigurationContent

        check_device_id(device_id)
        content = device_content(manifest)
        log.debug("applying configuration content to device %s on %s", device_id, self.host)
        self._call(
            f"apply to device {device_id!r}",
            self._manager.apply_configuration_on_edge_device,
            device_id,
            ConfigurationContent(modules_content=content["modulesContent"]),
        )
        return content

    def create_deployment(
        self,
        deployment_id: str,
        manifest: dict[str, Any],
        target_condition: str,
        priority: int,
        labels: dict[str, str] | None = None,
        metrics: dict[str, str] | None = None,
        layered: bool = False,
    ) -> dict[str, Any]:
        """Create an automatic deployment (``az iot edge deployment create``); returns IoT Hub's record."""
        from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics

        body = deployment_content(deployment_id, manifest, target_condition, priority, labels, metrics, layered)
        configuration = Configuration(
            id=body["id"],
            content=ConfigurationContent(modules_content=body["content"]["modulesContent"]),
            target_condition=body["targetCondition"],
            priority=body["priority"],
            labels=body["labels"],
            metrics=ConfigurationMetrics(queries=body["metrics"]["queries"]),
        )
        created = self._call(f"create deployment {deployment_id!r}", self._manager.create_configuration, configuration)
        return _as_dict(created) if created is not None else body

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        check_deployment_id(deployment_id)
        return _as_dict(self._call(f"deployment {deployment_id!r}", self._manager.get_configuration, deployment_id))

    def list_deployments(self, top: int | None = None) -> list[dict[str, Any]]:
        """Every deployment and configuration on the hub (IoT Hub has no paging here: ``top`` caps it)."""
        found = self._call("list deployments", self._manager.get_configurations, top) or []
        return [_as_dict(c) for c in found]

    def delete_deployment(self, deployment_id: str, etag: str | None = None) -> None:
        """Delete a deployment (``If-Match: *`` unless ``etag``): devices fall back to lower-priority ones."""
        check_deployment_id(deployment_id)
        self._call(f"delete deployment {deployment_id!r}", self._manager.delete_configuration, deployment_id, etag)


def _as_dict(model: Any) -> dict[str, Any]:
    """An SDK model as its REST JSON (camelCase keys)."""
    return model.serialize(keep_readonly=True) if hasattr(model, "serialize") else dict(model)
