"""The Docker backend: build contexts from :mod:`packager.image.dockerfile` with a Docker daemon, then push.

Needed for ``extraDockerfileSteps`` (``RUN`` lines need a container). Each platform is built on
its own with the classic builder (``docker build --platform``, no buildx; foreign platforms run
under qemu binfmt) and pushed under its own tag: ``<repo>:<tag>-<arch>[<variant>]``, e.g.
``myreg/digits:1-amd64``, ``myreg/digits:1-arm64``, ``myreg/digits:1-armv7``. The multi-arch
index over the pushed digests is written by the caller with the registry client.

Uses the docker SDK (the ``cloud`` extra), imported only when a build starts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from packager.errors import EdgepackError, InvalidInputError
from packager.image.spec import NullReporter, Platform, Reporter

log = logging.getLogger(__name__)
LogFn = Callable[[str], None]
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_DIGEST_RE = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def client() -> Any:
    """A docker SDK client from the environment (``DOCKER_HOST``...), checked with a ping."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise EdgepackError(
            "the Docker backend needs the docker SDK: pip install 'edgepack[cloud]' (or pip install docker)"
        ) from None
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except docker.errors.DockerException as exc:
        raise EdgepackError(
            f"cannot reach the Docker daemon ({exc}): start dockerd, or set DOCKER_HOST to a running daemon, "
            "or build without --backend docker"
        ) from None
    return c


def platform_tag(tag: str, platform: Platform) -> str:
    """The per-platform tag: ``<tag>-<arch><variant>`` (``1.0-amd64``, ``1.0-arm64``, ``1.0-armv7``)."""
    suffix = f"{platform.architecture}{platform.variant}"
    out = f"{tag}-{suffix}"
    if len(out) > 128:
        raise InvalidInputError(f"tag {tag!r} is too long to add -{suffix} (tags are at most 128 characters)")
    return out


def split_repo_tag(repo_tag: str) -> tuple[str, str]:
    """``registry/repo:tag`` → ``("registry/repo", "tag")`` (``latest`` when no tag); digests are refused."""
    if "@" in repo_tag:
        raise InvalidInputError(f"{repo_tag}: push to a tag, not a digest (e.g. registry/repo:1.0)")
    slash = repo_tag.rfind("/")
    colon = repo_tag.rfind(":")
    if colon > slash:
        repo, tag = repo_tag[:colon], repo_tag[colon + 1 :]
    else:
        repo, tag = repo_tag, "latest"
    if not repo or not tag:
        raise InvalidInputError(f"{repo_tag!r} is not an image reference like registry/repo:tag")
    return repo, tag


def _message(chunk: Mapping[str, Any]) -> str:
    detail = chunk.get("errorDetail") or {}
    return str(detail.get("message") or chunk.get("error") or "").strip()


def _stream_build(chunks: Iterator[Mapping[str, Any]], platform: Platform, emit: LogFn) -> str:
    image_id = ""
    step = ""
    tail: list[str] = []
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            output = "\n".join(tail[-10:])
            if "cannot overwrite digest" in _message(chunk).lower():
                output = (
                    "the base is pinned by its index digest, which Docker keeps for one platform only: "
                    "pin FROM to the platform's manifest digest"
                )
            raise EdgepackError(
                f"docker build for {platform} failed at {step or 'the start'}: {_message(chunk)}"
                + (f"\n{output}" if output else "")
            )
        text = chunk.get("stream")
        if text:
            for line in str(text).splitlines():
                line = line.rstrip()
                if not line:
                    continue
                m = _STEP_RE.match(line)
                if m:
                    step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)})"
                    tail = []
                else:
                    tail.append(line)
                emit(line)
        elif chunk.get("status"):
            status = str(chunk["status"])
            ident = chunk.get("id")
            if not chunk.get("progressDetail"):
                emit(f"{ident}: {status}" if ident else status)
        aux = chunk.get("aux")
        if isinstance(aux, Mapping) and aux.get("ID"):
            image_id = str(aux["ID"])
    if not image_id:
        raise EdgepackError(f"docker build for {platform} ended without an image id; see the build output above")
    return image_id


def _check_platform(inspect: Mapping[str, Any], platform: Platform) -> None:
    parts = [str(inspect.get("Os") or ""), str(inspect.get("Architecture") or "")]
    if inspect.get("Variant"):
        parts.append(str(inspect["Variant"]))
    built = Platform.parse("/".join(parts)) if all(parts) else None
    if built != platform:
        raise EdgepackError(
            f"docker build for {platform} made a {built or 'unknown'} image: the daemon reused a local base image "
            "of another platform. Pin FROM to the platform's own manifest digest (not the index digest)"
        )


def build_platform(
    context_dir: Path | str,
    tag: str,
    platform: Platform,
    reporter: Reporter | None = None,
    log_line: LogFn | None = None,
    docker_client: Any = None,
    pull: bool = False,
    dockerfile: str = "Dockerfile",
) -> str:
    """``docker build --platform <platform> -t <tag>`` of ``context_dir`` (classic builder); the image id.

    The context's ``FROM`` must pin the base by the *platform's* manifest digest: Docker 20.10 keeps
    one local image per digest, so with the index digest it reuses whichever platform it pulled first
    (checked after the build: a wrong architecture is an error) or fails with "Cannot overwrite digest".
    Build output goes to ``log_line`` (default: this module's logger, INFO). A failing step raises
    :class:`EdgepackError` with the step and its last output lines.
    """
    reporter = reporter or NullReporter()
    emit = log_line or (lambda line: log.info("%s", line))
    ctx = Path(context_dir)
    if not (ctx / dockerfile).is_file():
        raise InvalidInputError(f"{ctx} has no {dockerfile}; write the context first")
    dc = docker_client or client()
    import docker.errors

    task = f"docker build {platform}"
    reporter.start(task)
    try:
        chunks = dc.api.build(
            path=str(ctx),
            dockerfile=dockerfile,
            tag=tag,
            platform=str(platform),
            rm=True,
            forcerm=True,
            pull=pull,
            decode=True,
            network_mode="host",
        )
        image_id = _stream_build(chunks, platform, emit)
        _check_platform(dc.api.inspect_image(image_id), platform)
    except docker.errors.APIError as exc:
        raise EdgepackError(f"docker build for {platform} failed: {exc.explanation or exc}") from None
    reporter.done(task, image_id[:19])
    return image_id


def _push_error(repo: str, message: str) -> EdgepackError:
    registry = repo.split("/", 1)[0] if "/" in repo else "docker.io"
    low = message.lower()
    if any(s in low for s in ("unauthorized", "authentication required", "denied", "no basic auth credentials")):
        return EdgepackError(
            f"registry {registry} refused the push of {repo}: {message}; run `docker login {registry}`"
        )
    if "server gave http response to https client" in low:
        return EdgepackError(
            f"registry {registry} speaks plain HTTP: add it to the daemon's insecure-registries "
            f"(/etc/docker/daemon.json) and restart dockerd ({message})"
        )
    if any(s in low for s in ("connection refused", "no such host", "dial tcp", "i/o timeout", "no route to host")):
        return EdgepackError(f"cannot reach registry {registry} to push {repo}: {message}; check the address and port")
    return EdgepackError(f"docker push of {repo} failed: {message}")


def push(tag: str, reporter: Reporter | None = None, log_line: LogFn | None = None, docker_client: Any = None) -> str:
    """``docker push <repo:tag>``; the pushed manifest's digest (``sha256:...``)."""
    reporter = reporter or NullReporter()
    emit = log_line or (lambda line: log.info("%s", line))
    repo, tg = split_repo_tag(tag)
    dc = docker_client or client()
    import docker.errors

    task = f"docker push {tag}"
    reporter.start(task)
    digest = ""
    progress: dict[str, int] = {}
    try:
        for chunk in dc.api.push(repo, tag=tg, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                raise _push_error(repo, _message(chunk))
            aux = chunk.get("aux")
            if isinstance(aux, Mapping) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = str(chunk.get("status") or "")
            m = _DIGEST_RE.search(status)
            if m:
                digest = digest or m.group(1)
            detail = chunk.get("progressDetail") or {}
            ident = chunk.get("id")
            if ident and status == "Pushing" and detail.get("current"):
                current = int(detail["current"])
                reporter.advance(task, max(0, current - progress.get(ident, 0)))
                progress[ident] = current
            elif status:
                emit(f"{ident}: {status}" if ident else status)
    except docker.errors.APIError as exc:
        raise _push_error(repo, str(exc.explanation or exc)) from None
    if not digest:
        raise EdgepackError(f"docker push of {tag} reported no digest; check the daemon's log")
    reporter.done(task, digest[:19])
    return digest


def build_and_push(
    contexts_per_platform: Mapping[Platform, Path | str],
    repo_tag: str,
    reporter: Reporter | None = None,
    log_line: LogFn | None = None,
) -> dict[Platform, str]:
    """Build each platform's context (one at a time) and push it as ``<repo>:<tag>-<arch>``.

    Returns ``{platform: manifest digest}``; the caller writes the index over them at ``repo:tag``.
    """
    if not contexts_per_platform:
        raise InvalidInputError("no platform to build: give at least one context")
    repo, tag = split_repo_tag(repo_tag)
    dc = client()
    tags = {p: f"{repo}:{platform_tag(tag, p)}" for p in contexts_per_platform}
    for platform, ctx in contexts_per_platform.items():
        build_platform(ctx, tags[platform], platform, reporter, log_line, dc)
    return {p: push(tags[p], reporter, log_line, dc) for p in contexts_per_platform}


__all__ = ["build_and_push", "build_platform", "client", "platform_tag", "push", "split_repo_tag"]
