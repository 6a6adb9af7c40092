"""v1's ``Model.deploy`` with ``AksEndpoint.deploy_configuration(...)``: an endpoint created with, or given, a version.

Where it runs: on Kubernetes when a target is given (``deployment_target``, ``--ct``, ``$EDGEPACK_KUBE_CONTEXT``),
else on this machine (a warning says so).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from cloud_targets.config.rules import validate_service_name
from cloud_targets.endpoints.endpoint import AksEndpoint, Endpoint
from cloud_targets.endpoints.store import EndpointStore
from cloud_targets.services import configs
from packager.errors import ConflictError, EdgepackError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets.endpoints")


def endpoint_compute(deployment_target: Any) -> tuple[str, Any]:
    """Where an ``AKSENDPOINT`` deployment runs: ``("AKS", compute)`` when a Kubernetes target is given
    (``deployment_target`` or ``$EDGEPACK_KUBE_CONTEXT``), else ``("LOCAL", None)`` with a warning."""
    from cloud_targets.targets.compute import ENV_KUBE_CONTEXT, KubernetesCompute

    if deployment_target is not None:
        if isinstance(deployment_target, str):
            return "AKS", KubernetesCompute(context=deployment_target)
        return "AKS", deployment_target
    compute = KubernetesCompute.from_env()
    if compute.context:
        return "AKS", compute
    log.warning(
        "no Kubernetes target given (deployment_target, --ct or $%s): the AKSENDPOINT runs on this machine "
        "(a local router and local versions)",
        ENV_KUBE_CONTEXT,
    )
    return "LOCAL", None


def deploy_endpoint(
    workspace: Workspace,
    name: str,
    models: Sequence[Model | str],
    inference_config: InferenceConfig | None,
    config: Any,
    deployment_target: Any = None,
    overwrite: bool = False,
) -> AksEndpoint:
    """``Model.deploy`` with ``AksEndpoint.deploy_configuration(...)``: create the endpoint with this version,
    or add the version to the endpoint (``overwrite=True`` replaces a version of the same name)."""
    validate_service_name(name)
    config.validate()
    version = config.version_name or name
    traffic = config.traffic_percentile if config.traffic_percentile is not None else 0
    store = EndpointStore(workspace)
    if not store.exists(name):
        compute_type, compute = endpoint_compute(deployment_target)
        Endpoint.create(workspace, name, compute_type=compute_type, deployment_target=compute,
                        auth_mode=configs.auth_mode(config), description=config.description, tags=config.tags,
                        properties=config.properties, primary_key=getattr(config, "primary_key", None),
                        secondary_key=getattr(config, "secondary_key", None))  # fmt: skip
        first = True
    else:
        first = False
    ep = AksEndpoint(workspace, name)
    try:
        if ep._record.version(version) is not None:
            if not overwrite:
                raise ConflictError(
                    f"endpoint {name!r} already has a version {version!r}: pass overwrite=True (--overwrite) to "
                    "replace it, or give another version_name"
                )
            ep.update_version(
                version,
                traffic_percentile=traffic,
                is_default=config.is_default or None,
                is_control_version_type=config.is_control_version_type,
                models=models,
                inference_config=inference_config or InferenceConfig(),
                deployment_config=config,
            )
        else:
            ep.create_version(version, models, inference_config, config, traffic_percentile=traffic,
                              is_default=bool(config.is_default),
                              is_control_version_type=bool(config.is_control_version_type),
                              description=config.description)  # fmt: skip
    except BaseException:
        if first:  # a failed first version leaves no empty endpoint behind
            with contextlib.suppress(EdgepackError):
                ep.delete()
        raise
    return AksEndpoint(workspace, name)


__all__ = ["deploy_endpoint", "endpoint_compute"]
