"""Docker mode: the service's image built without a daemon, brought into the local engine, run on the host network.

The image is built by :func:`packager.image.builder.run` for this machine's platform only (layer cache:
a new model version re-tars the models layer alone). It reaches the engine one of two ways:

* ``registry`` (when ``EDGEPACK_LOCAL_REGISTRY`` names a registry the engine can pull from, e.g. the dev
  registry ``127.0.0.1:5000``): push only the blobs the registry lacks to one repository
  (``edgepack-local/services``, tag ``<service>-<build>``, so services share blobs), then ``docker pull``,
  which fetches only the layers the engine lacks (the fastest: a model update moves one small layer);
* ``archive`` (the default): a ``docker load`` tarball per build.

The container runs with ``--network host`` on the service's port (``EDGEPACK_PORT``), listening on
127.0.0.1 only (a local service is not reachable from other machines; auth is off by default), named
``edgepack-svc-<name>`` and labelled ``edgepack.service=<name>`` so delete and cleanup find it. Keys
are passed in its environment: ``docker inspect`` shows them to whoever may use the engine (who is
root-equivalent on this machine anyway); acceptable for a local service, never done on remote targets.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform as host_platform
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cloud_targets.targets.base import FAILED, TRANSITIONING, TargetStatus
from cloud_targets.targets.local.health import probe
from packager.errors import EdgepackError
from packager.image import builder
from packager.image.inference_config import InferenceConfig
from packager.image.spec import APP_ROOT, Platform, Reporter
from packager.registry import Model
from packager.workspace import Workspace

LABEL = "edgepack.service"
ENV_REGISTRY = "EDGEPACK_LOCAL_REGISTRY"
ENV_BASE = "EDGEPACK_BASE_IMAGE"
REGISTRY_REPO = "edgepack-local/services"
#: A tag on the newest service image, so deleting every service keeps the shared layers in the engine
#: (the next deploy then moves only its models and app layers). ``docker rmi`` it to free the space.
CACHE_REPO = "edgepack-local/layer-cache"


def engine() -> Any | None:
    """A docker SDK client when an engine answers, else None."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception:
        return None


def host_platform_() -> Platform:
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return Platform("linux", arch)


def container_name(name: str) -> str:
    return f"edgepack-svc-{name}"


def build_image(
    workspace: Workspace,
    name: str,
    models: Sequence[Model],
    config: InferenceConfig,
    client: Any,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Build the image and bring it into the engine.

    Returns ``{"image", "image_id", "digest", "transfer", "seconds"}``.
    """
    t0 = time.perf_counter()
    base = None if config.base_image_ref() else os.environ.get(ENV_BASE)
    registry = os.environ.get(ENV_REGISTRY, "").strip().rstrip("/")
    platform = host_platform_()
    tag = f"{int(time.time() * 1000):x}"
    if registry:
        repo = f"{registry}/{REGISTRY_REPO}"  # one repository: every service's images share its blobs
        tag = f"{name}-{tag}"
        request = builder.BuildRequest(
            list(models), builder.Destination.registry(f"{repo}:{tag}"), config, [platform], base=base
        )
        doc = builder.run(workspace, request, reporter)
        built = time.perf_counter()
        image = client.images.pull(repo, tag=tag)
        ref = f"{repo}:{tag}"
    else:
        ref = f"edgepack-local/{name}:{tag}"
        with tempfile.TemporaryDirectory(prefix="edgepack-local-") as tmp:
            archive = Path(tmp) / "image.tar"
            request = builder.BuildRequest(
                list(models), builder.Destination.docker_archive(archive, ref), config, [platform], base=base
            )
            doc = builder.run(workspace, request, reporter)
            built = time.perf_counter()
            with open(archive, "rb") as fh:
                loaded = client.images.load(fh)
        image = loaded[0]
    image.tag(CACHE_REPO, "latest")  # keeps the base and dependency layers when services are deleted
    digest = doc["platforms"][str(platform)]["digest"]
    return {
        "image": ref,
        "image_id": image.id,
        "digest": digest,
        "transfer": "registry" if registry else "archive",
        "seconds": {"build": round(built - t0, 3), "transfer": round(time.perf_counter() - built, 3)},
    }


def run(client: Any, name: str, image: str, port: int, env: Mapping[str, str]) -> dict[str, Any]:
    """Start the service's container (removing any earlier one of the service first); returns its handle."""
    remove(client, name)
    container = client.containers.run(
        image,
        name=container_name(name),
        detach=True,
        network_mode="host",
        environment={**env, "EDGEPACK_PORT": str(port), "EDGEPACK_HOST": "127.0.0.1"},
        labels={LABEL: name},
    )
    return {"mode": "docker", "container_id": container.id, "image": image, "port": port}


def remove(client: Any, name: str) -> list[str]:
    """Remove every container labelled as the service's; returns their ids."""
    import docker.errors

    removed = []
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}={name}"}):
        with contextlib.suppress(docker.errors.NotFound):
            c.remove(force=True)
            removed.append(c.id)
    return removed


def remove_image(client: Any, image: str | None) -> None:
    """Drop an image the service no longer uses (shared layers stay; an image in use is kept)."""
    import docker.errors

    if image:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image)


def _container(client: Any, handle: Mapping[str, Any]) -> Any | None:
    import docker.errors

    try:
        return client.containers.get(handle["container_id"])
    except (docker.errors.NotFound, KeyError):
        return None


def status(client: Any, handle: Mapping[str, Any]) -> TargetStatus:
    container = _container(client, handle)
    if container is None:
        return TargetStatus(FAILED, f"container {str(handle.get('container_id', ''))[:12]} is gone")
    if container.status in ("created", "restarting"):
        return TargetStatus(TRANSITIONING)
    if container.status != "running":
        code = container.attrs.get("State", {}).get("ExitCode")
        return TargetStatus(FAILED, f"the container exited (code {code}):\n" + logs(client, handle, 40))
    return probe(int(handle["port"]))


def logs(client: Any, handle: Mapping[str, Any], num_lines: int = 5000) -> str:
    container = _container(client, handle)
    if container is None:
        return ""
    return container.logs(tail=num_lines).decode("utf-8", "replace")


def copy_app(client: Any, handle: Mapping[str, Any], app_dir: Path) -> None:
    """Copy a staged ``app`` folder over the container's app root and restart it (v1's ``reload()``)."""
    container = _container(client, handle)
    if container is None:
        raise EdgepackError("the service's container is gone: deploy it again (Model.deploy(..., overwrite=True))")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(app_dir.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(app_dir).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    container.put_archive(APP_ROOT, buf.getvalue())
    container.restart(timeout=5)


__all__ = ["LABEL", "build_image", "container_name", "copy_app", "engine", "logs", "remove", "run", "status"]
