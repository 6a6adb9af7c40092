"""The ACI :class:`~cloud_targets.targets.base.Target`: one web service as one container group.

A thin layer over :class:`~cloud_targets.targets.aci.client.AciTarget` for the service lifecycle. The handle
kept in the service record names the subscription, resource group, location and ARM endpoint (never the
credential: see :mod:`cloud_targets.targets.compute`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, ClassVar

from cloud_targets.targets.aci.client import AciTarget, _events, group_state
from cloud_targets.targets.base import FAILED, HEALTHY, Deployed, ServiceSpec, TargetStatus, swagger_uri
from cloud_targets.targets.compute import AciCompute
from packager.errors import InvalidInputError, NotFoundError


class AciServiceTarget:
    """Web services in the resource group ``compute`` names; implements :class:`cloud_targets.targets.base.Target`."""

    compute_type: ClassVar[str] = "ACI"

    def __init__(self, compute: AciCompute | None = None, *, polling_interval: float = 5.0) -> None:
        self.compute = (compute or AciCompute()).resolved()
        c = self.compute
        self.aci = AciTarget(
            str(c.subscription_id),
            str(c.resource_group),
            c.credential,
            c.base_url,
            location=c.location,
            polling_interval=polling_interval,
        )
        self.last_warnings: list[str] = []

    def __repr__(self) -> str:
        return f"AciServiceTarget({self.aci!r})"

    def _handle(self, name: str) -> dict[str, Any]:
        return {"name": name, **self.compute.handle()}

    def deploy(self, spec: ServiceSpec, previous: Mapping[str, Any] | None = None) -> Deployed:
        """Create or update the container group; ARM has provisioned it when this returns."""
        try:
            scoring = self.aci.deploy(spec)
        except Exception:
            if not previous:  # a new service: leave no failed container group behind
                with contextlib.suppress(Exception):
                    self.aci.delete(spec.name)
            raise
        # the plan's warnings (TLS, GPU, app insights, data collection) are the ones the config's
        # unsupported_settings() already gives: nothing ACI-only to add
        self.last_warnings = []
        return Deployed(scoring, swagger_uri(scoring), self._handle(spec.name))

    def state(self, handle: Mapping[str, Any]) -> TargetStatus:
        try:
            group = self.aci.get(str(handle["name"]))
        except NotFoundError as err:
            return TargetStatus(FAILED, str(err))
        state = group_state(group)
        return TargetStatus(state) if state == HEALTHY else TargetStatus(state, _events(group) or None)

    def logs(self, handle: Mapping[str, Any], num_lines: int = 5000) -> str:
        try:
            return self.aci.logs(str(handle["name"]), num_lines)
        except NotFoundError:
            return ""

    def delete(self, handle: Mapping[str, Any]) -> None:
        self.aci.delete(str(handle["name"]))

    def update_secrets(self, spec: ServiceSpec, handle: Mapping[str, Any]) -> Deployed:
        """Send the whole group again with the rotated secure values (ARM never returns them); ACI restarts it."""
        scoring = self.aci.update_secrets(spec, spec.secrets)
        return Deployed(scoring, swagger_uri(scoring), {**handle})


def aci_target(config: Any, deployment_target: Any = None) -> AciServiceTarget:
    """The registry's factory: ``deployment_target`` is an :class:`AciCompute`, a service record's handle, or None
    (the environment: $AZURE_SUBSCRIPTION_ID, $EDGEPACK_ACI_RESOURCE_GROUP)."""
    if deployment_target is None:
        compute = AciCompute()
    elif isinstance(deployment_target, AciCompute):
        compute = deployment_target
    elif isinstance(deployment_target, Mapping):
        compute = AciCompute.from_handle(deployment_target)
    else:
        raise InvalidInputError(
            f"deployment_target {type(deployment_target).__name__} is not an ACI resource group: pass "
            "AciCompute(subscription_id=..., resource_group=..., location=...)"
        )
    return AciServiceTarget(compute)


__all__ = ["AciServiceTarget", "aci_target"]
