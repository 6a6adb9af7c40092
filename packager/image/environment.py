"""Azure ML v1 environments: ``Environment``, its ``python``/``docker`` sections, ``CondaDependencies``.

The part of ``azureml.core.Environment`` an image needs: packages (a conda document with a ``pip:``
list, or a ``requirements.txt``), the base image and its registry, environment variables.
:mod:`packager.image.conda` turns the packages into the image's pip requirements.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packager.errors import EdgepackError, InvalidInputError
from packager.image.conda import CondaSpec
from packager.image.requirements import read_requirements_file, requirement_name, resolve_path
from packager.image.spec import PYTHON_VERSION


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise EdgepackError("reading conda files needs PyYAML: pip install pyyaml") from None
    return yaml


def load_yaml_file(path: Path, what: str) -> Any:
    """The YAML document in ``path`` (``what`` names it in errors: "conda file", "inference config")."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}; check the path") from None
    yaml = _yaml()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{what} {path} is not valid YAML: {exc}") from None


def _names_project(entry: str, name: str) -> bool:
    """True when pip entry ``entry`` requires project ``name`` (``-r`` lines and unreadable entries never do)."""
    if entry.lstrip().startswith("-"):
        return False
    try:
        return requirement_name(entry) == name
    except InvalidInputError:
        return False


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
            doc = load_yaml_file(self.source_path, "conda file")
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
        name = requirement_name(pip_package)
        self._pip = [p for p in self._pip if not _names_project(p, name)]

    def remove_conda_package(self, conda_package: str) -> None:
        name = CondaSpec.parse(conda_package).name
        self._conda = [p for p in self._conda if CondaSpec.parse(p).name != name]

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
            pip_packages=read_requirements_file(path), python_version=PYTHON_VERSION
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
            env.python.conda_dependencies = CondaDependencies(resolve_path(python["condaDependenciesFile"], base_dir))
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

    def to_dict(self) -> dict[str, Any]:
        """The v1 CLI's environment definition (what :meth:`from_dict` reads), without the registry password.

        The conda file's content is inlined (``condaDependencies``), so the definition stands alone."""
        registry = self.docker.base_image_registry
        return {
            "name": self.name,
            "version": self.version,
            "inferencingStackVersion": self.inferencing_stack_version,
            "environmentVariables": dict(self.environment_variables),
            "python": {
                "condaDependencies": self.python.conda_dependencies.as_dict(),
                "userManagedDependencies": self.python.user_managed_dependencies,
                "interpreterPath": self.python.interpreter_path,
                "baseCondaEnvironment": self.python.base_conda_environment,
            },
            "docker": {
                "baseImage": self.docker.base_image,
                "baseImageRegistry": {"address": registry.address, "username": registry.username},
                "arguments": list(self.docker.arguments),
            },
        }

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r})"


__all__ = ["CondaDependencies", "ContainerRegistry", "DockerSection", "Environment", "PythonSection", "load_yaml_file"]
