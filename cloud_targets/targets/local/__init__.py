"""The Local target, the embedded default: the service's image in the local Docker engine, or a local process.

Mode: ``LocalDeploymentConfig.mode`` when the config carries one, else ``$EDGEPACK_LOCAL_MODE``
(``docker`` or ``process``), else Docker when an engine answers, else a process. Both serve the same
content (registered models in the ``AZUREML_MODEL_DIR`` layout, the entry script and source directory)
with the same scoring module, on the host's network, on ``port`` or a free one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cloud_targets.config.model import DeploymentConfig
from cloud_targets.targets.base import Deployed, ServiceSpec, TargetStatus
from cloud_targets.targets.local import docker_mode, process
from cloud_targets.targets.local.health import free_port, port_in_use, uris
from cloud_targets.targets.local.staging import APP_FOLDER, stage_app, stage_content
from packager.errors import EdgepackError, InvalidInputError
from packager.image.conda import resolve_requirements
from packager.image.inference_config import InferenceConfig
from packager.image.spec import Reporter
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets.local")

ENV_MODE = "EDGEPACK_LOCAL_MODE"
MODES = ("docker", "process")
CONTENT_DIR = "content"
CONTENT_INFO = ".edgepack-local.json"


def resolve_mode(config: DeploymentConfig | None = None) -> str:
    """``docker`` or ``process`` (see the module docstring for the order)."""
    wanted = getattr(config, "mode", None) or os.environ.get(ENV_MODE) or ""
    wanted = str(wanted).strip().lower()
    if wanted and wanted not in MODES:
        raise InvalidInputError(f"local mode {wanted!r} (from {ENV_MODE} or the config): use docker or process")
    if wanted:
        return wanted
    return "docker" if docker_mode.engine() is not None else "process"


class LocalTarget:
    """Deploys, inspects and removes one local service; implements :class:`cloud_targets.targets.base.Target`."""

    compute_type: ClassVar[str] = "LOCAL"

    def __init__(self, workspace: Workspace, service_dir: Path, mode: str | None = None):
        self.workspace = workspace
        self.service_dir = Path(service_dir)
        self.mode = mode or resolve_mode()
        self._client: Any = None
        if self.mode == "docker":
            self._client = docker_mode.engine()
            if self._client is None:
                raise EdgepackError(
                    f"no Docker engine answers: start dockerd (or set DOCKER_HOST), or set {ENV_MODE}=process "
                    "to run the service as a local process"
                )

    # -- building ----------------------------------------------------------------------------------
    def prepare(
        self, name: str, models: Sequence[Model], config: InferenceConfig, reporter: Reporter | None = None
    ) -> dict[str, Any]:
        """Build what the service runs: an image in the engine, or staged content; ``{"image": ...}`` and details."""
        if self.mode == "docker":
            return docker_mode.build_image(self.workspace, name, models, config, self._client, reporter)
        pip = resolve_requirements(config).pip
        if pip:
            log.warning("process mode runs with this machine's Python packages; not installed: %s", ", ".join(pip))
        if config.needs_docker_backend:
            log.warning("process mode cannot run extraDockerfileSteps: they are ignored")
        t0 = time.perf_counter()
        content = self.service_dir / CONTENT_DIR / f"{int(time.time() * 1000):x}"
        model_dir, entry = stage_content(self.workspace, models, config, content)
        info = {"model_dir": str(model_dir), "entry_script": entry}
        (content / CONTENT_INFO).write_text(json.dumps(info))
        seconds = {"stage": round(time.perf_counter() - t0, 3)}
        return {"image": str(content), "image_id": None, "digest": None, "transfer": "staged", "seconds": seconds}

    # -- the Target interface ------------------------------------------------------------------------
    def deploy(self, spec: ServiceSpec, previous: Mapping[str, Any] | None = None) -> Deployed:
        """Start the service (stopping ``previous``, the handle of the one it replaces, first)."""
        port = spec.port
        self.check_port(port, previous)  # before the running service is stopped
        if previous:
            self.delete(previous, keep_content=spec.image)
        env = {**spec.env, **spec.secrets}
        if self.mode == "docker":
            handle = docker_mode.run(self._client, spec.name, spec.image, port, env)
        else:
            content = Path(spec.image)
            info = json.loads((content / CONTENT_INFO).read_text())
            handle = process.start(self.service_dir, content, Path(info["model_dir"]), info["entry_script"], port, env)
        scoring, swagger = uris(port)
        return Deployed(scoring, swagger, handle)

    def state(self, handle: Mapping[str, Any]) -> TargetStatus:
        if handle.get("mode") == "docker":
            return docker_mode.status(self._docker(), handle)
        return process.status(handle, self.service_dir)

    def logs(self, handle: Mapping[str, Any], num_lines: int = 5000) -> str:
        if handle.get("mode") == "docker":
            return docker_mode.logs(self._docker(), handle, num_lines)
        return process.tail(self.service_dir, num_lines)

    def delete(self, handle: Mapping[str, Any], keep_content: str | None = None, name: str | None = None) -> None:
        """Stop and remove the container or process (and, in process mode, staged content but ``keep_content``)."""
        if handle.get("mode") == "docker":
            docker_mode.remove(self._docker(), name or self.service_dir.name)
            return
        process.stop(handle)
        content_root = self.service_dir / CONTENT_DIR
        if content_root.is_dir():
            for entry in content_root.iterdir():
                if keep_content is None or entry != Path(keep_content):
                    shutil.rmtree(entry, ignore_errors=True)

    def update_secrets(self, spec: ServiceSpec, handle: Mapping[str, Any]) -> Deployed:
        """Restart with the new keys (same image or content): the old keys stop working."""
        return self.deploy(spec, previous=handle)

    # -- Local only --------------------------------------------------------------------------------------
    def reload(self, spec: ServiceSpec, handle: Mapping[str, Any], config: InferenceConfig) -> Deployed:
        """Copy the entry script and source directory again and restart, without rebuilding."""
        if handle.get("mode") == "docker":
            staging = self.service_dir / "reload"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                stage_app(config, staging, exclude=(self.workspace.path,))
                docker_mode.copy_app(self._docker(), handle, staging)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return Deployed(*uris(int(handle["port"])), dict(handle))
        content = Path(spec.image)
        shutil.rmtree(content / APP_FOLDER, ignore_errors=True)
        entry = stage_app(config, content / APP_FOLDER, exclude=(self.workspace.path,))
        info = json.loads((content / CONTENT_INFO).read_text())
        info["entry_script"] = entry
        (content / CONTENT_INFO).write_text(json.dumps(info))
        return self.deploy(spec, previous=handle)

    def remove_image(self, image: str | None) -> None:
        """Docker mode: drop an image no longer used by the service."""
        if self.mode == "docker" and image:
            docker_mode.remove_image(self._docker(), image)

    def _docker(self) -> Any:
        if self._client is None:
            self._client = docker_mode.engine()
            if self._client is None:
                raise EdgepackError("the service runs in Docker, but no Docker engine answers: start dockerd")
        return self._client

    @staticmethod
    def check_port(port: int, previous: Mapping[str, Any] | None = None) -> None:
        """Refuse a port another program listens on (the service's own current port is fine)."""
        if (not previous or int(previous.get("port") or 0) != port) and port_in_use(port):
            raise InvalidInputError(
                f"port {port} is in use: give another one (LocalWebservice.deploy_configuration(port=...))"
            )

    @staticmethod
    def pick_port(requested: int | None, previous: int | None = None) -> int:
        """The requested port, else the service's previous one, else a free one (as v1 did)."""
        return int(requested or previous or free_port())


__all__ = ["ENV_MODE", "MODES", "LocalTarget", "resolve_mode"]
