"""Deploy, inspect and delete ACI services through Azure Resource Manager (azure-mgmt-containerinstance).

ARM's refusals become :class:`~packager.errors.EdgepackError` messages that name the fix; nothing secret
(keys, registry passwords) is logged: the container group is never printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from cloud_targets.config.model import AciDeploymentConfig
from cloud_targets.targets.aci.group import container_group_plan
from packager.errors import ConflictError, EdgepackError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.containerinstance.models import ContainerGroup

    from cloud_targets.targets.base import ServiceSpec

log = logging.getLogger(__name__)

TRANSITIONING, HEALTHY, UNHEALTHY, FAILED = "Transitioning", "Healthy", "Unhealthy", "Failed"
_FAILED_PROVISIONING = {"failed", "canceled", "cancelled"}


class AciTarget:
    """ACI services in one subscription and resource group.

    ``credential`` defaults to :class:`azure.identity.DefaultAzureCredential` (``az login``, environment,
    managed identity); ``base_url`` to Azure's public ARM endpoint. ``location`` is used when a
    configuration gives none. ``client_options`` go to the SDK client (e.g. ``connection_verify``).
    """

    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        credential: TokenCredential | None = None,
        base_url: str | None = None,
        *,
        location: str | None = None,
        polling_interval: float = 5.0,
        **client_options: Any,
    ) -> None:
        if not subscription_id or not resource_group:
            raise InvalidInputError("an ACI target needs a subscription id and a resource group name")
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.location = location
        self.polling_interval = polling_interval
        self._credential = credential
        self._base_url = base_url
        self._client_options = client_options
        self._client: ContainerInstanceManagementClient | None = None
        self.last_warnings: list[str] = []

    def __repr__(self) -> str:
        return f"AciTarget(subscription_id={self.subscription_id!r}, resource_group={self.resource_group!r})"

    @property
    def client(self) -> ContainerInstanceManagementClient:
        """The SDK client, made on first use (so importing this module needs no Azure packages)."""
        if self._client is None:
            try:
                from azure.mgmt.containerinstance import ContainerInstanceManagementClient
            except ImportError as exc:
                raise EdgepackError(
                    "the ACI target needs azure-mgmt-containerinstance and azure-identity: "
                    "pip install 'edgepack[cloud]'"
                ) from exc
            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs = dict(self._client_options)
            if self._base_url:
                kwargs["base_url"] = self._base_url
            self._client = ContainerInstanceManagementClient(credential, self.subscription_id, **kwargs)
        return self._client

    # -- deploy and update ---------------------------------------------------------------------------
    def subnet_id(self, config: AciDeploymentConfig) -> str | None:
        """The ARM id of the config's subnet (vnet in this resource group), or None."""
        if not (config.vnet_name and config.subnet_name):
            return None
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
            f"Microsoft.Network/virtualNetworks/{config.vnet_name}/subnets/{config.subnet_name}"
        )

    def deploy(self, spec: ServiceSpec) -> str:
        """Create or update the container group for ``spec``, wait until ARM has provisioned it: the scoring URI.

        Settings ACI does not honour are logged as warnings and kept in ``last_warnings``.
        """
        config = spec.config
        location = (config.location if isinstance(config, AciDeploymentConfig) else None) or self.location
        subnet = self.subnet_id(config) if isinstance(config, AciDeploymentConfig) else None
        plan = container_group_plan(spec, location or "", subnet)
        self.last_warnings = plan.warnings
        for warning in plan.warnings:
            log.warning("%s: %s", spec.name, warning)
        log.info("creating ACI container group %s in %s (%s)", spec.name, self.resource_group, location)
        with self._arm_errors("deploy", spec.name):
            poller = self.client.container_groups.begin_create_or_update(
                self.resource_group, spec.name, plan.group, polling_interval=self.polling_interval
            )
            group = poller.result()
        if (group.provisioning_state or "").lower() in _FAILED_PROVISIONING:
            raise EdgepackError(f"ACI could not provision {spec.name!r}: {_events(group) or group.provisioning_state}")
        return _scoring_uri(group, spec.name)

    def update_secrets(self, spec: ServiceSpec, secrets: Mapping[str, str]) -> str:
        """Redeploy ``spec`` with ``secrets`` replacing its secret values (key rotation): the scoring URI.

        ARM never returns secure values, so the whole spec is sent again; ACI restarts the container.
        """
        return self.deploy(dataclasses.replace(spec, secrets={**spec.secrets, **secrets}))

    # -- inspect -----------------------------------------------------------------------------------
    def get(self, name: str) -> ContainerGroup:
        """The container group ``name`` as ARM reports it (with its instance view)."""
        with self._arm_errors("read", name):
            return self.client.container_groups.get(self.resource_group, name)

    def state(self, name: str) -> str:
        """``Transitioning``, ``Healthy``, ``Unhealthy`` or ``Failed``, as v1's ``Webservice.state``."""
        return group_state(self.get(name))

    def scoring_uri(self, name: str) -> str:
        """``http://<fqdn or ip>:<port>/score`` of a deployed service."""
        return _scoring_uri(self.get(name), name)

    def logs(self, name: str, num_lines: int | None = 5000) -> str:
        """The last ``num_lines`` lines of the service container's log (all when None)."""
        with self._arm_errors("read the logs of", name):
            result = self.client.containers.list_logs(self.resource_group, name, name, tail=num_lines)
        return result.content or ""

    def delete(self, name: str) -> None:
        """Delete the container group and wait until it is gone (a missing one is not an error)."""
        with self._arm_errors("delete", name):
            self.client.container_groups.begin_delete(
                self.resource_group, name, polling_interval=self.polling_interval
            ).result()

    # -- errors ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _arm_errors(self, action: str, name: str) -> Iterator[None]:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        where = f"resource group {self.resource_group!r} of subscription {self.subscription_id}"
        try:
            yield
        except ClientAuthenticationError as exc:
            if exc.status_code is None:  # the credential itself could not get a token
                raise EdgepackError(
                    f"cannot {action} ACI service {name!r}: no Azure credential ({_first_line(exc)}); sign in with "
                    "`az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (service principal)"
                ) from None
            raise _from_status(exc, action, name, where) from None
        except HttpResponseError as exc:
            raise _from_status(exc, action, name, where) from None
        except ServiceRequestError as exc:
            raise EdgepackError(
                f"cannot {action} ACI service {name!r}: Azure Resource Manager is unreachable ({_first_line(exc)}); "
                "check the network and proxy settings"
            ) from None


def group_state(group: ContainerGroup) -> str:
    """Map ARM's provisioning state and the container's instance view to v1's service states."""
    provisioning = (group.provisioning_state or "").lower()
    if provisioning in _FAILED_PROVISIONING:
        return FAILED
    if provisioning != "succeeded":
        return TRANSITIONING
    view = group.instance_view
    if view is not None and (view.state or "").lower() == "stopped":
        return UNHEALTHY
    states = [c.instance_view.current_state for c in group.containers if c.instance_view is not None]
    if not states or any(s is None for s in states):
        return TRANSITIONING
    if all((s.state or "").lower() == "running" for s in states):
        return HEALTHY
    return UNHEALTHY


def _scoring_uri(group: ContainerGroup, name: str) -> str:
    address = group.ip_address
    host = address and (address.fqdn or address.ip)
    if not host:
        raise EdgepackError(f"ACI service {name!r} has no IP address yet: wait for the deployment, then ask again")
    port = address.ports[0].port if address.ports else 80
    return f"http://{host}/score" if port == 80 else f"http://{host}:{port}/score"


def _events(group: ContainerGroup) -> str:
    events = []
    for container in group.containers:
        view = container.instance_view
        for event in (view.events or []) if view is not None else []:
            if event.message:
                events.append(event.message)
    return "; ".join(events[-3:])


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_status(exc: Any, action: str, name: str, where: str) -> EdgepackError:
    status = exc.status_code
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    detail = getattr(error, "message", None) or exc.reason or _first_line(exc)
    subject = f"cannot {action} ACI service {name!r} in {where}"
    if status is None or status < 400:  # a long-running operation ARM accepted, then reported failed
        return EdgepackError(
            f"{subject}: the operation failed{f' ({code})' if code else ''}: {detail}. Read the container's events "
            "and logs (state, get_logs), fix the cause (image, registry credentials, resources) and deploy again"
        )
    said = f"ARM answered {status}{f' {code}' if code else ''}: {detail}"
    if status == 401:
        return EdgepackError(
            f"{subject}: {said}. The credential was refused: sign in again (`az login`) or check the service "
            "principal's tenant, client id and secret"
        )
    if status == 403:
        return EdgepackError(
            f"{subject}: {said}. The identity may not manage container groups there: grant it the Contributor role "
            "on the resource group (az role assignment create --role Contributor --scope <resource group id>)"
        )
    if status == 404:
        if code in ("ResourceGroupNotFound", "SubscriptionNotFound", "InvalidSubscriptionId"):
            return NotFoundError(
                f"{subject}: {said}. Create the resource group (az group create) or fix the subscription id"
            )
        return NotFoundError(f"{subject}: {said}. No such service: deploy it first (or check its name)")
    if status == 409:
        return ConflictError(
            f"{subject}: {said}. ACI cannot change this in place (another operation is running, or a property such "
            "as OS type, CPU, memory or ports cannot be updated): wait and retry, or delete the service and deploy "
            "it again"
        )
    if status == 400:
        return InvalidInputError(f"{subject}: {said}. Fix the deployment configuration named in ARM's message")
    return EdgepackError(f"{subject}: {said}")
