"""Azure ML v1 inference configs: ``InferenceConfig(...)``, ``inferenceconfig.json`` and ``Environment``.

:class:`InferenceConfig` takes v1's constructor arguments and validates them as v1 did when the
object is made. :meth:`InferenceConfig.load` reads the v1 CLI's ``inferenceconfig.json`` (or YAML)
with paths relative to the file's folder; the entry script is looked up in ``sourceDirectory``
first. :func:`resolve_requirements` turns the conda file (or environment) into pip requirements for
the image's dependency layer: the ``pip:`` section as it is, ``python=`` checked against the base
image's Python, packages edgepack already provides dropped, and conda packages with a known PyPI
twin moved to pip; any other conda-only package is an error naming it.

What edgepack does not build is refused with the reason: the ``spark-py`` runtime, GPU images
(``enableGpu``/``cudaVersion``) and ``Environment.docker.base_dockerfile``. ``extraDockerfileSteps``
only run with the Docker backend (:attr:`InferenceConfig.needs_docker_backend`).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import EdgepackError, InvalidInputError

log = logging.getLogger(__name__)

#: The Python of the default base image (python:3.11-slim); the dependency layer is built for it.
PYTHON_VERSION = "3.11"

#: JSON key -> constructor argument (the v1 CLI's camelCase names).
JSON_KEYS = {
    "entryScript": "entry_script",
    "runtime": "runtime",
    "condaFile": "conda_file",
    "extraDockerfileSteps": "extra_docker_file_steps",
    "sourceDirectory": "source_directory",
    "enableGpu": "enable_gpu",
    "description": "description",
    "baseImage": "base_image",
    "baseImageRegistry": "base_image_registry",
    "cudaVersion": "cuda_version",
    "environment": "environment",
}

#: pip packages the image already provides (edge_module serves these modules): dropped with a note.
PROVIDED_BY_EDGEPACK = {
    "azureml-defaults": "edge_module is the scoring server and serves azureml.core.model and aml_request/aml_response",
    "azureml-core": "edge_module serves azureml.core and azureml.core.model (Model.get_model_path)",
    "azureml-inference-server-http": "edge_module is the scoring server and serves its aml_request/aml_response",
    "azureml-contrib-services": "edge_module serves azureml.contrib.services.aml_request/aml_response",
}
#: Dropped packages that used to bring ``inference-schema`` with them (added back if the script uses it).
BROUGHT_INFERENCE_SCHEMA = {"azureml-defaults", "azureml-inference-server-http"}
#: Conda-only build tools that mean nothing in the image.
CONDA_DROPPED = {"pip": "pip is not needed in the image: the dependency layer is installed at build time"}
#: conda package name -> PyPI name, for conda packages that are the same project on PyPI.
CONDA_TO_PYPI = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "scikit-learn": "scikit-learn",
    "joblib": "joblib",
    "pillow": "pillow",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "protobuf": "protobuf",
    "requests": "requests",
    "pyyaml": "pyyaml",
    "six": "six",
    "python-dateutil": "python-dateutil",
    "pytz": "pytz",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "matplotlib-base": "matplotlib",
    "statsmodels": "statsmodels",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "cloudpickle": "cloudpickle",
    "networkx": "networkx",
    "h5py": "h5py",
    "pyarrow": "pyarrow",
    "setuptools": "setuptools",
    "wheel": "wheel",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "pytorch": "torch",
    "torchvision": "torchvision",
    "py-xgboost": "xgboost",
    "opencv": "opencv-python-headless",
}
_CONDA_SPEC_RE = re.compile(r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?P<rest>.*)$")
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_name(requirement: str) -> str:
    m = _NAME_RE.match(requirement)
    return _norm(m.group(1)) if m else requirement.strip().lower()


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise EdgepackError("reading conda files needs PyYAML: pip install pyyaml") from None
    return yaml


def _load_yaml_file(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}; check the path") from None
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{what} {path} is not valid YAML: {exc}") from None


# --------------------------------------------------------------------------------------- Environment
class ContainerRegistry:
    """Where a base image lives and how to log in (v1 ``azureml.core.container_registry.ContainerRegistry``)."""

    def __init__(self, address: str | None = None, username: str | None = None, password: str | None = None):
        self.address = address
        self.username = username
        self.password = password

    @classmethod
    def from_value(cls, value: ContainerRegistry | Mapping[str, Any] | None, where: str) -> ContainerRegistry:
        if value is None:
            return cls()
        if isinstance(value, ContainerRegistry):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"{where} must be an object with address, username and password")
        allowed = {"address", "username", "password"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise InvalidInputError(
                f"{where} has unknown key(s) {', '.join(unknown)}; accepted: address, username, password"
            )
        return cls(value.get("address") or None, value.get("username") or None, value.get("password") or None)

    def credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` when both are set."""
        if self.username and self.password:
            return self.username, self.password
        return None

    def __repr__(self) -> str:
        return f"ContainerRegistry(address={self.address!r}, username={self.username!r})"


class CondaDependencies:
    """A conda environment document (``name``, ``channels``, ``dependencies`` with a ``pip:`` list).

    The subset of v1's ``azureml.core.conda_dependencies.CondaDependencies`` that matters for an image.
    """

    def __init__(self, conda_dependencies_file_path: str | Path | None = None, _underlying_structure: Any = None):
        self.source_path: Path | None = None
        if conda_dependencies_file_path is not None:
            self.source_path = Path(conda_dependencies_file_path).resolve()
            doc = _load_yaml_file(self.source_path, "conda file")
            where = f"conda file {self.source_path}"
        else:
            doc = copy.deepcopy(_underlying_structure) if _underlying_structure is not None else {}
            where = "conda dependencies"
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise InvalidInputError(f"{where} must be a mapping with 'dependencies:' (a conda environment file)")
        deps = doc.get("dependencies") or []
        if not isinstance(deps, list):
            raise InvalidInputError(f"{where}: 'dependencies' must be a list")
        self._name = str(doc.get("name") or "project_environment")
        self._channels = [str(c) for c in (doc.get("channels") or [])]
        self._conda: list[str] = []
        self._pip: list[str] = []
        for item in deps:
            if isinstance(item, dict):
                for key, value in item.items():
                    if key != "pip":
                        raise InvalidInputError(
                            f"{where}: unsupported entry {key!r} in dependencies; only a 'pip:' list can be nested"
                        )
                    if not isinstance(value, list):
                        raise InvalidInputError(f"{where}: 'pip:' must be a list of requirements")
                    self._pip += [str(v).strip() for v in value if str(v).strip()]
            elif item is not None:
                self._conda.append(str(item).strip())

    @classmethod
    def create(
        cls,
        pip_packages: Iterable[str] | None = None,
        conda_packages: Iterable[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        """A new document with these packages (``python_version`` adds ``python=<version>``)."""
        cd = cls()
        if python_version:
            cd.add_conda_package(f"python={python_version}")
        for p in conda_packages or ():
            cd.add_conda_package(p)
        for p in pip_packages or ():
            cd.add_pip_package(p)
        del pin_sdk_version  # v1 pinned azureml-* versions; edgepack provides those modules itself
        return cd

    def add_pip_package(self, pip_package: str) -> None:
        if pip_package not in self._pip:
            self._pip.append(pip_package)

    def add_conda_package(self, conda_package: str) -> None:
        if conda_package not in self._conda:
            self._conda.append(conda_package)

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_pip_package(self, pip_package: str) -> None:
        self._pip = [p for p in self._pip if _pip_name(p) != _pip_name(pip_package)]

    def remove_conda_package(self, conda_package: str) -> None:
        name = _parse_conda_spec(conda_package)[0]
        self._conda = [p for p in self._conda if _parse_conda_spec(p)[0] != name]

    @property
    def pip_packages(self) -> list[str]:
        return list(self._pip)

    @property
    def conda_packages(self) -> list[str]:
        return list(self._conda)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def as_dict(self) -> dict[str, Any]:
        deps: list[Any] = list(self._conda)
        if self._pip:
            deps.append({"pip": list(self._pip)})
        return {"name": self._name, "channels": list(self._channels), "dependencies": deps}

    def serialize_to_string(self) -> str:
        return _yaml().safe_dump(self.as_dict(), sort_keys=False)


class PythonSection:
    """``Environment.python``: the conda dependencies, or ``user_managed_dependencies`` (install nothing)."""

    def __init__(self) -> None:
        self.conda_dependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path = "python"
        self.base_conda_environment: str | None = None


class DockerSection:
    """``Environment.docker``: ``base_image`` (and its registry); ``base_dockerfile`` is refused."""

    def __init__(self) -> None:
        self.base_image: str | None = None
        self.base_dockerfile: str | None = None
        self.base_image_registry = ContainerRegistry()
        self.enabled = True
        self.arguments: list[str] = []


class Environment:
    """The part of v1's ``azureml.core.Environment`` an image needs: packages, base image, variables.

    ``inferencing_stack_version`` is accepted and ignored (edge_module is the inferencing stack).
    """

    def __init__(self, name: str):
        if not name or not isinstance(name, str):
            raise InvalidInputError("an Environment needs a name, e.g. Environment('my-env')")
        self.name = name
        self.version: str | None = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.inferencing_stack_version: str | None = None

    @staticmethod
    def from_conda_specification(name: str, file_path: str | Path) -> Environment:
        """An environment whose packages are the conda file's (``dependencies:`` with a ``pip:`` list)."""
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: str | Path, pip_version: str | None = None) -> Environment:
        """An environment whose packages are the lines of a ``requirements.txt``."""
        path = Path(file_path).resolve()
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies.create(
            pip_packages=_read_requirements_file(path), python_version=PYTHON_VERSION
        )
        env.python.conda_dependencies.source_path = path
        del pip_version
        return env

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], base_dir: Path, where: str = "environment") -> Environment:
        """The v1 CLI's environment definition (``name``, ``python``, ``docker``, ``environmentVariables``)."""
        if not isinstance(doc, Mapping):
            raise InvalidInputError(f"{where} must be an object (a v1 environment definition)")
        known = {"name", "version", "python", "docker", "environmentVariables", "inferencingStackVersion"}
        ignored = {"spark", "databricks", "r", "assetId", "sparkConfiguration"}
        unknown = sorted(set(doc) - known - ignored)
        if unknown:
            raise InvalidInputError(
                f"{where} has unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}"
            )
        if doc.get("r"):
            raise InvalidInputError(f"{where}: R environments are not supported; edgepack images run Python")
        env = cls(str(doc.get("name") or "edgepack-environment"))
        env.version = None if doc.get("version") is None else str(doc["version"])
        env.inferencing_stack_version = doc.get("inferencingStackVersion")
        variables = doc.get("environmentVariables") or {}
        if not isinstance(variables, Mapping):
            raise InvalidInputError(f"{where}: environmentVariables must be an object of NAME: value")
        env.environment_variables = {str(k): str(v) for k, v in variables.items()}
        python = doc.get("python") or {}
        if python.get("condaDependenciesFile"):
            env.python.conda_dependencies = CondaDependencies(_resolve(python["condaDependenciesFile"], base_dir))
        elif python.get("condaDependencies"):
            env.python.conda_dependencies = CondaDependencies(_underlying_structure=python["condaDependencies"])
        env.python.user_managed_dependencies = bool(python.get("userManagedDependencies"))
        env.python.interpreter_path = python.get("interpreterPath") or "python"
        env.python.base_conda_environment = python.get("baseCondaEnvironment")
        docker = doc.get("docker") or {}
        env.docker.base_image = docker.get("baseImage") or None
        env.docker.base_dockerfile = docker.get("baseDockerfile") or None
        env.docker.base_image_registry = ContainerRegistry.from_value(
            docker.get("baseImageRegistry"), f"{where}.docker.baseImageRegistry"
        )
        env.docker.arguments = list(docker.get("arguments") or [])
        return env

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r})"


# ------------------------------------------------------------------------------------ InferenceConfig
def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p.resolve()


def _as_bool(value: Any, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInputError(f"{key} must be true or false, not {value!r}")


class InferenceConfig:
    """How models are served: v1's ``InferenceConfig`` arguments, validated when made.

    With ``source_directory``, a relative ``entry_script`` (and ``conda_file``/``extra_docker_file_steps``)
    is looked up inside it first, then in the current folder. All arguments are optional: without an
    entry script, ONNX models are served by edge_module's auto-scorer. ``environment`` replaces
    ``runtime``, ``conda_file``, ``extra_docker_file_steps``, ``enable_gpu``, ``base_image``,
    ``base_image_registry`` and ``cuda_version`` (as in v1, giving both is an error).
    """

    def __init__(
        self,
        entry_script: str | Path | None = None,
        runtime: str | None = None,
        conda_file: str | Path | None = None,
        extra_docker_file_steps: str | Path | None = None,
        source_directory: str | Path | None = None,
        enable_gpu: bool | None = None,
        description: str | None = None,
        base_image: str | None = None,
        base_image_registry: ContainerRegistry | Mapping[str, Any] | None = None,
        cuda_version: str | None = None,
        environment: Environment | None = None,
    ):
        self.source_directory: str | None = None
        if source_directory:
            src = Path(source_directory).expanduser().resolve()
            if not src.is_dir():
                raise InvalidInputError(
                    f"source directory {source_directory} is not a folder; pass the folder that holds your code"
                )
            self.source_directory = str(src)
        self.entry_script = self._entry(entry_script)
        self.runtime = self._runtime(runtime)
        self.conda_file = self._file(conda_file, "conda file")
        self.extra_docker_file_steps = self._file(extra_docker_file_steps, "extra Docker steps file")
        self.enable_gpu = _as_bool(enable_gpu, "enable_gpu")
        self.cuda_version = None if cuda_version in (None, "") else str(cuda_version)
        self.description = description
        self.base_image = base_image or None
        self.base_image_registry = ContainerRegistry.from_value(base_image_registry, "base_image_registry")
        if environment is not None and not isinstance(environment, Environment):
            raise InvalidInputError("environment must be an Environment (from packager.image.inference_config)")
        self.environment = environment
        self._check_environment_exclusive()
        self._check_gpu()
        if environment is not None and environment.docker.base_dockerfile:
            raise InvalidInputError(
                f"environment {environment.name}: docker.base_dockerfile is not supported; build that image "
                "yourself, push it, and give it as docker.base_image"
            )

    # ------------------------------------------------------------------ validation
    def _lookup(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if not p.is_absolute() and self.source_directory:
            inside = Path(self.source_directory) / p
            if inside.exists():
                return inside.resolve()
        return p.resolve()

    def _entry(self, entry_script: str | Path | None) -> str | None:
        if not entry_script:
            return None
        script = self._lookup(entry_script)
        if not script.is_file():
            where = f" (looked in {self.source_directory} and the current folder)" if self.source_directory else ""
            raise InvalidInputError(
                f"entry script {entry_script} does not exist{where}; pass the path of your score.py"
            )
        if self.source_directory and Path(self.source_directory) in script.parents:
            return script.relative_to(self.source_directory).as_posix()
        return str(script)

    def _file(self, path: str | Path | None, what: str) -> str | None:
        if not path:
            return None
        found = self._lookup(path)
        if not found.is_file():
            raise InvalidInputError(f"{what} {path} does not exist; fix the path")
        return str(found)

    @staticmethod
    def _runtime(runtime: str | None) -> str | None:
        if runtime is None or runtime == "":
            return None
        value = str(runtime).strip().lower()
        if value == "python":
            return "python"
        if value == "spark-py":
            raise InvalidInputError(
                "runtime 'spark-py' is not supported (Azure ML retired it): use runtime 'python' with a "
                "Python entry script"
            )
        raise InvalidInputError(f"unknown runtime {runtime!r}: the only runtime is 'python'")

    def _check_environment_exclusive(self) -> None:
        if self.environment is None:
            return
        given = {
            "conda_file": self.conda_file,
            "extra_docker_file_steps": self.extra_docker_file_steps,
            "enable_gpu": self.enable_gpu,
            "base_image": self.base_image,
            "base_image_registry": self.base_image_registry.address,
            "cuda_version": self.cuda_version,
        }
        clash = [k for k, v in given.items() if v]
        if clash:
            raise InvalidInputError(
                f"give either environment or {', '.join(clash)}, not both (as in Azure ML v1): "
                "put the packages and base image in the environment"
            )

    def _check_gpu(self) -> None:
        if self.enable_gpu or self.cuda_version:
            what = "enableGpu" if self.enable_gpu else f"cudaVersion {self.cuda_version}"
            raise InvalidInputError(
                f"{what}: edgepack builds CPU images only (onnxruntime CPU wheels, python:3.11-slim base); "
                "remove enableGpu/cudaVersion from the inference config"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> InferenceConfig:
        """Read an ``inferenceconfig.json`` (or ``.yml``) as the v1 CLI did; paths are relative to its folder."""
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise InvalidInputError(f"inference config {path} does not exist; pass the path of inferenceconfig.json")
        if file.suffix.lower() in (".yml", ".yaml"):
            doc = _load_yaml_file(file, "inference config")
        else:
            try:
                doc = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InvalidInputError(f"inference config {file} is not valid JSON: {exc}") from None
        return cls.from_dict(doc, base_dir=file.parent, where=f"inference config {file}")

    @classmethod
    def from_dict(
        cls, doc: Mapping[str, Any], base_dir: str | Path | None = None, where: str = "inference config"
    ) -> InferenceConfig:
        """A config from the v1 CLI's camelCase keys (snake_case names are accepted too).

        Relative paths are resolved against ``base_dir`` (default: the current folder); the entry
        script, conda file and extra steps file are looked up in ``sourceDirectory`` first.
        """
        if not isinstance(doc, Mapping):
            raise InvalidInputError(f"{where} must be a JSON object with keys like entryScript and sourceDirectory")
        base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
        snake = {v: v for v in JSON_KEYS.values()}
        kwargs: dict[str, Any] = {}
        for key, value in doc.items():
            arg = JSON_KEYS.get(key) or snake.get(key)
            if arg is None:
                raise InvalidInputError(f"{where}: unknown key {key!r}; accepted keys: {', '.join(JSON_KEYS)}")
            kwargs[arg] = value
        src = kwargs.get("source_directory")
        if src:
            kwargs["source_directory"] = _resolve(src, base)
        src_dir = kwargs.get("source_directory")
        for arg in ("entry_script", "conda_file", "extra_docker_file_steps"):
            value = kwargs.get(arg)
            if value:
                p = Path(value).expanduser()
                if not p.is_absolute() and not (src_dir and (Path(src_dir) / p).exists()):
                    if not (base / p).is_file():
                        places = f"{src_dir} or {base}" if src_dir else str(base)
                        raise InvalidInputError(
                            f"{where}: {arg} {value} does not exist (looked in {places}); fix the path"
                        )
                    p = base / p
                kwargs[arg] = p
        if kwargs.get("environment") is not None:
            kwargs["environment"] = Environment.from_dict(kwargs["environment"], base, f"{where}: environment")
        kwargs["enable_gpu"] = _as_bool(kwargs.get("enable_gpu"), "enableGpu")
        for arg in ("runtime", "description", "base_image", "cuda_version"):
            if kwargs.get(arg) is not None and not isinstance(kwargs[arg], str | int | float):
                raise InvalidInputError(f"{where}: {arg} must be a string")
        if kwargs.get("base_image_registry") is not None:
            kwargs["base_image_registry"] = ContainerRegistry.from_value(
                kwargs["base_image_registry"], f"{where}: baseImageRegistry"
            )
        return cls(**kwargs)

    # ------------------------------------------------------------------ views
    @property
    def entry_script_file(self) -> Path | None:
        """The entry script on this machine."""
        if not self.entry_script:
            return None
        return self._lookup(self.entry_script)

    @property
    def extra_steps_text(self) -> str | None:
        """The extra Dockerfile lines (``None`` without a file or when it is blank)."""
        if not self.extra_docker_file_steps:
            return None
        try:
            text = Path(self.extra_docker_file_steps).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read extra Docker steps file {self.extra_docker_file_steps}: {exc.strerror}"
            ) from None
        return text if text.strip() else None

    @property
    def needs_docker_backend(self) -> bool:
        """True when there are extra Dockerfile steps: only a Docker build can run them."""
        return self.extra_steps_text is not None

    @property
    def environment_variables(self) -> dict[str, str]:
        """Variables the environment sets in the image (empty without an environment)."""
        return dict(self.environment.environment_variables) if self.environment else {}

    def _registry(self) -> ContainerRegistry:
        return self.environment.docker.base_image_registry if self.environment else self.base_image_registry

    def base_image_ref(self) -> str | None:
        """The base image reference, prefixed with ``baseImageRegistry.address`` when it has no registry."""
        image = self.environment.docker.base_image if self.environment else self.base_image
        if not image:
            return None
        address = (self._registry().address or "").strip().rstrip("/")
        address = re.sub(r"^https?://", "", address)
        if address and not image.startswith(address + "/"):
            first, sep, _ = image.partition("/")
            has_registry = bool(sep) and ("." in first or ":" in first or first == "localhost")
            if not has_registry:
                image = f"{address}/{image}"
        return image

    def base_image_credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` from ``baseImageRegistry`` when both are given, else ``None``."""
        return self._registry().credentials()

    def serialize(self) -> dict[str, Any]:
        """The config as ``inferenceconfig.json`` keys (absolute paths; no password)."""
        registry = self._registry()
        return {
            "entryScript": self.entry_script,
            "runtime": self.runtime,
            "condaFile": self.conda_file,
            "extraDockerfileSteps": self.extra_docker_file_steps,
            "sourceDirectory": self.source_directory,
            "enableGpu": self.enable_gpu,
            "description": self.description,
            "baseImage": self.base_image_ref(),
            "baseImageRegistry": {"address": registry.address, "username": registry.username},
            "environment": self.environment.name if self.environment else None,
        }

    def __repr__(self) -> str:
        return f"InferenceConfig(entry_script={self.entry_script!r}, source_directory={self.source_directory!r})"


# ----------------------------------------------------------------------------------- requirements
@dataclass(frozen=True)
class Requirements:
    """pip requirements for the dependency layer, and what was changed on the way (for the user)."""

    pip: list[str] = field(default_factory=list)
    python_version: str = PYTHON_VERSION
    channels_ignored: list[str] = field(default_factory=list)
    moved_from_conda: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _parse_conda_spec(spec: str) -> tuple[str, str, str]:
    """``(normalised name, version part, channel)`` of a conda match spec like ``conda-forge::numpy=1.26``."""
    m = _CONDA_SPEC_RE.match(spec.strip())
    if not m:
        raise InvalidInputError(f"cannot read conda package spec {spec!r}; write it as name=version")
    return _norm(m.group("name")), m.group("rest").strip(), m.group("channel") or ""


def conda_version_to_pip(version: str, spec: str) -> str:
    """A conda version constraint as a pip one: ``=1.26`` → ``==1.26.*``, ``==1.2`` → ``==1.2``, ``>=1`` as is.

    Build strings (``=1.26.4=py311h...``) are dropped; ``|`` alternatives cannot be translated.
    """
    v = version.strip()
    if not v:
        return ""
    if v.startswith("[") or "|" in v:
        raise InvalidInputError(
            f"conda spec {spec!r} cannot be translated to pip; move the package to the pip: section"
        )
    if v[0] in "<>!~":
        return v.replace(" ", "")
    if v.startswith("=="):
        return "==" + v[2:].split("=", 1)[0].strip()
    if v.startswith("="):
        ver = v[1:].split("=", 1)[0].strip()
    else:
        ver = v.split()[0]
        if ver[0] in "<>!~=":
            return conda_version_to_pip(ver, spec)
    if not ver:
        return ""
    return f"=={ver}" if ver.endswith("*") else f"=={ver}.*"


def _check_python(version: str, spec: str, where: str, notes: list[str]) -> None:
    constraint = conda_version_to_pip(version, spec)
    if not constraint:
        return
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # pragma: no cover - packaging ships with pip
        raise EdgepackError("checking python= needs the 'packaging' module: pip install packaging") from None
    try:
        spec_set = SpecifierSet(constraint)
    except InvalidSpecifier:
        raise InvalidInputError(f"{where}: cannot read the Python version in {spec!r}; write python=3.11") from None
    patches = [f"{PYTHON_VERSION}.{n}" for n in range(0, 40)]
    fitting = [p for p in patches if spec_set.contains(p, prereleases=False)]
    if not fitting:
        raise InvalidInputError(
            f"{where} asks for {spec!r}, but images run Python {PYTHON_VERSION} (the base image's): "
            f"change it to python={PYTHON_VERSION} and check your packages support {PYTHON_VERSION}"
        )
    if len(fitting) < len(patches):
        notes.append(
            f"{spec}: the image has the base image's Python {PYTHON_VERSION}.x (the patch level is not pinned)"
        )


def _read_requirements_file(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read requirements file {path}: {exc.strerror}; fix the path") from None
    out: list[str] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        out += _pip_entry(line, path.parent, f"requirements file {path}", seen | {path})
    return out


def _pip_entry(entry: str, base_dir: Path | None, where: str, seen: frozenset[Path] = frozenset()) -> list[str]:
    """One pip requirement line: ``-r FILE`` is read (relative to ``base_dir``); other options are refused."""
    line = entry.strip()
    if line.startswith(("-r ", "--requirement ", "-r=", "--requirement=")):
        target = re.split(r"[ =]", line, maxsplit=1)[1].strip()
        path = _resolve(target, base_dir)
        if path in seen:
            raise InvalidInputError(f"{where}: requirements file {path} includes itself")
        return _read_requirements_file(path, seen)
    if line.startswith("-"):
        raise InvalidInputError(
            f"{where}: pip option {line!r} is not supported; edgepack installs wheels from PyPI "
            "(set PIP_INDEX_URL / PIP_EXTRA_INDEX_URL in the environment for another index)"
        )
    if "://" in line or line.startswith(("git+", "hg+", "svn+", "bzr+")):
        raise InvalidInputError(
            f"{where}: {line!r} is a URL or VCS requirement; images are built from binary wheels only: "
            "publish a wheel to an index and require it by name"
        )
    return [line]


def _conda_source(cfg: InferenceConfig) -> tuple[CondaDependencies | None, str, Path | None]:
    if cfg.environment is not None:
        py = cfg.environment.python
        if py.user_managed_dependencies:
            return None, f"environment {cfg.environment.name}", None
        cd = py.conda_dependencies
        return cd, f"environment {cfg.environment.name}", cd.source_path.parent if cd.source_path else None
    if cfg.conda_file:
        path = Path(cfg.conda_file)
        return CondaDependencies(path), f"conda file {path}", path.parent
    return None, "", None


def _uses_inference_schema(cfg: InferenceConfig) -> bool:
    script = cfg.entry_script_file
    if script is None:
        return False
    try:
        return "inference_schema" in script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def resolve_requirements(cfg: InferenceConfig) -> Requirements:
    """The pip requirements of ``cfg`` (conda file or environment), with notes on what changed.

    Raises :class:`InvalidInputError` for a Python other than 3.11 and for conda-only packages
    (listing them all, with the fix: move them to the ``pip:`` section under their PyPI names).
    """
    cd, where, base_dir = _conda_source(cfg)
    if cd is None:
        return Requirements()
    notes: list[str] = []
    pip: list[str] = []
    moved: list[str] = []
    dropped: list[str] = []
    conda_only: list[str] = []
    channels = [c for c in cd.channels if c]
    for spec in cd.conda_packages:
        name, version, channel = _parse_conda_spec(spec)
        if channel and channel not in channels:
            channels.append(channel)
        if name == "python":
            _check_python(version, spec, where, notes)
            continue
        if name in CONDA_DROPPED:
            dropped.append(spec)
            notes.append(f"{spec}: dropped ({CONDA_DROPPED[name]})")
            continue
        pypi = CONDA_TO_PYPI.get(name)
        if pypi is None:
            conda_only.append(spec)
            continue
        requirement = pypi + conda_version_to_pip(version, spec)
        pip.append(requirement)
        moved.append(requirement)
        notes.append(f"conda package {spec}: installed from PyPI as {requirement}")
    if conda_only:
        raise InvalidInputError(
            f"{where} lists conda package(s) edgepack cannot install: {', '.join(conda_only)}; images are "
            "built from PyPI wheels: move them to the 'pip:' section under their PyPI names (or drop them)"
        )
    dropped_names: set[str] = set()
    for entry in cd.pip_packages:
        for line in _pip_entry(entry, base_dir, where):
            name = _pip_name(line)
            reason = PROVIDED_BY_EDGEPACK.get(name)
            if reason:
                dropped.append(line)
                dropped_names.add(name)
                notes.append(f"{line}: dropped ({reason})")
                continue
            pip.append(line)
    names = {_pip_name(p) for p in pip}
    if dropped_names & BROUGHT_INFERENCE_SCHEMA and "inference-schema" not in names and _uses_inference_schema(cfg):
        pip.append("inference-schema")
        notes.append("inference-schema: added (the entry script uses it; azureml-defaults used to bring it)")
    unique: list[str] = []
    for p in pip:
        if p not in unique:
            unique.append(p)
    ignored = [c for c in channels if c != "defaults"]
    if ignored and (moved or unique):
        notes.append(f"conda channels ignored ({', '.join(ignored)}): packages come from PyPI")
    for note in notes:
        log.warning("%s", note)
    return Requirements(
        pip=unique,
        python_version=PYTHON_VERSION,
        channels_ignored=ignored,
        moved_from_conda=moved,
        dropped=dropped,
        notes=notes,
    )


__all__ = [
    "PYTHON_VERSION",
    "CondaDependencies",
    "ContainerRegistry",
    "Environment",
    "InferenceConfig",
    "Requirements",
    "conda_version_to_pip",
    "resolve_requirements",
]
