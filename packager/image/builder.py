"""Build module images the way ko and crane do: a base image from a registry plus appended layers.

:func:`build` resolves the base per platform (pinned by digest), stages and tars the four layers of
:mod:`packager.image.spec` (cached: only what changed is re-tarred), and assembles each platform's
config and manifest plus one OCI index. :func:`push`, :func:`write_oci` and
:func:`write_docker_archives` send the result somewhere. No Docker daemon is involved;
:mod:`packager.image.docker_backend` builds the same content with one (see :func:`build_with_docker`).
:func:`run` does it all in one call for a :class:`BuildRequest` (what ``edgepack build`` runs): build
with either backend, then push to a registry or write an OCI layout / docker-archive (:class:`Destination`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packager import __version__
from packager.errors import InvalidInputError
from packager.image import content, deps, dockerfile, layout, oci, tarball
from packager.image.conda import resolve_requirements
from packager.image.inference_config import InferenceConfig
from packager.image.local_base import OciLayoutBase, is_layout_ref
from packager.image.oci import OCI_INDEX, OCI_MANIFEST
from packager.image.reference import ImageRef
from packager.image.registry import PushStats, RegistryClient
from packager.image.spec import (
    DEFAULT_BASE,
    ENTRYPOINT,
    PORT,
    PYTHON_VERSION,
    Layer,
    LayerSource,
    NullReporter,
    Platform,
    Reporter,
    cache_dir,
)
from packager.registry import Model
from packager.registry.names import parse_ref
from packager.workspace import Workspace

DEFAULT_PLATFORMS = (Platform("linux", "amd64"), Platform("linux", "arm64"))
BACKENDS = ("oci", "docker")


@dataclass
class Staged:
    """Everything both backends put in the images, before any tarring."""

    base: ImageRef | OciLayoutBase  # a registry image, or an OCI layout folder (``oci:DIR[:TAG]``)
    base_digest: str
    bases: dict[Platform, tuple[bytes, str, dict[str, Any]]]  # manifest bytes, digest, config
    dependencies: dict[Platform, LayerSource]
    shared: list[LayerSource]  # edge_module, models, app: the same on every platform
    env: dict[str, str]
    labels: dict[str, str]
    models: list[dict[str, Any]]
    client: RegistryClient | OciLayoutBase  # where the base's manifests and layers come from
    cache: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def pinned_base(self, platform: Platform) -> str:
        return str(self.base.with_digest(self.bases[platform][1]))


@dataclass
class BuildResult:
    """What :func:`build` made: one :class:`oci.PlatformImage` per platform and their index."""

    staged: Staged
    images: list[oci.PlatformImage]
    index: bytes
    index_digest: str
    seconds: dict[str, float] = field(default_factory=dict)

    def blob_path(self, digest: str) -> Path:
        """A local file for any blob the images reference (base layers are fetched into the cache)."""
        for image in self.images:
            for blob in image.blobs():
                if blob.digest != digest:
                    continue
                if blob.path is not None:
                    return blob.path
                if blob.data is not None:
                    return oci._write_blob(self.staged.cache / "layers" / "sha256", digest, blob.data)
                return self.staged.client.fetch_blob(
                    self.staged.base.repository, digest, self.staged.cache / "blobs", None, blob.size
                )
        raise KeyError(digest)

    def summary(self) -> dict[str, Any]:
        staged = self.staged
        return {
            "index_digest": self.index_digest,
            "base": f"{staged.base}@{staged.base_digest}" if staged.base_digest else str(staged.base),
            "platforms": {
                str(img.platform): {
                    "digest": img.manifest_digest,
                    "config": img.config_digest,
                    "config_size": len(img.config),
                    "base": img.base_manifest_digest,
                    "layers": [{"name": la.name, "digest": la.digest, "size": la.size} for la in img.layers],
                }
                for img in self.images
            },
            "models": staged.models,
            "seconds": {k: round(v, 3) for k, v in {**staged.seconds, **self.seconds}.items()},
        }


def parse_platforms(text: str | Sequence[str] | None) -> list[Platform]:
    """``linux/amd64,linux/arm64`` (or a list of such) → platforms; the default is amd64 + arm64."""
    if not text:
        return list(DEFAULT_PLATFORMS)
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    platforms: list[Platform] = []
    for item in items:
        if not item.strip():
            continue
        try:
            platform = Platform.parse(item)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if platform not in platforms:
            platforms.append(platform)
    if not platforms:
        raise InvalidInputError("no platform given: use e.g. --platform linux/amd64,linux/arm64")
    return platforms


def resolve_models(workspace: Workspace, refs: Sequence[Model | str]) -> list[Model]:
    """The models to package: ``NAME[:VERSION]`` references looked up in ``workspace`` (latest without a version)."""
    models: list[Model] = []
    for ref in refs:
        if isinstance(ref, Model):
            model = ref
        else:
            name, version = parse_ref(ref)
            model = Model(workspace, name, version=version)
        if any((m.name, m.version) == (model.name, model.version) for m in models):
            raise InvalidInputError(f"model {model.name}:{model.version} is given twice")
        models.append(model)
    return models


def stage(
    workspace: Workspace,
    models: Sequence[Model],
    config: InferenceConfig | None = None,
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
    base: str | None = None,
    labels: dict[str, str] | None = None,
    extra_requirements: Sequence[str] = (),
    reporter: Reporter | None = None,
    cache: Path | None = None,
) -> Staged:
    """Resolve the base for every platform and stage the four layers' files (pip runs here, cached)."""
    reporter = reporter or NullReporter()
    config = config or InferenceConfig()
    if not models:
        raise InvalidInputError("no model to package: pass at least one -m NAME[:VERSION]")
    cache = Path(cache or cache_dir())
    seconds: dict[str, float] = {}
    model_files = [f.path for m in models for f in m.files]
    requirements = [
        *resolve_requirements(config).pip,
        *extra_requirements,
        *deps.model_requirements(model_files, config.entry_script),
    ]
    # Platform checks that need no network come first (e.g. no onnxruntime wheel for arm/v7).
    for platform in platforms:
        deps.platform_tags(platform)
        deps.check_wheels(deps.runtime_requirements() + requirements, platform, PYTHON_VERSION)

    t = time.perf_counter()
    base_text = base or config.base_image_ref() or DEFAULT_BASE
    base_ref: ImageRef | OciLayoutBase
    client: RegistryClient | OciLayoutBase
    if is_layout_ref(base_text):  # no registry: the base's manifests and layers are read from the folder
        base_ref = client = OciLayoutBase.parse(base_text)
    else:
        base_ref = ImageRef.parse(base_text)
        client = RegistryClient.for_ref(base_ref, credentials=config.base_image_credentials(), cache=cache / "blobs")
    bases = {p: client.resolve_platform(base_ref, p) for p in platforms}
    base_digest = client.last_index_digest(base_ref) or ""
    seconds["resolve_base"] = time.perf_counter() - t

    t = time.perf_counter()
    model_docs = [
        {"name": m.name, "version": m.version, "framework": m.model_framework or "", "files": len(m.files)}
        for m in models
    ]
    entry_rel = content.entry_script_path(config.entry_script, config.source_directory)
    # nothing about the models in the app layer: a new model version changes the models layer only
    app_doc = {"edgepack": __version__, "entry_script": entry_rel or None, "requirements": requirements}
    shared = [
        content.stage_edge_module(),
        content.stage_models(workspace, list(models)),
        content.stage_app(config.entry_script, config.source_directory, app_doc, exclude=(workspace.path, cache)),
    ]
    with ThreadPoolExecutor(max_workers=max(1, len(platforms))) as pool:
        futures = {
            p: pool.submit(
                deps.stage_dependencies, deps.runtime_requirements() + requirements, p, cache, reporter=reporter
            )
            for p in platforms
        }
        dependencies = {p: f.result() for p, f in futures.items()}
    seconds["stage"] = time.perf_counter() - t

    env = {**config.environment_variables, **content.image_env(list(models), entry_rel)}
    all_labels = {
        "org.opencontainers.image.base.name": str(base_ref),
        "org.opencontainers.image.base.digest": base_digest,
        "org.opencontainers.image.title": ",".join(f"{m.name}:{m.version}" for m in models),
        "org.opencontainers.image.vendor": "edgepack",
        "io.edgepack.models": json.dumps(model_docs, sort_keys=True, separators=(",", ":")),
        "io.edgepack.version": __version__,
    }
    if config.description:
        all_labels["org.opencontainers.image.description"] = config.description
    all_labels.update(labels or {})
    return Staged(
        base=base_ref,
        base_digest=base_digest,
        bases=bases,
        dependencies=dependencies,
        shared=shared,
        env=env,
        labels=all_labels,
        models=model_docs,
        client=client,
        cache=cache,
        seconds=seconds,
    )


def assemble(staged: Staged, reporter: Reporter | None = None) -> BuildResult:
    """Tar the staged layers (cached by content) and write each platform's config, manifest and the index."""
    reporter = reporter or NullReporter()
    t = time.perf_counter()
    platforms = list(staged.bases)
    with ThreadPoolExecutor(max_workers=2) as pool:
        shared_futures = [pool.submit(tarball.build_layer, src, staged.cache, reporter) for src in staged.shared]
        dep_futures = {
            p: pool.submit(tarball.build_layer, staged.dependencies[p], staged.cache, reporter) for p in platforms
        }
        shared_layers: list[Layer] = [f.result() for f in shared_futures]
        dep_layers = {p: f.result() for p, f in dep_futures.items()}
    layers_seconds = time.perf_counter() - t

    images = []
    for platform in platforms:
        base_manifest, base_manifest_digest, base_config = staged.bases[platform]
        layers = [dep_layers[platform], *shared_layers]
        config_bytes = oci.image_config(
            base_config,
            layers,
            env=staged.env,
            entrypoint=ENTRYPOINT,
            cmd=None,
            labels=staged.labels,
            exposed_port=PORT,
            platform=platform,
        )
        images.append(
            oci.PlatformImage.assemble(
                platform=platform,
                config_bytes=config_bytes,
                base_layers=json.loads(base_manifest)["layers"],
                layers=layers,
                base_repo=staged.base,
                base_manifest_digest=base_manifest_digest,
                annotations={
                    "org.opencontainers.image.base.name": str(staged.base),
                    "org.opencontainers.image.base.digest": base_manifest_digest,
                },
                cache=staged.cache,
            )
        )
    index = oci.image_index(
        [(img.manifest_digest, len(img.manifest), img.platform) for img in images],
        {"org.opencontainers.image.base.name": str(staged.base)},
    )
    return BuildResult(staged, images, index, oci.digest_bytes(index), {"layers": layers_seconds})


def build(workspace: Workspace, models: Sequence[Model], **kwargs: Any) -> BuildResult:
    """:func:`stage` then :func:`assemble`: one image per platform and their index, nothing written elsewhere."""
    reporter = kwargs.get("reporter")
    config: InferenceConfig | None = kwargs.get("config")
    if config is not None and config.needs_docker_backend:
        raise InvalidInputError(
            "the inference config has extraDockerfileSteps, which only a Docker build can run: "
            "use --backend docker (or drop the steps)"
        )
    return assemble(stage(workspace, models, **kwargs), reporter)


# -- outputs --------------------------------------------------------------------------------------------
@dataclass
class PushResult:
    reference: str
    index_digest: str
    stats: PushStats
    manifest_bytes: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "bytes_sent": self.stats.bytes_sent,
            "manifest_bytes": self.manifest_bytes,
            "blobs": self.stats.blobs,
            "blobs_uploaded": self.stats.uploaded,
            "blobs_skipped": self.stats.existed,
            "blobs_mounted": self.stats.mounted,
            "uploaded": sorted(self.stats.uploaded_digests),
            "seconds": round(self.seconds, 3),
        }


def push(
    result: BuildResult,
    target: str | ImageRef,
    reporter: Reporter | None = None,
    credentials: tuple[str, str] | None = None,
) -> PushResult:
    """Push every blob the registry lacks (HEAD first, mount from the base's repository when it is on the
    same registry), then the per-platform manifests by digest and the index under the tag."""
    t0 = time.perf_counter()
    ref = ImageRef.parse(target) if isinstance(target, str) else target
    staged = result.staged
    with RegistryClient.for_ref(ref, credentials=credentials, cache=staged.cache / "blobs") as client:
        if isinstance(staged.base, OciLayoutBase):  # base layers are uploaded from the layout's (verified) files
            blobs = [_local_base_blob(blob, result) for img in result.images for blob in img.blobs()]
        else:
            source: str | ImageRef = staged.base.repository if staged.base.same_registry(ref) else staged.base
            blobs = [blob for img in result.images for blob in img.blobs(base_source=source)]
        stats = client.push_blobs(ref.repository, blobs, reporter)
        sent = 0
        for img in result.images:
            client.put_manifest(ref.repository, img.manifest_digest, img.manifest, OCI_MANIFEST)
            sent += len(img.manifest)
        client.put_manifest(ref.repository, ref.tag or result.index_digest, result.index, OCI_INDEX)
        sent += len(result.index)
    reference = (
        f"{ref.with_tag(ref.tag)}@{result.index_digest}" if ref.tag else str(ref.with_digest(result.index_digest))
    )
    return PushResult(reference, result.index_digest, stats, sent, time.perf_counter() - t0)


def _local_base_blob(blob: oci.BlobSpec, result: BuildResult) -> oci.BlobSpec:
    if blob.path is not None or blob.data is not None:
        return blob
    return replace(blob, path=result.blob_path(blob.digest), source=None)


def write_oci(result: BuildResult, directory: Path, ref_name: str = "latest") -> str:
    """Write an OCI image layout folder (atomically replaced); returns the index digest."""
    return layout.write_oci_layout(
        Path(directory),
        result.images,
        {"org.opencontainers.image.base.name": str(result.staged.base)},
        result.blob_path,
        ref_name=ref_name,
    )


def docker_archive_paths(file: Path, platforms: Sequence[Platform]) -> dict[Platform, Path]:
    """One tarball per platform: ``file`` itself for one platform, else ``<stem>-<arch>[<variant>]<suffix>``."""
    file = Path(file)
    if len(platforms) == 1:
        return {platforms[0]: file}
    suffix = "".join(file.suffixes) or ".tar"
    stem = file.name[: -len(suffix)] if file.name.endswith(suffix) else file.name
    return {p: file.with_name(f"{stem}-{p.architecture}{p.variant}{suffix}") for p in platforms}


def write_docker_archives(result: BuildResult, file: Path, tags: Sequence[str]) -> dict[str, str]:
    """Write a ``docker load`` tarball per platform; returns ``{platform: path}``."""
    paths = docker_archive_paths(file, [img.platform for img in result.images])
    out = {}
    for img in result.images:
        layout.write_docker_archive(paths[img.platform], img, list(tags), result.blob_path)
        out[str(img.platform)] = str(paths[img.platform])
    return out


# -- the Docker backend -----------------------------------------------------------------------------------
def write_contexts(staged: Staged, directory: Path, extra_steps: str | None = None) -> dict[Platform, Path]:
    """A Dockerfile + context per platform (``directory`` itself for one platform, else ``directory/<os>-<arch>``)."""
    directory = Path(directory)
    platforms = list(staged.bases)
    out = {}
    for platform in platforms:
        target = directory if len(platforms) == 1 else directory / str(platform).replace("/", "-")
        out[platform] = dockerfile.write_context(
            target,
            staged.pinned_base(platform),
            [staged.dependencies[platform], *staged.shared],
            staged.env,
            list(ENTRYPOINT),
            staged.labels,
            PORT,
            extra_steps,
            platform=platform,
        )
    return out


def build_with_docker(
    staged: Staged,
    target: str | ImageRef,
    extra_steps: str | None = None,
    reporter: Reporter | None = None,
    credentials: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Build each platform with the Docker daemon (classic builder), push them, then PUT the index over them."""
    from packager.image import docker_backend

    t0 = time.perf_counter()
    ref = ImageRef.parse(target) if isinstance(target, str) else target
    if not ref.tag:
        raise InvalidInputError(f"the Docker backend needs a tag to push: -t {ref}:TAG")
    if isinstance(staged.base, OciLayoutBase):
        raise InvalidInputError(
            f"the Docker backend pulls its base from a registry, not {staged.base}: "
            "use --backend oci or a registry base"
        )
    with tempfile.TemporaryDirectory(prefix="edgepack-docker-") as tmp:
        contexts = write_contexts(staged, Path(tmp), extra_steps)
        digests = docker_backend.build_and_push(contexts, str(ref.with_tag(ref.tag)), reporter)
    with RegistryClient.for_ref(ref, credentials=credentials) as client:
        entries = []
        for platform, digest in digests.items():
            data, _media_type, _ = client.get_manifest(ref.with_digest(digest))
            entries.append((digest, len(data), platform, _media_type))
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": mt, "digest": d, "size": n, "platform": p.as_oci()} for d, n, p, mt in entries],
        }
        index = oci.canonical_json(doc)
        client.put_manifest(ref.repository, ref.tag, index, OCI_INDEX)
    index_digest = oci.digest_bytes(index)
    return {
        "index_digest": index_digest,
        "reference": f"{ref.with_tag(ref.tag)}@{index_digest}",
        "platforms": {str(p): {"digest": d} for p, d in digests.items()},
        "seconds": {
            **{k: round(v, 3) for k, v in staged.seconds.items()},
            "docker": round(time.perf_counter() - t0, 3),
        },
    }


# -- one call: build, then push or write ----------------------------------------------------------------
@dataclass(frozen=True)
class Destination:
    """Where :func:`run` puts the images: pushed to a registry, an OCI layout folder, or docker-archive files.

    Make one with :meth:`registry`, :meth:`oci_layout` or :meth:`docker_archive` (or :meth:`from_options`
    from the CLI's ``-t``/``--push``/``--output``).
    """

    kind: str  # "registry", "oci" or "docker-archive"
    ref: ImageRef | None = None  # registry: where the index is pushed
    path: Path | None = None  # oci: the layout folder; docker-archive: the tarball (one per platform)
    tag: str | None = None  # oci: the layout's ref name; docker-archive: the tag `docker load` gives

    @classmethod
    def registry(cls, ref: str | ImageRef) -> Destination:
        return cls("registry", ref=ImageRef.parse(ref) if isinstance(ref, str) else ref)

    @classmethod
    def oci_layout(cls, directory: str | Path, ref_name: str | None = None) -> Destination:
        """An OCI layout folder; ``ref_name`` (default ``latest``) is what ``oci:DIR:<ref_name>`` selects."""
        return cls("oci", path=Path(directory), tag=ref_name)

    @classmethod
    def docker_archive(cls, file: str | Path, tag: str | ImageRef | None = None) -> Destination:
        """``docker load`` tarballs: ``file`` for one platform, else ``<stem>-<arch><suffix>`` per platform."""
        ref = ImageRef.parse(tag) if isinstance(tag, str) else tag
        return cls("docker-archive", path=Path(file), tag=str(ref.familiar()) if ref else None)

    @classmethod
    def from_options(cls, tag: str | None, push: bool, output: str | None) -> Destination:
        """The destination ``edgepack build`` flags name: ``--push`` with ``-t REF``, or ``--output oci:DIR``
        / ``--output docker-archive:FILE`` (``-t`` then names the image there)."""
        kind, path = _parse_output(output) if output else ("", None)
        if push and kind:
            raise InvalidInputError("give either --push or --output, not both")
        if not push and not kind:
            raise InvalidInputError("say where the image goes: --push (with -t REGISTRY/REPO:TAG) or --output oci:DIR")
        if push:
            if not tag:
                raise InvalidInputError("--push needs -t REGISTRY/REPO:TAG")
            return cls.registry(tag)
        assert path is not None
        return cls.oci_layout(path, tag) if kind == "oci" else cls.docker_archive(path, tag)


def _parse_output(text: str) -> tuple[str, Path]:
    kind, sep, path = text.partition(":")
    if not sep or kind not in ("oci", "docker-archive") or not path:
        raise InvalidInputError(f"--output {text!r}: use oci:DIR or docker-archive:FILE")
    return kind, Path(path)


@dataclass(frozen=True)
class BuildRequest:
    """What :func:`run` builds and where it goes; checked when made (nothing runs for a request that cannot)."""

    models: Sequence[Model | str]  # Model objects or NAME[:VERSION] references
    destination: Destination
    config: InferenceConfig = field(default_factory=InferenceConfig)
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS
    base: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    extra_requirements: Sequence[str] = ()
    backend: str = "oci"  # "oci": no daemon; "docker": the Docker daemon builds and pushes
    credentials: tuple[str, str] | None = None  # for the destination registry (default: ~/.docker/config.json)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "docker" and self.destination.kind != "registry":
            raise InvalidInputError("--backend docker pushes what it builds: use --push (or `edgepack package -o DIR`)")
        if self.backend == "oci" and self.config.needs_docker_backend:
            raise InvalidInputError(
                "the inference config has extraDockerfileSteps, which only a Docker build can run: use --backend docker"
            )


def run(workspace: Workspace, request: BuildRequest, reporter: Reporter | None = None) -> dict[str, Any]:
    """Build ``request``'s images and push or write them; returns the summary ``edgepack build --json`` prints.

    E.g. ``run(ws, BuildRequest(["digits:1"], Destination.registry("127.0.0.1:5000/models/digits:1")))``.
    """
    reporter = reporter or NullReporter()
    staged = stage(
        workspace, resolve_models(workspace, request.models), config=request.config, platforms=request.platforms,
        base=request.base, labels=dict(request.labels), extra_requirements=request.extra_requirements,
        reporter=reporter,
    )  # fmt: skip
    dest = request.destination
    if request.backend == "docker":
        assert dest.ref is not None
        return build_with_docker(staged, dest.ref, request.config.extra_steps_text, reporter, request.credentials)
    result = assemble(staged, reporter)
    doc = result.summary()
    if dest.kind == "registry":
        assert dest.ref is not None
        pushed = push(result, dest.ref, reporter, request.credentials)
        doc["reference"] = pushed.reference
        doc["push"] = pushed.summary()
    elif dest.kind == "oci":
        assert dest.path is not None
        write_oci(result, dest.path, dest.tag or "latest")  # skopeo/podman: oci:DIR:<tag as given>
        doc["oci_layout"] = str(dest.path)
    else:
        assert dest.path is not None
        doc["docker_archives"] = write_docker_archives(result, dest.path, [dest.tag] if dest.tag else [])
    return doc


__all__ = [
    "BACKENDS",
    "DEFAULT_BASE",
    "DEFAULT_PLATFORMS",
    "BuildRequest",
    "BuildResult",
    "Destination",
    "PushResult",
    "Staged",
    "assemble",
    "build",
    "build_with_docker",
    "docker_archive_paths",
    "parse_platforms",
    "push",
    "resolve_models",
    "run",
    "stage",
    "write_contexts",
    "write_docker_archives",
    "write_oci",
]
