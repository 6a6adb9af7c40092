"""v2 endpoint and deployment YAML, as the Azure ML v2 docs and azureml-examples write them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloud_targets.config.model import AksEndpointDeploymentConfig, LocalDeploymentConfig
from cloud_targets.endpoints import v2_mapping
from cloud_targets.endpoints.v2 import V2SpecError, load_deployment, load_endpoint, parse_traffic

# cli/endpoints/online/managed/sample/endpoint.yml
ENDPOINT_YML = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json
name: my-endpoint
auth_mode: key
"""
# cli/endpoints/online/managed/sample/blue-deployment.yml (paths one level up here)
BLUE_YML = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: blue
endpoint_name: my-endpoint
model:
  path: ../model-1/model/
code_configuration:
  code: ../model-1/onlinescoring/
  scoring_script: score.py
environment:
  conda_file: ../model-1/environment/conda.yml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
instance_type: Standard_DS3_v2
instance_count: 1
"""
# the older schema: code.local_path, conda_file: file:..., docker.image
OLD_GREEN_YML = """\
$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: green
endpoint_name: my-endpoint
model:
  name: model-2
  version: 1
  local_path: ../model-1/model/sklearn_regression_model.pkl
code_configuration:
  code:
    local_path: ../model-1/onlinescoring/
  scoring_script: score.py
environment:
  conda_file: file:../model-1/environment/conda.yml
  docker:
    image: mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04:20210727.v1
instance_type: Standard_F2s_v2
instance_count: 2
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The azureml-examples layout: model-1/{model,onlinescoring,environment} beside sample/."""
    root = tmp_path / "online"
    (root / "model-1" / "model").mkdir(parents=True)
    (root / "model-1" / "model" / "sklearn_regression_model.pkl").write_bytes(b"pickle")
    (root / "model-1" / "onlinescoring").mkdir()
    (root / "model-1" / "onlinescoring" / "score.py").write_text(
        "def init():\n    pass\n\n\ndef run(raw):\n    return raw\n"
    )
    (root / "model-1" / "environment").mkdir()
    (root / "model-1" / "environment" / "conda.yml").write_text(
        "name: model-env\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip:\n    - numpy\n"
    )
    (root / "sample").mkdir()
    (root / "sample" / "endpoint.yml").write_text(ENDPOINT_YML)
    (root / "sample" / "blue-deployment.yml").write_text(BLUE_YML)
    (root / "sample" / "green-old.yml").write_text(OLD_GREEN_YML)
    return root


def write(tree: Path, text: str, name: str = "x.yml") -> Path:
    path = tree / "sample" / name
    path.write_text(textwrap.dedent(text))
    return path


def test_docs_endpoint_yml(tree: Path) -> None:
    ep = load_endpoint(tree / "sample" / "endpoint.yml")
    assert (ep.name, ep.auth_mode, ep.traffic, ep.warnings) == ("my-endpoint", "key", None, [])
    token = write(tree, "name: my-endpoint\nauth_mode: aml_token\ntraffic:\n  blue: 90\n  green: 10\n")
    ep = load_endpoint(token)
    assert ep.auth_mode == "token" and ep.traffic == {"blue": 90, "green": 10}


def test_docs_blue_deployment(tree: Path) -> None:
    dep = load_deployment(tree / "sample" / "blue-deployment.yml")
    assert dep.warnings == []
    assert (dep.name, dep.endpoint_name, dep.instance_type, dep.instance_count) == (
        "blue",
        "my-endpoint",
        "Standard_DS3_v2",
        1,
    )
    assert dep.model is not None and dep.model.path == tree / "model-1" / "model"
    assert dep.code == tree / "model-1" / "onlinescoring" and dep.scoring_script == "score.py"
    assert dep.conda_file == tree / "model-1" / "environment" / "conda.yml"
    assert dep.image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"


def test_older_schema_spellings(tree: Path) -> None:
    dep = load_deployment(tree / "sample" / "green-old.yml")
    assert dep.model is not None and dep.model.name == "model-2"
    assert dep.model.path == tree / "model-1" / "model" / "sklearn_regression_model.pkl"
    assert dep.code == tree / "model-1" / "onlinescoring"
    assert dep.conda_file == tree / "model-1" / "environment" / "conda.yml"
    assert dep.image and dep.image.startswith("mcr.microsoft.com/azureml/openmpi3.1.2")
    assert any("local_path is the older spelling" in w for w in dep.warnings)
    assert any("model.version is not used" in w for w in dep.warnings)


def test_registered_assets(tree: Path) -> None:
    path = write(
        tree,
        """\
        name: blue
        endpoint_name: my-endpoint
        model: azureml:my-model:3
        code_configuration:
          code: ../model-1/onlinescoring/
          scoring_script: score.py
        environment: azureml:my-env:1
        instance_type: Standard_DS3_v2
        instance_count: 1
    """,
    )
    dep = load_deployment(path)
    assert dep.model is not None and (dep.model.name, dep.model.version, dep.model.path) == ("my-model", 3, None)
    assert dep.environment_ref == "azureml:my-env:1"
    ic, warnings = v2_mapping.inference_config(dep, local=True)
    assert ic.entry_script == "score.py" and any("workspace asset" in w for w in warnings)


def test_unknown_keys_warn_with_did_you_mean(tree: Path) -> None:
    text = BLUE_YML.replace("instance_count: 1", "instance_cont: 1").replace(
        "scoring_script", "scoring_scrip: x\n  scoring_script"
    )
    path = write(tree, text + "app_insights_enabled: true\n")
    dep = load_deployment(path)
    assert any("unknown key 'instance_cont'" in w and "did you mean 'instance_count'" in w for w in dep.warnings)
    assert any(
        "'code_configuration.scoring_scrip'" in w and "'code_configuration.scoring_script'" in w for w in dep.warnings
    )
    assert any("app_insights_enabled is not used" in w for w in dep.warnings)
    assert all(str(path) in w for w in dep.warnings)
    ep = load_endpoint(write(tree, "name: my-endpoint\nauth_mod: key\n", "e.yml"))
    assert any("did you mean 'auth_mode'" in w for w in ep.warnings)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("name: blue\n", ""), "name is required"),
        (lambda t: t.replace("endpoint_name: my-endpoint\n", ""), "endpoint_name is required"),
        (lambda t: t.replace("  scoring_script: score.py\n", ""), "code_configuration.scoring_script is required"),
        (lambda t: t.replace("score.py", "missing.py"), "missing.py is not in"),
        (lambda t: t.replace("../model-1/model/", "../nowhere/"), "model.path ../nowhere/ does not exist"),
        (lambda t: t.replace("instance_count: 1", "instance_count: two"), "instance_count must be a whole number"),
        (lambda t: t.replace("instance_count: 1", "instance_count: 0"), "instance_count must be at least 1"),
        (lambda t: t.replace("name: blue", "name: Blue_1"), "deployment name 'Blue_1' is invalid"),
        (lambda t: t.replace("conda.yml", "nope.yml"), "environment.conda_file"),
        (lambda t: "- just\n- a list\n", "must be a YAML mapping"),
        (lambda t: "name: [unclosed\n", "is not valid YAML"),
        (lambda t: "", "is empty"),
    ],
)
def test_bad_deployment_files_are_refused(tree: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tree, edit(BLUE_YML))
    with pytest.raises(V2SpecError) as exc:
        load_deployment(path)
    assert message in str(exc.value) and str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auth_mode: key\n", "name is required"),
        ("name: ep-1\nauth_mode: aad_token\n", "aad_token"),
        ("name: ep-1\nauth_mode: password\n", "not one of key, aml_token"),
        ("name: ep-1\ntraffic:\n  blue: 90\n  green: 5\n", "adds up to 95"),
        ("name: x\n", "endpoint name 'x' is invalid"),
    ],
)
def test_bad_endpoint_files_are_refused(tree: Path, text: str, message: str) -> None:
    with pytest.raises(V2SpecError, match=message):
        load_endpoint(write(tree, text, "e.yml"))


def test_missing_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(V2SpecError, match="does not exist; pass the path of the YAML file with -f"):
        load_deployment(tmp_path / "nope.yml")


def test_traffic_strings() -> None:
    assert parse_traffic("blue=90 green=10") == {"blue": 90, "green": 10}
    assert parse_traffic("blue=100") == {"blue": 100}
    assert parse_traffic("blue=0 green=0") == {"blue": 0, "green": 0}
    for bad, message in [
        ("blue=90 green=20", "adds up to 110"),
        ("blue", "NAME=PERCENT"),
        ("blue=ninety", "whole percent"),
        ("blue=50 blue=50", "given twice"),
        ("", "no deployment"),
    ]:
        with pytest.raises(V2SpecError, match=message):
            parse_traffic(bad)


def test_set_overrides(tree: Path) -> None:
    dep = load_deployment(
        tree / "sample" / "blue-deployment.yml",
        ["instance_count=3", "request_settings.request_timeout_ms=9000", "name=teal"],
    )
    assert (dep.instance_count, dep.name, dep.request_settings) == (3, "teal", {"request_timeout_ms": 9000})
    with pytest.raises(V2SpecError, match="KEY=VALUE"):
        load_deployment(tree / "sample" / "blue-deployment.yml", ["instance_count"])


def test_mapping_local_and_kubernetes(tree: Path) -> None:
    dep = load_deployment(
        tree / "sample" / "blue-deployment.yml",
        ["instance_count=3", "request_settings.request_timeout_ms=9000", "liveness_probe.period=5"],
    )
    ic, warnings = v2_mapping.inference_config(dep, local=True)
    assert ic.entry_script == "score.py" and Path(ic.source_directory or "") == tree / "model-1" / "onlinescoring"
    assert ic.environment is not None and ic.environment.docker.base_image is None
    assert any("not pulled" in w for w in warnings)
    ic_k8s, warnings = v2_mapping.inference_config(dep, local=False)
    assert ic_k8s.base_image_ref() == dep.image and warnings == []
    local, warnings = v2_mapping.deployment_config(dep, "LOCAL")
    assert isinstance(local, LocalDeploymentConfig) and local.scoring_timeout_ms == 9000
    assert any("instance_count 3" in w for w in warnings) and any("instance_type" in w for w in warnings)
    aks, warnings = v2_mapping.deployment_config(dep, "AKSENDPOINT")
    assert isinstance(aks, AksEndpointDeploymentConfig) and warnings == []
    assert (aks.num_replicas, aks.autoscale_enabled, aks.cpu_cores_limit, aks.memory_gb_limit) == (3, False, 4, 14)
    assert (aks.version_name, aks.period_seconds, aks.scoring_timeout_ms) == ("blue", 5, 9000)
    odd, warnings = v2_mapping.deployment_config(
        load_deployment(tree / "sample" / "blue-deployment.yml", ["instance_type=Standard_NC6"]), "AKSENDPOINT"
    )
    assert odd.cpu_cores_limit is None and any("Standard_NC6 is not a size edgepack knows" in w for w in warnings)


def test_model_path_is_registered_with_its_folder(tree: Path, tmp_path: Path) -> None:
    from packager.workspace import Workspace

    ws = Workspace.from_path(tmp_path / "ws", create=True)
    dep = load_deployment(tree / "sample" / "blue-deployment.yml")
    model = v2_mapping.resolve_model(ws, dep)
    assert (model.name, model.version, model.root) == ("my-endpoint-blue-model", 1, "model")
    again = v2_mapping.resolve_model(ws, load_deployment(tree / "sample" / "blue-deployment.yml", ["model.name=m"]))
    assert (again.name, again.version) == ("m", 1)
