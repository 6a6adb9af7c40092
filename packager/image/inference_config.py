"""Azure ML v1 inference configs: ``InferenceConfig(...)`` and the v1 CLI's ``inferenceconfig.json``.

:class:`InferenceConfig` takes v1's constructor arguments and validates them as v1 did when the
object is made. :meth:`InferenceConfig.load` reads the v1 CLI's ``inferenceconfig.json`` (or YAML)
with paths relative to the file's folder. Paths follow v1's rule in one place,
:func:`edge_module.app_paths.resolve_app_paths`: with a source directory, the entry script and conda
file are relative to it (an entry script outside it is refused). A config's packages become pip
requirements with :func:`packager.image.conda.resolve_requirements`; environments are
:mod:`packager.image.environment`.

What edgepack does not build is refused with the reason: the ``spark-py`` runtime, GPU images
(``enableGpu``/``cudaVersion``) and ``Environment.docker.base_dockerfile``. ``extraDockerfileSteps``
only run with the Docker backend (:attr:`InferenceConfig.needs_docker_backend`).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_module.app_paths import AppPathError, find_file, resolve_app_paths
from packager.errors import InvalidInputError
from packager.image.environment import CondaDependencies, ContainerRegistry, Environment, load_yaml_file
from packager.image.spec import DEFAULT_BASE

log = logging.getLogger(__name__)

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

#: Keys Azure's own sample files still carry that v1 read and ignored -> what to do instead.
IGNORED_V1_KEYS = {
    "schemaFile": "the swagger schema comes from the entry script's inference-schema decorators",
    "dependencies": "files under sourceDirectory go into the image; packages belong in condaFile or environment",
}


def _unknown_key_warning(key: str, where: str) -> str:
    """The warning for a key ``InferenceConfig`` does not read (v1 ignored those too)."""
    if key in IGNORED_V1_KEYS:
        return f"{where}: {key!r} is not used (Azure ML v1 ignored it too: {IGNORED_V1_KEYS[key]}); ignored"
    camel = {**{arg: k for k, arg in JSON_KEYS.items()}, **{k: k for k in JSON_KEYS}}  # any spelling -> v1 key
    lower = {name.lower(): name for name in camel}
    close = [lower[key.lower()]] if key.lower() in lower else difflib.get_close_matches(key, list(camel), 1, 0.7)
    meant = f"; did you mean {camel[close[0]]!r}?" if close else ""
    return f"{where}: unknown key {key!r} ignored (Azure ML v1 ignored it too){meant}"


def _json_base(source_dir: Any, file_dir: Path) -> Path:
    """The folder an ``inferenceconfig.json``'s relative paths start from: the file's own folder (so the
    config works from any working folder), or the working folder when only it holds ``sourceDirectory``
    (the v1 CLI, ``az ml model deploy --ic``, read paths from the working folder)."""
    if not source_dir or not isinstance(source_dir, str | Path) or Path(source_dir).expanduser().is_absolute():
        return file_dir
    if (file_dir / source_dir).is_dir() or not (Path.cwd() / source_dir).is_dir():
        return file_dir
    return Path.cwd().resolve()


def _as_bool(value: Any, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInputError(f"{key} must be true or false, not {value!r}")


class InferenceConfig:
    """How models are served: v1's ``InferenceConfig`` arguments, validated when made.

    With ``source_directory``, a relative ``entry_script`` (and ``conda_file``/``extra_docker_file_steps``)
    is looked up inside it first, then in the current folder; the entry script must be inside it
    (:func:`edge_module.app_paths.resolve_app_paths`). All arguments are optional: without an
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
        try:
            paths = resolve_app_paths(entry_script, source_directory, conda_file, source_flag="source_directory")
            steps = (
                find_file(extra_docker_file_steps, paths.source_dir, Path.cwd(), "extra Docker steps file",
                          source_flag="source_directory")
                if extra_docker_file_steps
                else None
            )  # fmt: skip
        except AppPathError as exc:
            raise InvalidInputError(str(exc)) from None
        self._paths = paths
        #: Warnings about the config file (keys ignored as v1 ignored them); set by :meth:`from_dict`.
        self.warnings: list[str] = []
        self.source_directory: str | None = str(paths.source_dir) if paths.source_dir else None
        #: Relative to the source directory when there is one (as in the image), else absolute.
        self.entry_script: str | None = None
        if paths.entry_script is not None:
            self.entry_script = paths.entry_script_rel if paths.source_dir else str(paths.entry_script)
        self.runtime = self._runtime(runtime)
        self.conda_file = str(paths.conda_file) if paths.conda_file else None
        self.extra_docker_file_steps = str(steps) if steps else None
        self.enable_gpu = _as_bool(enable_gpu, "enable_gpu")
        self.cuda_version = None if cuda_version in (None, "") else str(cuda_version)
        self.description = description
        self.base_image = base_image or None
        self.base_image_registry = ContainerRegistry.from_value(base_image_registry, "base_image_registry")
        if environment is not None and not isinstance(environment, Environment):
            raise InvalidInputError("environment must be an Environment (from packager.image.environment)")
        self.environment = environment
        self._check_environment_exclusive()
        self._check_gpu()
        if environment is not None and environment.docker.base_dockerfile:
            raise InvalidInputError(
                f"environment {environment.name}: docker.base_dockerfile is not supported; build that image "
                "yourself, push it, and give it as docker.base_image"
            )

    # ------------------------------------------------------------------ validation
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
                f"{what}: edgepack builds CPU images only (onnxruntime CPU wheels, {DEFAULT_BASE} base); "
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
            doc = load_yaml_file(file, "inference config")
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

        Relative paths are resolved against ``base_dir`` (default: the current folder; the working
        folder when only it holds ``sourceDirectory``, as the v1 CLI read it); the entry script, conda
        file and extra steps file are looked up in ``sourceDirectory`` first. Keys v1 did not read
        (``schemaFile``, ``dependencies``, typos) are ignored as v1 ignored them, each with a logged
        warning, also kept in :attr:`warnings`.
        """
        if not isinstance(doc, Mapping):
            raise InvalidInputError(f"{where} must be a JSON object with keys like entryScript and sourceDirectory")
        base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
        snake = {v: v for v in JSON_KEYS.values()}
        kwargs: dict[str, Any] = {}
        warnings: list[str] = []
        for key, value in doc.items():
            arg = JSON_KEYS.get(key) or snake.get(key)
            if arg is None:
                warnings.append(_unknown_key_warning(str(key), where))
                continue
            kwargs[arg] = value
        for arg in ("entry_script", "source_directory", "conda_file", "extra_docker_file_steps"):
            if kwargs.get(arg) is not None and not isinstance(kwargs[arg], str):
                raise InvalidInputError(f"{where}: {arg} must be a path (a string)")
        base = _json_base(kwargs.get("source_directory"), base)
        try:
            paths = resolve_app_paths(
                kwargs.get("entry_script"), kwargs.get("source_directory"), kwargs.get("conda_file"), base,
                source_flag="sourceDirectory",
            )  # fmt: skip
            steps = kwargs.get("extra_docker_file_steps")
            if steps:
                kwargs["extra_docker_file_steps"] = find_file(
                    steps, paths.source_dir, base, "extraDockerfileSteps file", source_flag="sourceDirectory"
                )
        except AppPathError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
        kwargs.update(source_directory=paths.source_dir, entry_script=paths.entry_script, conda_file=paths.conda_file)
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
        config = cls(**kwargs)
        for warning in warnings:
            log.warning("%s", warning)
        config.warnings = warnings
        return config

    # ------------------------------------------------------------------ views
    @property
    def entry_script_file(self) -> Path | None:
        """The entry script on this machine."""
        return self._paths.entry_script

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

    def conda_dependencies(self) -> tuple[CondaDependencies | None, str, Path | None]:
        """The packages to install: ``(conda document or None, where it comes from, folder for -r paths)``.

        None when there is neither an environment nor a conda file, or the environment's
        dependencies are user-managed.
        """
        if self.environment is not None:
            where = f"environment {self.environment.name}"
            python = self.environment.python
            if python.user_managed_dependencies:
                return None, where, None
            cd = python.conda_dependencies
            return cd, where, cd.source_path.parent if cd.source_path else None
        if self.conda_file:
            path = Path(self.conda_file)
            return CondaDependencies(path), f"conda file {path}", path.parent
        return None, "", None

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


__all__ = ["IGNORED_V1_KEYS", "JSON_KEYS", "InferenceConfig"]
