"""Build and push an iotedgedev project's modules with the Docker daemon, as ``iotedgedev push`` does.

Each module the template uses (``${MODULES.<name>[.<platform>]}``) is built from its
``modules/<name>/<Dockerfile.platform>`` in its ``contextPath``, tagged ``repository:version-platform``
and pushed; the result maps it to the pushed digest, ready for :func:`template.expand_template`'s
``modules``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from packager.errors import InvalidInputError
from packager.image.reference import ImageRef
from packager.image.spec import Platform, Reporter
from packager.iotedge.template import (
    DEFAULT_PLATFORM,
    MAX_TEMPLATE_BYTES,
    project_env,
    project_modules,
    read_text_bounded,
)

DOCKER_PLATFORMS = {
    "amd64": "linux/amd64",
    "arm64v8": "linux/arm64",
    "arm64": "linux/arm64",
    "arm32v7": "linux/arm/v7",
}
_MODULES_RE = re.compile(r"\$\{MODULES\.([^}.]+)(?:\.([^}]+))?\}")


def docker_platform(platform: str) -> Platform:
    """iotedgedev's platform names (``amd64``, ``arm64v8``, ``arm32v7``, ``amd64.debug``) → a Docker platform."""
    base = platform.split(".", 1)[0]
    if base not in DOCKER_PLATFORMS:
        raise InvalidInputError(f"platform {platform!r}: edgepack builds {', '.join(DOCKER_PLATFORMS)} (Linux)")
    return Platform.parse(DOCKER_PLATFORMS[base])


def used_modules(template: str | os.PathLike[str], default_platform: str) -> set[tuple[str, str]]:
    """``(module, platform)`` pairs the template's ``${MODULES...}`` placeholders name."""
    text = read_text_bounded(Path(template), MAX_TEMPLATE_BYTES, "template")
    return {(m.group(1), m.group(2) or default_platform) for m in _MODULES_RE.finditer(text)}


def build_project(
    template: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    default_platform: str | None = None,
    reporter: Reporter | None = None,
) -> dict[str, dict[str, str]]:
    """Build and push every module image ``template`` uses; ``{module: {platform: repo@digest}}``."""
    from packager.image import docker_backend

    path = Path(template)
    variables = project_env(path.parent, env)
    platform_default = default_platform or variables.get("DEFAULT_PLATFORM") or DEFAULT_PLATFORM
    modules = project_modules(path.parent, variables)
    out: dict[str, dict[str, str]] = {}
    dc = None
    for name, platform in sorted(used_modules(path, platform_default)):
        module = modules.get(name)
        if module is None:
            raise InvalidInputError(f"${{MODULES.{name}}}: no modules/{name}/module.json next to {path.name}")
        if platform not in module.platforms:
            raise InvalidInputError(
                f"module {name}: module.json has no {platform} Dockerfile (it has {', '.join(module.platforms)})"
            )
        context = (module.directory / module.context_path).resolve()
        dockerfile = (module.directory / module.platforms[platform]).resolve()
        if not dockerfile.is_file():
            raise InvalidInputError(f"module {name}: {dockerfile} does not exist")
        inside = dockerfile.is_relative_to(context)
        tag = module.image(platform)
        dc = dc or docker_backend.client()
        docker_backend.build_platform(
            context,
            tag,
            docker_platform(platform),
            reporter,
            docker_client=dc,
            dockerfile=str(dockerfile.relative_to(context)) if inside else str(dockerfile),
        )
        digest = docker_backend.push(tag, reporter, docker_client=dc)
        ref = ImageRef.parse(tag)
        out.setdefault(name, {})[platform] = str(ImageRef(ref.registry, ref.repository, None, digest))
    return out


__all__ = ["build_project", "docker_platform", "used_modules"]
