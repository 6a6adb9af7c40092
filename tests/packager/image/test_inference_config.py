"""Azure ML v1 inference configs: inferenceconfig.json, InferenceConfig(...), Environment, conda files → pip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from packager.errors import InvalidInputError
from packager.image.conda import conda_version_to_pip, resolve_requirements
from packager.image.environment import CondaDependencies, Environment
from packager.image.inference_config import InferenceConfig

CONDA_V1 = """\
name: project_environment
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.11
  - pip=23.3
  - numpy=1.26
  - conda-forge::scikit-learn==1.4.2
  - pip:
    - azureml-defaults>=1.38.0
    - inference-schema[numpy-support]==1.8
    - joblib
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A v1 project: src/score.py, src/util.py, env/conda.yml, steps.txt, and an inferenceconfig.json."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "score.py").write_text(
        "from inference_schema.schema_decorators import input_schema\ndef init():\n    pass\n"
        "def run(data):\n    return data\n"
    )
    (root / "src" / "util.py").write_text("X = 1\n")
    (root / "env").mkdir()
    (root / "env" / "conda.yml").write_text(CONDA_V1)
    (root / "steps.txt").write_text("RUN echo hi > /etc/edgepack-extra\n")
    return root


def write_config(root: Path, doc: dict, name: str = "inferenceconfig.json") -> Path:
    path = root / name
    path.write_text(json.dumps(doc))
    return path


def test_v1_sample_json_paths_relative_to_the_file(project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = write_config(
        project,
        {
            "entryScript": "score.py",
            "runtime": "python",
            "condaFile": "env/conda.yml",
            "extraDockerfileSteps": "steps.txt",
            "sourceDirectory": "src",
            "enableGpu": False,
            "description": "digits scorer",
            "baseImage": None,
            "baseImageRegistry": {"address": None, "username": None, "password": None},
        },
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: paths must not depend on the current folder
    cfg = InferenceConfig.load(path)
    assert cfg.source_directory == str(project / "src")
    assert cfg.entry_script == "score.py"  # relative to the source directory
    assert cfg.entry_script_file == project / "src" / "score.py"
    assert cfg.conda_file == str(project / "env" / "conda.yml")
    assert cfg.runtime == "python"
    assert cfg.description == "digits scorer"
    assert cfg.base_image_ref() is None and cfg.base_image_credentials() is None
    assert cfg.needs_docker_backend
    assert cfg.extra_steps_text == "RUN echo hi > /etc/edgepack-extra\n"


def test_entry_script_and_conda_file_inside_source_directory(project: Path):
    (project / "src" / "conda.yml").write_text("dependencies:\n  - pip:\n    - joblib\n")
    cfg = InferenceConfig.load(
        write_config(project, {"entryScript": "score.py", "sourceDirectory": "src", "condaFile": "conda.yml"})
    )
    assert cfg.conda_file == str(project / "src" / "conda.yml")
    assert resolve_requirements(cfg).pip == ["joblib"]


def test_yaml_inference_config(project: Path):
    path = project / "inferenceconfig.yml"
    path.write_text("entryScript: score.py\nruntime: python\nsourceDirectory: src\nenableGpu: False\nbaseImage:\n")
    cfg = InferenceConfig.load(path)
    assert cfg.entry_script == "score.py" and not cfg.needs_docker_backend


def test_unknown_keys_are_ignored_with_a_warning_as_v1_did(project: Path, caplog: pytest.LogCaptureFixture):
    # Azure's own samples still carry schemaFile and dependencies; v1 ignored them, and typos too
    doc = {
        "entryScript": "score.py",
        "sourceDirectory": "src",
        "schemaFile": "schema.json",
        "dependencies": ["util.py"],
        "entry_scipt": "x.py",
        "CondaFile": "env/conda.yml",
        "flavour": "x",
    }
    with caplog.at_level("WARNING", logger="packager.image.inference_config"):
        cfg = InferenceConfig.load(write_config(project, doc))
    assert cfg.entry_script == "score.py" and cfg.conda_file is None
    assert len(cfg.warnings) == 5 and [r.getMessage() for r in caplog.records] == cfg.warnings
    by_key = {w.split("'")[1]: w for w in cfg.warnings}
    assert (
        "Azure ML v1 ignored it too" in by_key["schemaFile"] and "inference-schema decorators" in by_key["schemaFile"]
    )
    assert "condaFile" in by_key["dependencies"]
    assert by_key["entry_scipt"].endswith("did you mean 'entryScript'?")
    assert by_key["CondaFile"].endswith("did you mean 'condaFile'?")
    assert "unknown key 'flavour' ignored" in by_key["flavour"] and "did you mean" not in by_key["flavour"]
    assert all(w.startswith(f"inference config {project}") for w in cfg.warnings)
    # a config without unknown keys has no warnings; one made in Python has none either
    assert (
        InferenceConfig.load(write_config(project, {"entryScript": "score.py", "sourceDirectory": "src"})).warnings
        == []
    )
    assert InferenceConfig().warnings == []


def test_missing_entry_script_and_bad_json(project: Path):
    with pytest.raises(
        InvalidInputError,
        match=r"entry script 'nope.py' not found: looked in .*project/src/nope.py \(inside sourceDirectory .*src\) "
        r"and .*project/nope.py",
    ):
        InferenceConfig.load(write_config(project, {"entryScript": "nope.py", "sourceDirectory": "src"}))
    bad = project / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        InferenceConfig.load(bad)
    with pytest.raises(InvalidInputError, match="does not exist"):
        InferenceConfig.load(project / "missing.json")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"enableGpu": True}, "CPU images only"),
        ({"enableGpu": "true"}, "CPU images only"),
        ({"cudaVersion": "10.0"}, "cudaVersion 10.0"),
        ({"runtime": "spark-py"}, "spark-py"),
        ({"runtime": "java"}, "only runtime is 'python'"),
        ({"enableGpu": "maybe"}, "true or false"),
        ({"baseImageRegistry": {"address": "r.io", "user": "x"}}, "unknown key"),
    ],
)
def test_refused_settings(project: Path, doc: dict, match: str):
    with pytest.raises(InvalidInputError, match=match):
        InferenceConfig.load(write_config(project, {"entryScript": "score.py", "sourceDirectory": "src", **doc}))


def test_python_constructor_like_v1(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(project)
    cfg = InferenceConfig(entry_script="score.py", source_directory="src", runtime="python", conda_file="env/conda.yml")
    assert cfg.entry_script == "score.py" and cfg.source_directory == str(project / "src")
    assert cfg.conda_file == str(project / "env" / "conda.yml")
    assert not cfg.needs_docker_backend
    # no arguments at all: ONNX auto-scoring, nothing to install
    empty = InferenceConfig()
    assert empty.entry_script is None and resolve_requirements(empty).pip == []
    with pytest.raises(InvalidInputError, match="not a folder"):
        InferenceConfig(entry_script="score.py", source_directory="nowhere")
    with pytest.raises(InvalidInputError, match="CPU images only"):
        InferenceConfig(entry_script="src/score.py", enable_gpu=True)


def test_base_image_and_registry(project: Path):
    cfg = InferenceConfig.load(
        write_config(
            project,
            {
                "entryScript": "score.py",
                "sourceDirectory": "src",
                "baseImage": "team/python:3.11-slim",
                "baseImageRegistry": {"address": "myreg.azurecr.io", "username": "u", "password": "p"},
            },
        )
    )
    assert cfg.base_image_ref() == "myreg.azurecr.io/team/python:3.11-slim"
    assert cfg.base_image_credentials() == ("u", "p")
    assert "p" not in json.dumps(cfg.serialize()["baseImageRegistry"])
    full = InferenceConfig(
        base_image="127.0.0.1:5000/library/python:3.11-slim", base_image_registry={"address": "x.io"}
    )
    assert full.base_image_ref() == "127.0.0.1:5000/library/python:3.11-slim"


def test_conda_pip_section_becomes_requirements(project: Path):
    cfg = InferenceConfig(entry_script=project / "src" / "score.py", conda_file=project / "env" / "conda.yml")
    req = resolve_requirements(cfg)
    # conda numpy/scikit-learn move to PyPI; azureml-defaults is dropped; pip itself is dropped
    assert req.pip == ["numpy==1.26.*", "scikit-learn==1.4.2", "inference-schema[numpy-support]==1.8", "joblib"]
    assert req.moved_from_conda == ["numpy==1.26.*", "scikit-learn==1.4.2"]
    assert req.dropped == ["pip=23.3", "azureml-defaults>=1.38.0"]
    assert req.channels_ignored == ["conda-forge"]
    assert req.python_version == "3.11"
    assert any("azureml-defaults" in n and "dropped" in n for n in req.notes)


def test_inference_schema_added_back_when_the_script_uses_it(project: Path):
    conda = project / "env" / "min.yml"
    conda.write_text("dependencies:\n  - python=3.11\n  - pip:\n    - azureml-defaults\n    - pandas>=2\n")
    req = resolve_requirements(InferenceConfig(entry_script=project / "src" / "score.py", conda_file=conda))
    assert req.pip == ["pandas>=2", "inference-schema"]
    (project / "src" / "plain.py").write_text("def init():\n    pass\ndef run(d):\n    return d\n")
    req = resolve_requirements(InferenceConfig(entry_script=project / "src" / "plain.py", conda_file=conda))
    assert req.pip == ["pandas>=2"]


def test_conda_only_packages_are_named(project: Path):
    conda = project / "env" / "bad.yml"
    conda.write_text(
        "dependencies:\n  - python=3.11\n  - numpy\n  - cudatoolkit=11.8\n  - libgcc-ng\n  - pip:\n    - joblib\n"
    )
    with pytest.raises(InvalidInputError) as err:
        resolve_requirements(InferenceConfig(conda_file=conda))
    msg = str(err.value)
    assert "cudatoolkit=11.8" in msg and "libgcc-ng" in msg and "pip:" in msg
    assert "numpy" not in msg.split("install:")[1].split(";")[0]


@pytest.mark.parametrize("python", ["python=3.8", "python==3.10.4", "python>=3.12", "python 3.9.*"])
def test_other_python_versions_are_refused(tmp_path: Path, python: str):
    conda = tmp_path / "c.yml"
    conda.write_text(f"dependencies:\n  - {python}\n")
    with pytest.raises(InvalidInputError, match=r"images run Python 3\.11"):
        resolve_requirements(InferenceConfig(conda_file=conda))


@pytest.mark.parametrize("python", ["python", "python=3.11", "python=3.11.7", "python>=3.8,<3.12", "python 3.11.*"])
def test_python_311_is_accepted(tmp_path: Path, python: str):
    conda = tmp_path / "c.yml"
    conda.write_text(f"dependencies:\n  - {python}\n  - pip:\n    - joblib\n")
    assert resolve_requirements(InferenceConfig(conda_file=conda)).pip == ["joblib"]


@pytest.mark.parametrize(
    ("conda", "pip"),
    [
        ("", ""),
        ("=1.26", "==1.26.*"),
        ("=1.26.4=py311h64a7726_0", "==1.26.4.*"),
        ("==1.26.4", "==1.26.4"),
        (">=1.2,<2", ">=1.2,<2"),
        ("1.26.*", "==1.26.*"),
        ("1.26 py311_0", "==1.26.*"),
    ],
)
def test_conda_versions_translate(conda: str, pip: str):
    assert conda_version_to_pip(conda, "x" + conda) == pip


def test_untranslatable_conda_version():
    with pytest.raises(InvalidInputError, match="pip: section"):
        conda_version_to_pip("=1.1|1.3", "numpy=1.1|1.3")


def test_pip_options_urls_and_included_files(tmp_path: Path):
    (tmp_path / "req.txt").write_text("# comment\nrequests>=2  # inline\n\norjson\n")
    conda = tmp_path / "c.yml"
    conda.write_text("dependencies:\n  - pip:\n    - -r req.txt\n    - joblib\n")
    assert resolve_requirements(InferenceConfig(conda_file=conda)).pip == ["requests>=2", "orjson", "joblib"]
    conda.write_text("dependencies:\n  - pip:\n    - --extra-index-url https://x.example/simple\n")
    with pytest.raises(InvalidInputError, match="pip option"):
        resolve_requirements(InferenceConfig(conda_file=conda))
    conda.write_text("dependencies:\n  - pip:\n    - git+https://github.com/x/y.git\n")
    with pytest.raises(InvalidInputError, match="binary wheels only"):
        resolve_requirements(InferenceConfig(conda_file=conda))
    conda.write_text("dependencies: [python=3.11\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        resolve_requirements(InferenceConfig(conda_file=conda))


def test_environment_objects(project: Path, tmp_path: Path):
    env = Environment.from_conda_specification("scoring", project / "env" / "conda.yml")
    env.python.conda_dependencies.add_pip_package("orjson")
    env.docker.base_image = "127.0.0.1:5000/library/python:3.11-slim"
    env.environment_variables = {"MODE": "fast"}
    env.inferencing_stack_version = "latest"  # accepted, ignored
    cfg = InferenceConfig(entry_script="score.py", source_directory=project / "src", environment=env)
    req = resolve_requirements(cfg)
    assert req.pip[-1] == "orjson" and "joblib" in req.pip
    assert cfg.base_image_ref() == "127.0.0.1:5000/library/python:3.11-slim"
    assert cfg.environment_variables == {"MODE": "fast"}

    (tmp_path / "requirements.txt").write_text("joblib==1.4.2\npandas\n")
    env2 = Environment.from_pip_requirements("pipenv", tmp_path / "requirements.txt")
    assert resolve_requirements(InferenceConfig(environment=env2)).pip == ["joblib==1.4.2", "pandas"]

    env3 = Environment("managed")
    env3.python.user_managed_dependencies = True
    assert resolve_requirements(InferenceConfig(environment=env3)).pip == []

    with pytest.raises(InvalidInputError, match="either environment or conda_file"):
        InferenceConfig(conda_file=project / "env" / "conda.yml", environment=env)
    env4 = Environment("df")
    env4.docker.base_dockerfile = "FROM ubuntu"
    with pytest.raises(InvalidInputError, match="base_dockerfile"):
        InferenceConfig(environment=env4)

    cd = CondaDependencies.create(pip_packages=["joblib"], conda_packages=["numpy"], python_version="3.11")
    assert cd.conda_packages == ["python=3.11", "numpy"] and cd.pip_packages == ["joblib"]
    assert "joblib" in cd.serialize_to_string()


def test_environment_in_json(project: Path):
    doc = {
        "entryScript": "score.py",
        "sourceDirectory": "src",
        "environment": {
            "name": "my-deploy-env",
            "version": "1",
            "docker": {"baseImage": "127.0.0.1:5000/library/python:3.11-slim", "enabled": False},
            "environmentVariables": {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"},
            "python": {
                "condaDependencies": {
                    "channels": ["conda-forge"],
                    "dependencies": ["python=3.11", {"pip": ["azureml-defaults", "joblib"]}],
                },
                "userManagedDependencies": False,
                "interpreterPath": "python",
            },
            "inferencingStackVersion": None,
            "spark": {"repositories": [], "packages": []},
        },
    }
    cfg = InferenceConfig.load(write_config(project, doc))
    assert cfg.environment is not None and cfg.environment.name == "my-deploy-env"
    assert cfg.environment_variables == {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}
    # score.py imports inference_schema and azureml-defaults was dropped: inference-schema comes back
    assert resolve_requirements(cfg).pip == ["joblib", "inference-schema"]
    doc["environment"]["dockr"] = {}
    with pytest.raises(InvalidInputError, match="dockr"):
        InferenceConfig.load(write_config(project, doc))


def test_environment_to_dict_round_trips_without_the_registry_password(tmp_path: Path) -> None:
    """What a service keeps for update/reload: the packages, base image and variables; never the password."""
    conda = tmp_path / "myenv.yml"
    conda.write_text("name: e\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn==1.5.0\n    - joblib\n")
    env = Environment("LocalDeploy")
    env.python.conda_dependencies = CondaDependencies(conda)
    env.docker.base_image = "myregistry.io/base:1"
    env.docker.base_image_registry.username, env.docker.base_image_registry.password = "me", "s3cret-pw"
    env.environment_variables = {"MODE": "fast"}

    doc = env.to_dict()
    assert "s3cret-pw" not in json.dumps(doc)
    conda.unlink()  # the content is inlined: the definition stands alone
    again = Environment.from_dict(json.loads(json.dumps(doc)), tmp_path)
    assert again.python.conda_dependencies.pip_packages == ["scikit-learn==1.5.0", "joblib"]
    assert again.docker.base_image == "myregistry.io/base:1" and again.docker.base_image_registry.username == "me"
    assert again.environment_variables == {"MODE": "fast"}
    assert InferenceConfig(environment=again).base_image_ref() == "myregistry.io/base:1"
