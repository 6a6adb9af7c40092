"""v1's deploy_configuration factories and rules: validate(), unsupported settings, to_dict/from_dict."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from cloud_targets.config import (
    AUTOSCALE_DEFAULTS,
    AciDeploymentConfig,
    AksDeploymentConfig,
    AksEndpointDeploymentConfig,
    AutoscaleSettings,
    DeploymentConfig,
    DeploymentConfigError,
    LocalDeploymentConfig,
    aci_deploy_configuration,
    aks_deploy_configuration,
    aks_endpoint_deploy_configuration,
    local_deploy_configuration,
)


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(DeploymentConfigError) as err:
        call(*args, **kwargs)
    return str(err.value)


# ---------------------------------------------------------------------------------------------- defaults


def test_v1_defaults():
    local = local_deploy_configuration()
    assert isinstance(local, LocalDeploymentConfig) and local.port is None and not local.auth_enabled
    assert local_deploy_configuration(port=32267).port == 32267
    aci = aci_deploy_configuration()
    assert (aci.cpu_cores, aci.memory_gb, aci.auth_enabled, aci.ssl_enabled) == (0.1, 0.5, False, False)
    aks = aks_deploy_configuration()
    assert (aks.cpu_cores, aks.memory_gb, aks.auth_enabled, aks.token_auth_enabled) == (0.1, 0.5, True, False)
    assert (aks.scoring_timeout_ms, aks.replica_max_concurrent_requests, aks.max_request_wait_time) == (60000, 1, 500)
    probe = (aks.period_seconds, aks.initial_delay_seconds, aks.timeout_seconds, aks.success_threshold)
    assert probe == (10, 310, 2, 1) and aks.failure_threshold == 3
    # autoscaling is on unless num_replicas is given, with v1's defaults
    assert aks.autoscale_on and aks.autoscale_settings() == AUTOSCALE_DEFAULTS == AutoscaleSettings(1, 10, 1, 70)
    fixed = aks_deploy_configuration(num_replicas=3)
    assert not fixed.autoscale_on and fixed.autoscale_settings() is None
    tuned = aks_deploy_configuration(autoscale_enabled=True, autoscale_max_replicas=4, autoscale_target_utilization=50)
    assert tuned.autoscale_settings() == AutoscaleSettings(1, 4, 1, 50)
    # None means v1's default, as in v1's signatures
    assert aks_deploy_configuration(cpu_cores=None, auth_enabled=None).cpu_cores == 0.1


def test_token_auth_turns_key_auth_off_unless_both_are_asked_for():
    aks = aks_deploy_configuration(token_auth_enabled=True)
    assert aks.token_auth_enabled and aks.auth_enabled is False
    assert AksDeploymentConfig(token_auth_enabled=True).auth_enabled is False
    assert aks_deploy_configuration(token_auth_enabled=True, auth_enabled=False).validate() is not None
    msg = refused(aks_deploy_configuration, token_auth_enabled=True, auth_enabled=True)
    assert "auth_enabled (authEnabled) and token_auth_enabled (tokenAuthEnabled) cannot both be true" in msg
    assert "set authEnabled to false" in msg


@pytest.mark.parametrize("factory", [local_deploy_configuration, aci_deploy_configuration])
def test_token_auth_is_aks_only(factory):
    config = factory()
    config.token_auth_enabled = True
    msg = refused(config.validate)
    assert "token_auth_enabled (tokenAuthEnabled) is only available on AKS (as in Azure ML v1)" in msg
    assert "set it to false and use key auth (auth_enabled (authEnabled))" in msg


# ---------------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "field",
    ["cpu_cores", "memory_gb", "cpu_cores_limit", "memory_gb_limit", "scoring_timeout_ms",
     "replica_max_concurrent_requests", "max_request_wait_time", "num_replicas", "period_seconds",
     "initial_delay_seconds", "timeout_seconds", "success_threshold", "failure_threshold"],
)  # fmt: skip
@pytest.mark.parametrize("value", [0, -1])
def test_aks_numbers_must_be_positive(field: str, value: int):
    msg = refused(aks_deploy_configuration, **{field: value})
    assert f"{field} (" in msg and f"must be greater than zero, not {value}" in msg


@pytest.mark.parametrize(
    ("field", "extra"),
    [("num_replicas", {}), ("period_seconds", {}), ("failure_threshold", {}),
     ("autoscale_max_replicas", {"autoscale_enabled": True})],
)  # fmt: skip
def test_aks_int32_fields_are_bounded(field: str, extra: dict):
    """A cluster stores these as int32: a larger value is refused before an image is built and pushed."""
    msg = refused(aks_deploy_configuration, **{field: 2**31, **extra})
    assert f"{field} (" in msg and "must be at most 2147483647" in msg
    aks_deploy_configuration(**{field: 2**31 - 1, **extra}).validate()


@pytest.mark.parametrize("field", ["cpu_cores", "memory_gb", "scoring_timeout_ms", "max_request_wait_time"])
def test_aci_and_local_numbers_must_be_positive(field: str):
    assert "must be greater than zero, not 0" in refused(aci_deploy_configuration, **{field: 0})
    if field in ("scoring_timeout_ms", "max_request_wait_time"):
        assert f"{field} (" in refused(local_deploy_configuration, **{field: -5})


def test_gpu_cores_may_be_zero_but_not_negative():
    assert aks_deploy_configuration(gpu_cores=0).gpu_cores == 0
    assert "gpu_cores (gpuCores) must be greater than or equal to zero, not -1" in refused(
        aks_deploy_configuration, gpu_cores=-1
    )


def test_limits_must_cover_the_requests():
    msg = refused(aks_deploy_configuration, cpu_cores=2, cpu_cores_limit=1, memory_gb=4, memory_gb_limit=2)
    assert (
        "cpu_cores_limit (containerResourceRequirements.cpuLimit) (1) must be greater than or equal to "
        "cpu_cores (containerResourceRequirements.cpu) (2): raise the limit or lower the request" in msg
    )
    assert "memory_gb_limit (containerResourceRequirements.memoryInGBLimit) (2)" in msg
    assert aks_deploy_configuration(cpu_cores=1, cpu_cores_limit=1, memory_gb=1, memory_gb_limit=2).cpu_cores == 1


def test_local_port_range():
    assert "port must be a TCP port between 1 and 65535, not 70000" in refused(local_deploy_configuration, 70000)
    assert "port must be a TCP port between 1 and 65535, not 0" in refused(local_deploy_configuration, 0)


# ---------------------------------------------------------------------------------------------- autoscale


def test_autoscale_enabled_with_num_replicas_is_an_error():
    msg = refused(aks_deploy_configuration, autoscale_enabled=True, num_replicas=2)
    assert "autoscale enabled and num_replicas provided" in msg
    assert "remove num_replicas (numReplicas) or set autoscale_enabled (autoScaler.autoscaleEnabled) to false" in msg


def test_autoscale_disabled_without_num_replicas_is_an_error():
    msg = refused(aks_deploy_configuration, autoscale_enabled=False)
    assert "autoscale disabled but num_replicas not provided: set num_replicas (numReplicas)" in msg
    assert aks_deploy_configuration(autoscale_enabled=False, num_replicas=2).autoscale_settings() is None


@pytest.mark.parametrize(
    ("field", "key"),
    [("autoscale_min_replicas", "minReplicas"), ("autoscale_max_replicas", "maxReplicas"),
     ("autoscale_refresh_seconds", "refreshPeriodInSeconds"), ("autoscale_target_utilization", "targetUtilization")],
)  # fmt: skip
@pytest.mark.parametrize("enabled", [None, False])
def test_autoscaler_values_need_autoscale_enabled(field: str, key: str, enabled: bool | None):
    msg = refused(aks_deploy_configuration, autoscale_enabled=enabled, num_replicas=2 if enabled is False else None,
                  **{field: 3})  # fmt: skip
    assert f"{field} (autoScaler.{key}) provided without enabling autoscaling" in msg
    assert "set autoscale_enabled (autoScaler.autoscaleEnabled) to true, or remove it" in msg
    assert aks_deploy_configuration(autoscale_enabled=True, **{field: 3}).autoscale_on


def test_autoscaler_bounds():
    msg = refused(aks_deploy_configuration, autoscale_enabled=True, autoscale_min_replicas=5, autoscale_max_replicas=2)
    assert (
        "autoscale_min_replicas (autoScaler.minReplicas) cannot be greater than autoscale_max_replicas "
        "(autoScaler.maxReplicas): 5 > 2; lower the minimum or raise the maximum" in msg
    )
    assert "12 > 10 (the default)" in refused(
        aks_deploy_configuration, autoscale_enabled=True, autoscale_min_replicas=12
    )
    assert "autoscale_min_replicas (autoScaler.minReplicas) must be greater than zero, not 0" in refused(
        aks_deploy_configuration, autoscale_enabled=True, autoscale_min_replicas=0
    )
    for bad in (0, 101):
        msg = refused(aks_deploy_configuration, autoscale_enabled=True, autoscale_target_utilization=bad)
        assert "autoscale_target_utilization (autoScaler.targetUtilization)" in msg
    assert aks_deploy_configuration(autoscale_enabled=True, autoscale_target_utilization=100).autoscale_on


def test_every_problem_is_reported_at_once():
    msg = refused(aks_deploy_configuration, cpu_cores=0, namespace="Prod_NS", autoscale_enabled=False)
    assert msg.startswith("invalid AKS deployment configuration: ")
    assert msg.count("; ") >= 2 and "cpu_cores" in msg and "'Prod_NS' must be a valid Kubernetes namespace" in msg


def test_namespace_rule():
    msg = refused(aks_deploy_configuration, namespace="Team_A")
    assert "namespace 'Team_A' must be a valid Kubernetes namespace: up to 63 lowercase letters" in msg
    assert "^[a-z0-9]([a-z0-9-]{,61}[a-z0-9])?$" in msg
    assert aks_deploy_configuration(namespace="team-a").namespace == "team-a"


# ---------------------------------------------------------------------------------------------- ACI rules


def test_ssl_needs_cert_key_and_cname(tmp_path: Path):
    msg = refused(aci_deploy_configuration, ssl_enabled=True)
    assert "SSL is enabled, you must provide a SSL certificate, key, and cname" in msg
    assert "ssl_cert_pem_file (sslCertificate), ssl_key_pem_file (sslKey), ssl_cname (cname)" in msg
    msg = refused(aci_deploy_configuration, ssl_enabled=True, ssl_cert_pem_file=str(tmp_path / "c.pem"),
                  ssl_key_pem_file=str(tmp_path / "k.pem"), ssl_cname="x.example.com")  # fmt: skip
    assert f"unable to find the SSL cert pem file {tmp_path / 'c.pem'} (ssl_cert_pem_file (sslCertificate))" in msg
    assert "unable to find the SSL key pem file" in msg
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    aci = aci_deploy_configuration(ssl_enabled=True, ssl_cert_pem_file=str(tmp_path / "c.pem"),
                                   ssl_key_pem_file=str(tmp_path / "k.pem"), ssl_cname="x.example.com")  # fmt: skip
    assert aci.ssl_enabled


def test_cmk_and_vnet_come_in_sets():
    msg = refused(aci_deploy_configuration, cmk_vault_base_url="https://v.vault.azure.net", cmk_key_name="k")
    assert "vault_base_url, key_name and key_version must all have values or all be empty" in msg
    assert "cmk_key_version (keyVersion)" in msg
    assert "vnet_name (vnetName) and subnet_name (subnetName) must both have values" in refused(
        aci_deploy_configuration, vnet_name="vnet"
    )


# ---------------------------------------------------------------------------------------------- types


def test_validate_checks_types_of_dataclasses_built_directly():
    msg = refused(AksDeploymentConfig(cpu_cores="1", num_replicas=2.5, autoscale_enabled="yes").validate)
    assert "cpu_cores (containerResourceRequirements.cpu) must be a number, not '1'" in msg
    assert "num_replicas (numReplicas) must be a whole number, not 2.5" in msg
    assert "autoscale_enabled (autoScaler.autoscaleEnabled) must be true or false, not 'yes'" in msg
    secret = refused(LocalDeploymentConfig(auth_enabled=True, primary_key=12345678).validate)
    assert "primary_key (keys.primaryKey) must be a string, not a int" in secret and "12345678" not in secret
    assert "tags must be a mapping" in refused(AciDeploymentConfig(tags={"a": 1}).validate)


def test_direct_dataclasses_get_the_same_rules():
    assert "autoscale enabled and num_replicas provided" in refused(
        AksDeploymentConfig(autoscale_enabled=True, num_replicas=1).validate
    )
    config = AksDeploymentConfig(num_replicas=2)
    assert config.validate() is config
    assert dataclasses.replace(config, namespace="ok-ns").validate().namespace == "ok-ns"


# ---------------------------------------------------------------------------------------------- what is not honoured


def test_unsupported_settings_are_warned_not_dropped(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="cloud_targets.config"):
        aci = aci_deploy_configuration(enable_app_insights=True, collect_model_data=True,
                                       vnet_name="v", subnet_name="s", cmk_vault_base_url="u", cmk_key_name="k",
                                       cmk_key_version="1")  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == aci.unsupported_settings()
    warnings = dataclasses.replace(aci, gpu_cores=1).unsupported_settings()
    fields = [w.split(" ")[0] for w in warnings]
    assert fields == ["gpu_cores", "enable_app_insights", "collect_model_data"]  # the ACI target honours vnet and cmk
    assert all("is not honoured by the ACI target" in w for w in warnings)
    assert "Application Insights" in warnings[1]
    aks = aks_deploy_configuration(enable_app_insights=True, collect_model_data=True, gpu_cores=1)
    assert [w.split(" ")[0] for w in aks.unsupported_settings()] == ["enable_app_insights", "collect_model_data"]
    assert aci_deploy_configuration().unsupported_settings() == []
    assert aks_deploy_configuration().unsupported_settings() == []
    assert local_deploy_configuration().unsupported_settings() == []


def test_ssl_on_aci_is_said_not_honoured(tmp_path: Path):
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    aci = aci_deploy_configuration(ssl_enabled=True, ssl_cert_pem_file=str(tmp_path / "c.pem"),
                                   ssl_key_pem_file=str(tmp_path / "k.pem"), ssl_cname="a.example.com")  # fmt: skip
    [warning] = aci.unsupported_settings()
    assert warning.startswith("ssl_enabled (sslEnabled) is not honoured by the ACI target: the ACI target serves plain")


def test_keys_without_key_auth_are_warned():
    [warning] = aci_deploy_configuration(primary_key="p" * 20).unsupported_settings()
    assert "primary_key (keys.primaryKey)/secondary_key (keys.secondaryKey) are set but key auth is off" in warning
    assert "p" * 20 not in warning
    assert aci_deploy_configuration(auth_enabled=True, primary_key="p" * 20).unsupported_settings() == []


def test_aks_endpoint_keeps_its_version_settings():
    endpoint = aks_endpoint_deploy_configuration(version_name="v1", traffic_percentile=20, num_replicas=1)
    assert isinstance(endpoint, AksDeploymentConfig) and endpoint.compute_type == "AKSENDPOINT"
    assert (endpoint.version_name, endpoint.traffic_percentile) == ("v1", 20)
    assert endpoint.unsupported_settings() == []  # endpoints honour the version's settings (issue 16)
    flagged = aks_endpoint_deploy_configuration(version_name="blue", is_default=True, is_control_version_type=True)
    assert (flagged.is_default, flagged.is_control_version_type) == (True, True)
    assert DeploymentConfig.from_dict(flagged.to_dict()) == flagged
    assert flagged.to_dict()["isControlVersionType"] is True
    assert "version_name (versionName): version name 'Blue_1' is invalid" in refused(
        aks_endpoint_deploy_configuration, version_name="Blue_1"
    )
    assert "traffic_percentile (trafficPercentile) is a percentage: give 0 to 100, not 120" in refused(
        aks_endpoint_deploy_configuration, traffic_percentile=120
    )


# ---------------------------------------------------------------------------------------------- secrets and records


def test_keys_never_in_repr_or_to_dict_by_default():
    aks = aks_deploy_configuration(primary_key="primary-secret-1", secondary_key="secondary-secret-2")
    assert "secret" not in repr(aks) and "secret" not in str(aks)
    assert "keys" not in aks.to_dict()
    assert aks.to_dict(include_keys=True)["keys"] == {
        "primaryKey": "primary-secret-1",
        "secondaryKey": "secondary-secret-2",
    }


@pytest.mark.parametrize(
    "config",
    [
        LocalDeploymentConfig(port=32267, auth_enabled=True, primary_key="k1", secondary_key="k2", tags={"a": "b"}),
        LocalDeploymentConfig(),
        AciDeploymentConfig(cpu_cores=0.5, memory_gb=1.0, auth_enabled=True, location="westeurope",
                            dns_name_label="my-svc", description="d", properties={"p": "1"}),
        AksDeploymentConfig(num_replicas=3, token_auth_enabled=True, namespace="ml", cpu_cores_limit=2.0,
                            memory_gb_limit=4.0, gpu_cores=1, scoring_timeout_ms=5000, compute_target_name="aks1"),
        AksDeploymentConfig(autoscale_enabled=True, autoscale_min_replicas=2, autoscale_max_replicas=5,
                            autoscale_refresh_seconds=3, autoscale_target_utilization=60, period_seconds=5),
        AksEndpointDeploymentConfig(version_name="v2", traffic_percentile=10.0, num_replicas=1),
    ],
)  # fmt: skip
def test_round_trip_through_v1_keys(config: DeploymentConfig):
    doc = config.to_dict(include_keys=True)
    assert doc["computeType"] == config.compute_type
    again = DeploymentConfig.from_dict(doc)
    assert type(again) is type(config) and again == config
    assert type(config).from_dict(doc) == config
    if config.primary_key:  # without the keys, everything else survives
        assert dataclasses.replace(config, primary_key=None, secondary_key=None) == DeploymentConfig.from_dict(
            config.to_dict()
        )


def test_to_dict_uses_v1_key_names():
    doc = aks_deploy_configuration(num_replicas=2, cpu_cores_limit=1, gpu_cores=1).to_dict()
    assert doc["numReplicas"] == 2 and doc["gpuCores"] == 1 and "autoScaler" not in doc
    assert doc["containerResourceRequirements"] == {"cpu": 0.1, "memoryInGB": 0.5, "cpuLimit": 1}
    assert doc["livenessProbeRequirements"]["initialDelaySeconds"] == 310
    assert doc["maxConcurrentRequestsPerContainer"] == 1 and doc["maxQueueWaitMs"] == 500


def test_from_dict_refuses_another_compute_type():
    msg = refused(AksDeploymentConfig.from_dict, {"computeType": "ACI"})
    assert "computeType 'ACI' does not describe a AksDeploymentConfig; use computeType 'AKS'" in msg
