"""v1's deploymentconfig.json / YAML as the v1 CLI read it: Azure's samples, real-world shapes, unknown keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cloud_targets.config import (
    AciDeploymentConfig,
    AksDeploymentConfig,
    AksEndpointDeploymentConfig,
    AutoscaleSettings,
    DeploymentConfigError,
    LocalDeploymentConfig,
    deployment_config_from_dict,
    load_deployment_config,
)

# The samples in Azure ML's "Deploy models" docs (how-to-deploy-and-where, v1 CLI).
ACI_SAMPLE = {
    "computeType": "ACI",
    "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.0},
    "authEnabled": True,
    "sslEnabled": False,
    "appInsightsEnabled": False,
}
AKS_SAMPLE = {
    "computeType": "aks",
    "autoScaler": {
        "autoscaleEnabled": True,
        "minReplicas": 1,
        "maxReplicas": 3,
        "refreshPeriodInSeconds": 1,
        "targetUtilization": 70,
    },
    "dataCollection": {"storageEnabled": True},
    "authEnabled": True,
    "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.0},
}
LOCAL_SAMPLE = {"computeType": "local", "port": 32267}

# The shape real users' AKS files have (YAML, every section v1 documented).
AKS_REAL_WORLD_YAML = """\
computeType: AKS
autoScaler:
  autoscaleEnabled: true
  minReplicas: 2
  maxReplicas: 8
  refreshPeriodInSeconds: 10
  targetUtilization: 60
authEnabled: true
containerResourceRequirements:
  cpu: 1
  memoryInGB: 2.5
  cpuLimit: 2
  memoryInGBLimit: 4
gpuCores: 0
scoringTimeoutMs: 30000
maxConcurrentRequestsPerContainer: 4
maxQueueWaitMs: 2000
keys:
  primaryKey: pk-0123456789abcdef
  secondaryKey: sk-0123456789abcdef
livenessProbeRequirements:
  periodSeconds: 15
  initialDelaySeconds: 30
  timeoutSeconds: 5
  successThreshold: 1
  failureThreshold: 4
namespace: ml-prod
computeTargetName: myaks
tags:
  team: vision
  tier: 1
description: fraud model
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(doc) -> str:
    with pytest.raises(DeploymentConfigError) as err:
        deployment_config_from_dict(doc)
    return str(err.value)


# ---------------------------------------------------------------------------------------------- Azure's samples


def test_azure_docs_aci_sample(tmp_path: Path):
    config, warnings = load_deployment_config(write(tmp_path, "deploymentconfig.json", json.dumps(ACI_SAMPLE)))
    assert isinstance(config, AciDeploymentConfig)
    assert (config.cpu_cores, config.memory_gb, config.auth_enabled, config.ssl_enabled) == (0.5, 1.0, True, False)
    assert not config.enable_app_insights and warnings == []


def test_azure_docs_aks_sample(tmp_path: Path):
    config, warnings = load_deployment_config(write(tmp_path, "deploymentconfig.json", json.dumps(AKS_SAMPLE)))
    assert isinstance(config, AksDeploymentConfig) and type(config) is AksDeploymentConfig
    assert config.autoscale_settings() == AutoscaleSettings(1, 3, 1, 70) and config.num_replicas is None
    assert config.auth_enabled and not config.token_auth_enabled and (config.cpu_cores, config.memory_gb) == (0.5, 1.0)
    assert config.collect_model_data
    # data collection is the one setting of the sample edgepack cannot honour: said, not dropped
    [warning] = warnings
    assert warning.startswith(f"deployment config {tmp_path / 'deploymentconfig.json'}: collect_model_data")
    assert "is not honoured by the AKS target" in warning


def test_azure_docs_local_sample(tmp_path: Path):
    config, warnings = load_deployment_config(write(tmp_path, "deploymentconfig.json", json.dumps(LOCAL_SAMPLE)))
    assert isinstance(config, LocalDeploymentConfig) and config.port == 32267 and warnings == []


def test_real_world_aks_yaml_carries_every_setting(tmp_path: Path):
    config, warnings = load_deployment_config(write(tmp_path, "deploymentconfig.yml", AKS_REAL_WORLD_YAML))
    assert isinstance(config, AksDeploymentConfig) and warnings == []
    assert config.autoscale_on and config.autoscale_settings() == AutoscaleSettings(2, 8, 10, 60)
    assert (config.cpu_cores, config.memory_gb, config.cpu_cores_limit, config.memory_gb_limit) == (1.0, 2.5, 2.0, 4.0)
    assert isinstance(config.cpu_cores, float) and config.gpu_cores == 0
    assert (config.scoring_timeout_ms, config.replica_max_concurrent_requests, config.max_request_wait_time) == (
        30000,
        4,
        2000,
    )
    assert (config.primary_key, config.secondary_key) == ("pk-0123456789abcdef", "sk-0123456789abcdef")
    probe = (config.period_seconds, config.initial_delay_seconds, config.timeout_seconds)
    assert probe == (15, 30, 5) and (config.success_threshold, config.failure_threshold) == (1, 4)
    assert config.namespace == "ml-prod" and config.compute_target_name == "myaks"
    assert config.tags == {"team": "vision", "tier": "1"} and config.description == "fraud model"
    # the same document as JSON gives the same configuration, and its v1 keys give it back
    import yaml

    doc = yaml.safe_load(AKS_REAL_WORLD_YAML)
    from_json, _ = load_deployment_config(write(tmp_path, "deploymentconfig.json", json.dumps(doc)))
    assert from_json == config
    assert deployment_config_from_dict(config.to_dict(include_keys=True))[0] == config


def test_yaml_first_then_json_as_v1(tmp_path: Path):
    # JSON indented with tabs is not YAML: v1 fell back to JSON, and so does edgepack
    text = '{\n\t"computeType": "ACI",\n\t"containerResourceRequirements": {"cpu": 1, "memoryInGB": 2}\n}'
    config, _ = load_deployment_config(write(tmp_path, "dc.json", text))
    assert isinstance(config, AciDeploymentConfig) and config.memory_gb == 2.0
    # YAML in a .json file is read too (v1 did not look at the extension)
    config, _ = load_deployment_config(write(tmp_path, "yaml.json", "computeType: local\nport: 8890\n"))
    assert isinstance(config, LocalDeploymentConfig) and config.port == 8890
    # JSON numbers YAML 1.1 reads as strings (an exponent without a dot) are numbers
    text = '{"computeType": "ACI", "containerResourceRequirements": {"cpu": 5e-1, "memoryInGB": 2E0}}'
    config, _ = load_deployment_config(write(tmp_path, "exp.json", text))
    assert (config.cpu_cores, config.memory_gb) == (0.5, 2.0)


@pytest.mark.parametrize(
    "text",
    [
        '{"computeType": "ACI", "containerResourceRequirements": {"cpu": NaN}}',
        '{"computeType": "ACI", "containerResourceRequirements": {"cpu": Infinity}}',
        '{"computeType": "ACI", "containerResourceRequirements": {"cpu": 1e400}}',
        "computeType: ACI\ncontainerResourceRequirements: {cpu: .nan}\n",
        "computeType: AKS\nautoScaler: {autoscaleEnabled: true, targetUtilization: .inf}\n",
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, text: str):
    with pytest.raises(DeploymentConfigError, match=r"(cpu|targetUtilization) must be a finite number|holds (NaN|In)"):
        load_deployment_config(write(tmp_path, "dc.json", text))


@pytest.mark.parametrize("spelling", ["LOCAL", "local", "Local", " local "])
def test_compute_type_any_case(spelling: str):
    assert isinstance(deployment_config_from_dict({"computeType": spelling})[0], LocalDeploymentConfig)


def test_aks_endpoint_maps_to_aks_and_keeps_its_keys():
    config, warnings = deployment_config_from_dict(
        {"computeType": "AksEndpoint", "numReplicas": 2, "versionName": "blue", "trafficPercentile": 30,
         "isDefault": True, "isControlVersionType": False}
    )  # fmt: skip
    assert isinstance(config, AksEndpointDeploymentConfig) and isinstance(config, AksDeploymentConfig)
    assert (config.version_name, config.traffic_percentile, config.num_replicas) == ("blue", 30.0, 2)
    assert (config.is_default, config.is_control_version_type) == (True, False)
    assert warnings == []  # versions and splits are honoured (cloud_targets.endpoints)


# ---------------------------------------------------------------------------------------------- unknown keys


def test_unknown_keys_are_ignored_with_a_warning_naming_them(caplog: pytest.LogCaptureFixture):
    doc = {
        **AKS_SAMPLE,
        "autoscaler": {"minReplicas": 4},  # wrong case: v1 ignored it
        "containerResourceRequirements": {"cpu": 0.5, "memoryInGb": 2},  # near miss inside a section
        "maxConcurrentRequestPerContainer": 2,  # near miss
        "cpu_cores": 1,  # a Python parameter name used as a key
        "schemaVersion": 3,  # nothing like it
        "sslEnabled": True,  # an ACI key in an AKS file
        "port": 8080,  # a LOCAL key
    }
    with caplog.at_level(logging.WARNING, logger="cloud_targets.config"):
        config, warnings = deployment_config_from_dict(doc, where="dc.json")
    assert [r.getMessage() for r in caplog.records] == warnings
    assert config.memory_gb == 0.5 and config.replica_max_concurrent_requests == 1  # defaults: the typos were ignored
    assert config.autoscale_settings() == AutoscaleSettings(1, 3, 1, 70)  # 'autoscaler' did not override it
    text = "\n".join(warnings)
    assert "dc.json: unknown key 'autoscaler' ignored (Azure ML v1 ignored it too); did you mean 'autoScaler'?" in text
    assert (
        "unknown key 'containerResourceRequirements.memoryInGb' ignored (Azure ML v1 ignored it too); "
        "did you mean 'containerResourceRequirements.memoryInGB'?" in text
    )
    assert (
        "'maxConcurrentRequestPerContainer' ignored (Azure ML v1 ignored it too); "
        "did you mean 'maxConcurrentRequestsPerContainer'?" in text
    )
    assert (
        "unknown key 'cpu_cores' ignored (Azure ML v1 ignored it too); "
        "did you mean 'containerResourceRequirements.cpu'?" in text
    )
    assert "unknown key 'schemaVersion' ignored (Azure ML v1 ignored it too)\n" in text + "\n"
    assert "dc.json: sslEnabled is not a setting of computeType AKS (Azure ML v1 ignored it there too); ignored" in text
    assert "port is not a setting of computeType AKS" in text


def test_aci_and_aks_keys_in_a_local_file_are_said_ignored():
    doc = {"computeType": "LOCAL", "port": 9000, "sslEnabled": True, "dnsNameLabel": "x", "autoScaler": {"x": 1},
           "containerResourceRequirements": {"cpu": 2}, "authEnabled": True,
           "keys": {"primaryKey": "k" * 16}}  # fmt: skip
    config, warnings = deployment_config_from_dict(doc)
    assert isinstance(config, LocalDeploymentConfig) and config.port == 9000 and config.auth_enabled
    assert config.primary_key == "k" * 16
    ignored = sorted(w.split(": ", 1)[1].split(" ")[0] for w in warnings)
    assert ignored == ["autoScaler", "containerResourceRequirements", "dnsNameLabel", "sslEnabled"]
    assert all("is not a setting of computeType LOCAL" in w for w in warnings)


def test_unhonoured_aci_settings_from_a_file_are_warned():
    doc = {**ACI_SAMPLE, "appInsightsEnabled": True, "vnetName": "v", "subnetName": "s", "gpuCores": 1}
    _, warnings = deployment_config_from_dict(doc)
    assert [w.split(": ", 1)[1].split(" ")[0] for w in warnings] == ["gpu_cores", "enable_app_insights"]


# ---------------------------------------------------------------------------------------------- v1's rules from files


def test_missing_compute_type():
    msg = refused({"authEnabled": True})
    assert msg.startswith("deployment config: computeType is required (Azure ML v1: 'Need to specify computeType')")
    assert '"computeType": one of LOCAL, ACI, AKS, AKSENDPOINT' in msg
    assert "unknown computeType 'batch': use one of LOCAL, ACI, AKS, AKSENDPOINT (any case)" in refused(
        {"computeType": "batch"}
    )
    assert "unknown computeType 3" in refused({"computeType": 3})


def test_both_auth_kinds_in_a_file():
    msg = refused({"computeType": "AKS", "authEnabled": True, "tokenAuthEnabled": True})
    assert "authEnabled) and token_auth_enabled (tokenAuthEnabled) cannot both be true" in msg
    # tokenAuthEnabled alone turns key auth off
    config, _ = deployment_config_from_dict({"computeType": "AKS", "tokenAuthEnabled": True})
    assert config.token_auth_enabled and not config.auth_enabled
    assert "only available on AKS" in refused({"computeType": "ACI", "tokenAuthEnabled": True})
    assert "only available on AKS" in refused({"computeType": "LOCAL", "tokenAuthEnabled": True})


def test_autoscale_rules_from_a_file():
    msg = refused({"computeType": "AKS", "autoScaler": {"minReplicas": 2, "maxReplicas": 4}})
    assert "autoscale_min_replicas (autoScaler.minReplicas) provided without enabling autoscaling" in msg
    assert "autoscale_max_replicas (autoScaler.maxReplicas) provided without enabling autoscaling" in msg
    assert "autoscale enabled and num_replicas provided" in refused(
        {"computeType": "AKS", "autoScaler": {"autoscaleEnabled": True}, "numReplicas": 3}
    )
    assert "autoscale disabled but num_replicas not provided" in refused(
        {"computeType": "AKS", "autoScaler": {"autoscaleEnabled": False}}
    )
    assert "cannot be greater than" in refused(
        {"computeType": "AKS", "autoScaler": {"autoscaleEnabled": True, "minReplicas": 5, "maxReplicas": 2}}
    )


def test_ssl_files_are_found_beside_the_config(tmp_path: Path):
    (tmp_path / "cert.pem").write_text("c")
    (tmp_path / "key.pem").write_text("k")
    doc = {"computeType": "ACI", "sslEnabled": True, "sslCertificate": "cert.pem", "sslKey": "key.pem", "cname": "a.b"}
    config, _ = load_deployment_config(write(tmp_path, "dc.json", json.dumps(doc)))
    assert config.ssl_cert_pem_file == str(tmp_path / "cert.pem") and config.ssl_key_pem_file == str(
        tmp_path / "key.pem"
    )
    msg = refused({**doc, "sslCertificate": "nowhere.pem"})
    assert "unable to find the SSL cert pem file nowhere.pem" in msg


# ---------------------------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"computeType": "AKS", "numReplicas": "3"}, "numReplicas must be a whole number, not '3'"),
        ({"computeType": "AKS", "numReplicas": 2.5}, "numReplicas must be a whole number, not 2.5"),
        ({"computeType": "AKS", "authEnabled": "yes"}, "authEnabled must be true or false, not 'yes'"),
        ({"computeType": "AKS", "authEnabled": 1}, "authEnabled must be true or false, not 1"),
        ({"computeType": "ACI", "containerResourceRequirements": {"cpu": "0.5"}},
         "containerResourceRequirements.cpu must be a number, not '0.5'"),
        ({"computeType": "ACI", "containerResourceRequirements": 2},
         "containerResourceRequirements must be a mapping with keys like cpu, cpuLimit, gpu, memoryInGB"),
        ({"computeType": "AKS", "autoScaler": [1]}, "autoScaler must be a mapping with keys like autoscaleEnabled"),
        ({"computeType": "AKS", "namespace": 5}, "namespace must be a string, not 5"),
        ({"computeType": "AKS", "tags": ["a"]}, "tags must be a mapping of names to strings"),
        ({"computeType": "AKS", "tags": {"a": {"b": 1}}}, "tags must map names to plain values; a do not"),
        ({"computeType": "LOCAL", "port": "8080"}, "port must be a whole number, not '8080'"),
        ({"computeType": "AKS", "gpuCores": 1, "containerResourceRequirements": {"gpu": 2}},
         "gpuCores and containerResourceRequirements.gpu both set gpu_cores to different values"),
    ],
)  # fmt: skip
def test_wrong_types_name_the_key(doc: dict, message: str):
    assert message in refused(doc)


def test_secret_values_are_never_echoed():
    msg = refused({"computeType": "AKS", "keys": {"primaryKey": 1234567890123}})
    assert "keys.primaryKey must be a string, not a int" in msg and "1234567890123" not in msg


def test_lenient_values_v1_files_carry():
    config, _ = deployment_config_from_dict(
        {"computeType": "AKS", "authEnabled": "false", "numReplicas": 2.0, "scoringTimeoutMs": None, "keys": None}
    )
    assert config.auth_enabled is False and config.num_replicas == 2 and isinstance(config.num_replicas, int)
    assert config.scoring_timeout_ms == 60000  # null is v1's "not given"


# ---------------------------------------------------------------------------------------------- bad files


def test_bad_files(tmp_path: Path):
    with pytest.raises(DeploymentConfigError, match=r"deployment config .*missing.json does not exist; pass the path"):
        load_deployment_config(tmp_path / "missing.json")
    with pytest.raises(DeploymentConfigError, match=r"is neither valid YAML nor valid JSON .*; fix the syntax"):
        load_deployment_config(write(tmp_path, "bad.json", '{"computeType": "AKS",\n\t"x": [}'))
    with pytest.raises(DeploymentConfigError, match=r"must be a mapping \(a JSON object\) .*not list"):
        load_deployment_config(write(tmp_path, "list.json", '["AKS"]'))
    with pytest.raises(DeploymentConfigError, match=r"must be a mapping .*not str"):
        load_deployment_config(write(tmp_path, "text.txt", "just some words"))
    with pytest.raises(DeploymentConfigError, match="is empty; it needs at least computeType"):
        load_deployment_config(write(tmp_path, "empty.yml", ""))
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DeploymentConfigError, match="cannot read deployment config"):
        load_deployment_config(tmp_path / "binary.json")
    with pytest.raises(DeploymentConfigError, match="does not exist"):
        load_deployment_config(tmp_path)  # a folder


@pytest.mark.parametrize("key", ["properties", "description", "namespace", "computeType", "tags"])
def test_yaml_alias_bombs_are_not_expanded_into_messages(tmp_path: Path, key: str):
    """safe_load shares aliased nodes (millions of items, little memory); an error message must not expand
    them (a repr of the value would take minutes and gigabytes)."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 8)]
    lines += [] if key == "computeType" else ["computeType: AKS"]
    lines += [f"{key}: {{x: *l7}}" if key == "tags" else f"{key}: *l7"]
    with pytest.raises(DeploymentConfigError) as info:
        load_deployment_config(write(tmp_path, "bomb.yml", "\n".join(lines) + "\n"))
    assert len(str(info.value)) < 400 and key.split(".")[0] in str(info.value)


@pytest.mark.parametrize("name", ["big.json", "big.yml"])
def test_numbers_too_long_to_read(tmp_path: Path, name: str):
    digits = "9" * 5000
    text = (
        f'{{"computeType": "LOCAL", "port": {digits}}}'
        if name.endswith("json")
        else f"computeType: LOCAL\nport: {digits}\n"
    )
    with pytest.raises(DeploymentConfigError, match="holds a number too long to read"):
        load_deployment_config(write(tmp_path, name, text))
