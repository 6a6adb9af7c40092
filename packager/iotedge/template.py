"""iotedgedev-compatible deployment templates: ``deployment.template.json`` → a deployment manifest.

Placeholders, as iotedgedev (and the VS Code IoT Edge extension) expand them:

- ``${MODULES.<name>}``: the module's image for the default platform (``DEFAULT_PLATFORM``, else amd64);
- ``${MODULES.<name>.<platform>}``: its image for a platform (``amd64``, ``arm64v8``, ``amd64.debug``...);
- ``${MODULEDIR<path>}`` / ``${MODULEDIR<path>.<platform>}``: the same for the module folder at ``path``;
- ``${VAR}`` and ``$VAR``: from the environment, else the project's ``.env`` file.

A module's images come from ``modules`` (``{name: image}`` or ``{name: {platform: image}}``), else from
``modules/<name>/module.json`` next to the template (``image.repository:image.tag.version-<platform>``).
An unexpanded ``${...}`` is an error naming it and its JSON path; a bare ``$name`` that is not a variable
stays (routes say ``$upstream``). ``createOptions`` written as a JSON object become the edge agent's
string chunks, and the ``$schema-template`` key is dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError
from packager.iotedge import create_options as co

MAX_TEMPLATE_BYTES = 4 * 2**20
MAX_MODULE_JSON_BYTES = 2**20
DEFAULT_PLATFORM = "amd64"
_BRACED = re.compile(r"\$\{([^}]*)\}")
_BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_MODULEDIR = re.compile(r"MODULEDIR<([^>]+)>(?:\.(.+))?")
_DOTENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*")
ImageMap = Mapping[str, str | Mapping[str, str]]


def read_text_bounded(path: Path, limit: int, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InvalidInputError(f"{what} {path} is over {limit // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what} {path} is not UTF-8 text") from None


def _load_json(path: Path, limit: int, what: str) -> Any:
    try:
        return json.loads(read_text_bounded(path, limit, what))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def load_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (``#`` comments, optional quotes, ``export``); ``{}`` if absent."""
    p = Path(path)
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    for number, line in enumerate(read_text_bounded(p, 2**20, ".env file").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.fullmatch(line)
        if not m:
            raise InvalidInputError(f"{p}:{number}: not KEY=VALUE")
        key, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def project_env(directory: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a template sees: the project's ``.env``, overridden by ``env`` (default: the environment)."""
    return {**load_dotenv(Path(directory) / ".env"), **(os.environ if env is None else env)}


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``$VAR`` from ``env``; unknown ones are left as they are."""
    text = _BRACED.sub(lambda m: env.get(m.group(1), m.group(0)), text)
    return _BARE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


# ----------------------------------------------------------------------------------------- module.json
@dataclass(frozen=True)
class ProjectModule:
    """A module of an iotedgedev project (``modules/<name>/module.json``)."""

    name: str
    directory: Path
    repository: str
    version: str
    platforms: dict[str, str] = field(default_factory=dict)  # platform → Dockerfile (relative to directory)
    build_options: tuple[str, ...] = ()
    context_path: str = "./"

    def image(self, platform: str) -> str:
        """``repository:version-platform``, as iotedgedev tags it."""
        return f"{self.repository}:{self.version}-{platform}"

    def images(self) -> dict[str, str]:
        return {p: self.image(p) for p in self.platforms}


def load_module_json(directory: str | os.PathLike[str], env: Mapping[str, str]) -> ProjectModule:
    """Read ``<directory>/module.json`` (``image.repository``, ``image.tag.version``, ``image.tag.platforms``)."""
    folder = Path(directory)
    path = folder / "module.json"
    doc = _load_json(path, MAX_MODULE_JSON_BYTES, "module.json")
    image = doc.get("image") if isinstance(doc, dict) else None
    tag = image.get("tag") if isinstance(image, dict) else None
    if not isinstance(image, dict) or not isinstance(image.get("repository"), str) or not isinstance(tag, dict):
        raise InvalidInputError(f"{path}: expected image.repository and image.tag (version, platforms)")
    platforms = tag.get("platforms") or {}
    if not isinstance(platforms, dict) or not all(isinstance(v, str) for v in platforms.values()):
        raise InvalidInputError(f"{path}: image.tag.platforms must map platforms to Dockerfiles")
    repository = expand_vars(image["repository"], env).strip()
    version = expand_vars(str(tag.get("version") or "0.0.1"), env).strip()
    for label, value in (("image.repository", repository), ("image.tag.version", version)):
        left = _BRACED.search(value) or _BARE.search(value)
        if left:
            raise InvalidInputError(f"{path}: {label}: unexpanded placeholder {left.group(0)}: set it in .env")
    build_options = image.get("buildOptions") or []
    return ProjectModule(
        name=folder.name,
        directory=folder,
        repository=repository.lower(),
        version=version,
        platforms={str(k): str(v) for k, v in platforms.items()},
        build_options=tuple(str(o) for o in build_options) if isinstance(build_options, list) else (),
        context_path=str(image.get("contextPath") or "./"),
    )


def project_modules(directory: str | os.PathLike[str], env: Mapping[str, str]) -> dict[str, ProjectModule]:
    """Every ``modules/<name>/module.json`` of an iotedgedev project folder."""
    root = Path(directory) / "modules"
    if not root.is_dir():
        return {}
    found = {}
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.is_symlink() and (folder / "module.json").is_file():
            found[folder.name] = load_module_json(folder, env)
    return found


# ----------------------------------------------------------------------------------------- expansion
def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


class _Expander:
    def __init__(
        self, root: Path, env: Mapping[str, str], modules: ImageMap, default_platform: str, used: dict[str, str]
    ) -> None:
        self.root, self.env, self.modules, self.default = root, env, modules, default_platform
        self.used = used  # placeholder → image, for the report

    def module_image(self, name: str, platform: str | None, path: str, placeholder: str) -> str:
        platform = platform or self.default
        images = self.modules.get(name)
        if images is None:
            raise InvalidInputError(
                f"{path}: ${{{placeholder}}}: no module {name!r}: add modules/{name}/module.json or give its image"
            )
        if isinstance(images, str):
            return images
        if platform not in images:
            raise InvalidInputError(
                f"{path}: ${{{placeholder}}}: module {name!r} has no {platform} image "
                f"(it has {', '.join(images) or 'none'})"
            )
        return images[platform]

    def placeholder(self, inner: str, path: str) -> str:
        if inner.startswith("MODULES."):
            name, _, platform = inner[len("MODULES.") :].partition(".")
            image = self.module_image(name, platform or None, path, inner)
        elif (m := _MODULEDIR.fullmatch(inner)) is not None:
            folder = (self.root / m.group(1)).resolve()
            module = load_module_json(folder, self.env)
            images = self.modules.get(module.name)
            image = (
                self.module_image(module.name, m.group(2), path, inner)
                if images is not None
                else module.image(m.group(2) or self.default)
            )
        elif inner in self.env:
            return self.env[inner]
        else:
            raise InvalidInputError(
                f"{path}: unexpanded placeholder ${{{inner}}}: set {inner or 'the variable'} in the environment "
                "or .env, or write the value"
            )
        self.used["${" + inner + "}"] = image
        return image

    def text(self, value: str, path: str) -> str:
        value = _BRACED.sub(lambda m: self.placeholder(m.group(1), path), value)
        return _BARE.sub(lambda m: self.env.get(m.group(1), m.group(0)), value)

    def walk(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                new_key = _BRACED.sub(lambda m, k=key: self.placeholder(m.group(1), _join(path, k)), key)
                out[new_key] = self.walk(item, _join(path, new_key))
            return out
        if isinstance(value, list):
            return [self.walk(item, _join(path, i)) for i, item in enumerate(value)]
        if isinstance(value, str):
            return self.text(value, path)
        return value


def _object_create_options(doc: Any) -> None:
    """Module settings whose createOptions is a JSON object (iotedgedev allows it) → string chunks."""
    try:
        agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    except (KeyError, TypeError):
        return
    for group in ("systemModules", "modules"):
        modules = agent.get(group) if isinstance(agent, dict) else None
        for module in modules.values() if isinstance(modules, dict) else ():
            settings = module.get("settings") if isinstance(module, dict) else None
            if isinstance(settings, dict) and isinstance(settings.get("createOptions"), dict):
                options = settings.pop("createOptions")
                settings.update(co.to_settings(options))


def expand_template(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    modules: ImageMap | None = None,
    *,
    default_platform: str | None = None,
    used: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The deployment manifest ``path`` (a ``deployment.template.json``) describes, every placeholder expanded.

    ``env``: the variables (default: the environment), over the ``.env`` next to the template.
    ``modules``: ``{name: image}`` or ``{name: {platform: image}}`` (e.g. pinned digests of what was pushed),
    over the images ``modules/<name>/module.json`` names. ``used`` collects ``{placeholder: image}``."""
    template = Path(path)
    root = template.parent
    variables = project_env(root, env)
    images: dict[str, Any] = {name: m.images() for name, m in project_modules(root, variables).items()}
    images.update(modules or {})
    platform = default_platform or variables.get("DEFAULT_PLATFORM") or DEFAULT_PLATFORM
    doc = _load_json(template, MAX_TEMPLATE_BYTES, "template")
    if not isinstance(doc, dict):
        raise InvalidInputError(f"template {template} is not a JSON object")
    doc.pop("$schema-template", None)
    try:
        out = _Expander(root, variables, images, platform, used if used is not None else {}).walk(doc, "")
    except RecursionError:
        raise InvalidInputError(f"template {template} is nested too deeply") from None
    _object_create_options(out)
    return out


__all__ = [
    "ProjectModule",
    "expand_template",
    "expand_vars",
    "load_dotenv",
    "load_module_json",
    "project_env",
    "project_modules",
]
