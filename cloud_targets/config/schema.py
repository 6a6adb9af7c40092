"""v1's ``deploymentconfig.json`` keys, per compute type, and the config fields they set.

The paths are the ones the v1 CLI read (``azureml._model_management._util.deploy_config_dict_to_obj``)
plus ``tags``/``properties``/``description`` (v1 took those from CLI flags; edgepack also reads them
from the file). One table drives the file reader, :meth:`DeploymentConfig.to_dict` and the labels in
error messages, so a field and its JSON key never drift apart.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["bool", "int", "float", "str", "map"]
#: (JSON path, field name, value kind); the first path of a field is the one ``to_dict`` writes.
Entry = tuple[tuple[str, ...], str, Kind]

COMPUTE_TYPE_KEY = "computeType"

_COMMON: list[Entry] = [
    (("tags",), "tags", "map"),
    (("properties",), "properties", "map"),
    (("description",), "description", "str"),
    (("authEnabled",), "auth_enabled", "bool"),
    # v1 read tokenAuthEnabled for AKS only; it is parsed everywhere so ACI/LOCAL refuse it instead of
    # silently serving without auth.
    (("tokenAuthEnabled",), "token_auth_enabled", "bool"),
    (("keys", "primaryKey"), "primary_key", "str"),
    (("keys", "secondaryKey"), "secondary_key", "str"),
    (("scoringTimeoutMs",), "scoring_timeout_ms", "int"),
    (("maxConcurrentRequestsPerContainer",), "replica_max_concurrent_requests", "int"),
    (("maxQueueWaitMs",), "max_request_wait_time", "int"),
]

_RESOURCES: list[Entry] = [
    (("containerResourceRequirements", "cpu"), "cpu_cores", "float"),
    (("containerResourceRequirements", "memoryInGB"), "memory_gb", "float"),
    (("containerResourceRequirements", "cpuLimit"), "cpu_cores_limit", "float"),
    (("containerResourceRequirements", "memoryInGBLimit"), "memory_gb_limit", "float"),
    (("gpuCores",), "gpu_cores", "int"),
    (("containerResourceRequirements", "gpu"), "gpu_cores", "int"),  # the name v1's service payloads used
    (("appInsightsEnabled",), "enable_app_insights", "bool"),
    (("dataCollection", "storageEnabled"), "collect_model_data", "bool"),
]

LOCAL: list[Entry] = [*_COMMON, (("port",), "port", "int")]

ACI: list[Entry] = [
    *_COMMON,
    *_RESOURCES,
    (("location",), "location", "str"),
    (("sslEnabled",), "ssl_enabled", "bool"),
    (("sslCertificate",), "ssl_cert_pem_file", "str"),
    (("sslKey",), "ssl_key_pem_file", "str"),
    (("cname",), "ssl_cname", "str"),
    (("dnsNameLabel",), "dns_name_label", "str"),
    (("vaultBaseUrl",), "cmk_vault_base_url", "str"),
    (("keyName",), "cmk_key_name", "str"),
    (("keyVersion",), "cmk_key_version", "str"),
    (("vnetName",), "vnet_name", "str"),
    (("subnetName",), "subnet_name", "str"),
]

AKS: list[Entry] = [
    *_COMMON,
    *_RESOURCES,
    (("autoScaler", "autoscaleEnabled"), "autoscale_enabled", "bool"),
    (("autoScaler", "minReplicas"), "autoscale_min_replicas", "int"),
    (("autoScaler", "maxReplicas"), "autoscale_max_replicas", "int"),
    (("autoScaler", "refreshPeriodInSeconds"), "autoscale_refresh_seconds", "int"),
    (("autoScaler", "targetUtilization"), "autoscale_target_utilization", "int"),
    (("numReplicas",), "num_replicas", "int"),
    (("livenessProbeRequirements", "periodSeconds"), "period_seconds", "int"),
    (("livenessProbeRequirements", "initialDelaySeconds"), "initial_delay_seconds", "int"),
    (("livenessProbeRequirements", "timeoutSeconds"), "timeout_seconds", "int"),
    (("livenessProbeRequirements", "successThreshold"), "success_threshold", "int"),
    (("livenessProbeRequirements", "failureThreshold"), "failure_threshold", "int"),
    (("namespace",), "namespace", "str"),
    (("computeTargetName",), "compute_target_name", "str"),
]

AKS_ENDPOINT: list[Entry] = [
    *AKS,
    (("versionName",), "version_name", "str"),
    (("trafficPercentile",), "traffic_percentile", "float"),
    (("isDefault",), "is_default", "bool"),
    (("isControlVersionType",), "is_control_version_type", "bool"),
]

#: computeType (upper case) -> its keys.
BY_COMPUTE_TYPE: dict[str, list[Entry]] = {"LOCAL": LOCAL, "ACI": ACI, "AKS": AKS, "AKSENDPOINT": AKS_ENDPOINT}


def dotted(path: tuple[str, ...]) -> str:
    """``("autoScaler", "minReplicas")`` -> ``"autoScaler.minReplicas"``."""
    return ".".join(path)


def field_paths(compute_type: str) -> dict[str, tuple[str, ...]]:
    """Field name -> its canonical JSON path for one compute type."""
    out: dict[str, tuple[str, ...]] = {}
    for path, name, _ in BY_COMPUTE_TYPE.get(compute_type, []):
        out.setdefault(name, path)
    return out


def field_kinds(compute_type: str) -> dict[str, Kind]:
    """Field name -> value kind for one compute type."""
    return {name: kind for _, name, kind in BY_COMPUTE_TYPE.get(compute_type, [])}


def label(compute_type: str, name: str) -> str:
    """How errors name a setting: ``autoscale_min_replicas (autoScaler.minReplicas)``."""
    path = field_paths(compute_type).get(name)
    return f"{name} ({dotted(path)})" if path and dotted(path) != name else name


__all__ = [
    "BY_COMPUTE_TYPE",
    "COMPUTE_TYPE_KEY",
    "Entry",
    "Kind",
    "dotted",
    "field_kinds",
    "field_paths",
    "label",
]
