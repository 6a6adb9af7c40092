"""A v2 deployment YAML in edgepack's terms: the registered model, the inference config, the deployment config.

- ``model.path`` is registered in the workspace (``model.name`` or ``<endpoint>-<deployment>-model``, the next
  version); ``azureml:NAME:VERSION`` is looked up in the registry.
- ``code_configuration`` + ``environment.conda_file`` + ``environment_variables`` -> :class:`InferenceConfig`
  (entry script, source directory, an :class:`Environment`). ``environment.image`` is the base image: on
  Kubernetes it is used as given; locally Azure's ``mcr.microsoft.com/azureml/...`` images are not pulled and
  edgepack's default base is used (said in a warning), other images are used as given.
- ``instance_count`` -> replicas on Kubernetes (one process/container locally, warned); ``instance_type`` ->
  CPU/memory limits for the common ``Standard_*`` sizes on Kubernetes (warned locally);
  ``request_settings`` -> the scoring timeout/concurrency/queue settings; ``liveness_probe`` -> the probe.
"""

from __future__ import annotations

from typing import Any

from cloud_targets.config.model import DeploymentConfig, LocalDeploymentConfig
from cloud_targets.endpoints.v2 import V2Deployment, V2SpecError
from packager.image.inference_config import InferenceConfig

#: Azure VM sizes common for online deployments -> (vCPUs, GiB memory).
INSTANCE_TYPES: dict[str, tuple[float, float]] = {
    "standard_ds1_v2": (1, 3.5),
    "standard_ds2_v2": (2, 7),
    "standard_ds3_v2": (4, 14),
    "standard_ds4_v2": (8, 28),
    "standard_ds5_v2": (16, 56),
    "standard_f2s_v2": (2, 4),
    "standard_f4s_v2": (4, 8),
    "standard_f8s_v2": (8, 16),
    "standard_f16s_v2": (16, 32),
    "standard_f32s_v2": (32, 64),
    "standard_e2s_v3": (2, 16),
    "standard_e4s_v3": (4, 32),
    "standard_e8s_v3": (8, 64),
    "standard_d2as_v4": (2, 8),
    "standard_d4as_v4": (4, 16),
    "standard_d8as_v4": (8, 32),
}
AZURE_IMAGE_PREFIX = "mcr.microsoft.com/azureml/"
_REQUEST = {
    "request_timeout_ms": "scoring_timeout_ms",
    "max_concurrent_requests_per_instance": "replica_max_concurrent_requests",
    "max_queue_wait_ms": "max_request_wait_time",
}
_PROBE = {
    "period": "period_seconds",
    "initial_delay": "initial_delay_seconds",
    "timeout": "timeout_seconds",
    "success_threshold": "success_threshold",
    "failure_threshold": "failure_threshold",
}


def model_name(dep: V2Deployment) -> str:
    """The name a local ``model.path`` is registered under."""
    assert dep.model is not None
    return dep.model.name or f"{dep.endpoint_name}-{dep.name}-model"


def resolve_model(workspace: Any, dep: V2Deployment) -> Any:
    """The deployment's model in the registry: ``model.path`` registered now, else the named version."""
    from packager.registry.model import Model

    if dep.model is None:
        raise V2SpecError(f"deployment {dep.name}: no model; add `model: {{path: ...}}` to its YAML")
    if dep.model.path is not None:
        return Model.register(
            workspace, dep.model.path, model_name(dep), description=f"v2 deployment {dep.endpoint_name}/{dep.name}"
        )
    return Model(workspace, dep.model.name, version=dep.model.version)


def inference_config(dep: V2Deployment, local: bool) -> tuple[InferenceConfig, list[str]]:
    """``(InferenceConfig, warnings)`` from ``code_configuration`` and ``environment``."""
    from packager.image.environment import Environment

    where = f"deployment {dep.name}"
    warnings: list[str] = []
    base_image = dep.image
    if dep.environment_ref:
        warnings.append(
            f"{where}: environment {dep.environment_ref} is a workspace asset edgepack does not have: edgepack's "
            "default base image is used with no extra packages; give environment.conda_file for the packages"
        )
    if base_image and local and base_image.startswith(AZURE_IMAGE_PREFIX):
        warnings.append(
            f"{where}: environment.image {base_image} is Azure's base image; it is not pulled for a local "
            "endpoint: edgepack's default base is used (the conda file's packages are installed on it)"
        )
        base_image = None
    environment = None
    if dep.conda_file or dep.environment_variables or base_image:
        environment = (
            Environment.from_conda_specification(f"{dep.endpoint_name}-{dep.name}", dep.conda_file)
            if dep.conda_file
            else Environment(f"{dep.endpoint_name}-{dep.name}")
        )
        environment.environment_variables = dict(dep.environment_variables)
        if base_image:
            environment.docker.base_image = base_image
    ic = InferenceConfig(
        entry_script=dep.scoring_script,
        source_directory=str(dep.code) if dep.code else None,
        environment=environment,
        description=dep.description,
    )
    return ic, warnings


def instance_resources(instance_type: str | None) -> tuple[float, float] | None:
    """``(vCPUs, GiB)`` of a known ``Standard_*`` size, else ``None``."""
    return INSTANCE_TYPES.get(instance_type.lower()) if instance_type else None


def deployment_config(dep: V2Deployment, compute_type: str) -> tuple[DeploymentConfig, list[str]]:
    """``(config, warnings)``: ``LOCAL`` -> :class:`LocalDeploymentConfig`, else the AKS endpoint version's."""
    where = f"deployment {dep.name}"
    warnings: list[str] = []
    common: dict[str, Any] = {_REQUEST[k]: v for k, v in dep.request_settings.items()}
    if dep.description:
        common["description"] = dep.description
    if dep.tags:
        common["tags"] = dict(dep.tags)
    if compute_type == "LOCAL":
        if dep.instance_count != 1:
            warnings.append(f"{where}: instance_count {dep.instance_count}: a local deployment runs one instance")
        if dep.instance_type:
            warnings.append(f"{where}: instance_type {dep.instance_type} is not used locally (the machine's own)")
        if dep.liveness_probe:
            warnings.append(f"{where}: liveness_probe is not used locally (the process is watched instead)")
        if dep.scale_settings.get("type", "default") not in (None, "default"):
            warnings.append(f"{where}: scale_settings are not used locally")
        return LocalDeploymentConfig(**common).validate(), warnings
    from cloud_targets.config.factories import aks_endpoint_deploy_configuration

    args: dict[str, Any] = {**common, **{_PROBE[k]: v for k, v in dep.liveness_probe.items()}}
    scale = dep.scale_settings
    if str(scale.get("type", "default")).lower() == "target_utilization":
        args.update(
            autoscale_enabled=True,
            autoscale_min_replicas=scale.get("min_instances", 1),
            autoscale_max_replicas=scale.get("max_instances", max(dep.instance_count, 1)),
        )
        if scale.get("target_utilization_percentage"):
            args["autoscale_target_utilization"] = scale["target_utilization_percentage"]
    else:
        args.update(autoscale_enabled=False, num_replicas=dep.instance_count)
    size = instance_resources(dep.instance_type)
    if size is not None:
        args.update(cpu_cores_limit=size[0], memory_gb_limit=size[1])
    elif dep.instance_type:
        warnings.append(
            f"{where}: instance_type {dep.instance_type} is not a size edgepack knows: no CPU/memory limit is set "
            f"(known: {', '.join(sorted(k.replace('standard', 'Standard') for k in INSTANCE_TYPES))})"
        )
    return aks_endpoint_deploy_configuration(version_name=dep.name, **args), warnings


__all__ = [
    "INSTANCE_TYPES",
    "deployment_config",
    "inference_config",
    "instance_resources",
    "model_name",
    "resolve_model",
]
