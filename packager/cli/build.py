"""``edgepack build``, ``build-and-push`` and ``package``: module images without a Docker daemon.

``build`` makes one image per platform from a base image plus four deterministic layers and either
pushes them with an OCI index (``--push``), writes an OCI layout folder (``--output oci:DIR``) or a
``docker load`` tarball per platform (``--output docker-archive:FILE``). ``--backend docker`` builds
the same content with the Docker daemon instead (needed for ``extraDockerfileSteps``).
``package -o DIR`` writes the Dockerfile and context only, like v1's ``Model.package(generate_dockerfile=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_module.app_paths import AppPathError, resolve_app_paths
from packager.cli.manifest_gen import MANIFEST_FLAGS, manifest_options
from packager.cli.model import open_workspace
from packager.cli.output import RichReporter, console, human_size, markup_safe, print_json
from packager.errors import InvalidInputError
from packager.image import builder
from packager.image.inference_config import InferenceConfig


def _config(inference_config: str | None, entry_script: str | None, source_dir: str | None) -> InferenceConfig:
    if inference_config and (entry_script or source_dir):
        raise InvalidInputError("give either --inference-config or --entry-script/--source-dir, not both")
    if inference_config:
        return InferenceConfig.load(inference_config)
    try:  # v1's rule, with the flags' names in the errors
        paths = resolve_app_paths(entry_script, source_dir)
    except AppPathError as exc:
        raise InvalidInputError(str(exc)) from None
    return InferenceConfig(entry_script=paths.entry_script, source_directory=paths.source_dir)


def _labels(items: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"label {item!r} is not KEY=VALUE")
        labels[key.strip()] = value
    return labels


def _credentials(username: str | None, password: str | None) -> tuple[str, str] | None:
    if bool(username) != bool(password):
        raise InvalidInputError("give --username and --password together (or neither, to use ~/.docker/config.json)")
    return (username, password) if username and password else None


def image_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``build``, ``build-and-push`` and ``package`` share."""
    options = [
        click.option(
            "-m", "--model", "models", multiple=True, required=True, metavar="NAME[:VERSION]",
            help="Registered model to put in the image (repeatable; latest version when none is given).",
        ),
        click.option(
            "--inference-config", type=click.Path(exists=True, dir_okay=False),
            help="Azure ML v1 inferenceconfig.json (entryScript, sourceDirectory, condaFile, baseImage, ...).",
        ),
        click.option(
            "--entry-script", metavar="FILE",
            help="score.py with init()/run(); relative to --source-dir when given (as in Azure ML v1).",
        ),
        click.option("--source-dir", type=click.Path(exists=True, file_okay=False), help="Folder with the app's code."),
        click.option(
            "-r", "--requirement", "requirements", multiple=True, metavar="REQ",
            help="Extra pip requirement for the image (repeatable), e.g. -r scikit-learn==1.5.2.",
        ),
        click.option(
            "--platform", "platforms", default="linux/amd64,linux/arm64", show_default=True,
            help="Comma-separated platforms: linux/amd64, linux/arm64.",
        ),
        click.option("--base", help="Base image: a registry reference or an OCI layout folder oci:DIR[:TAG] "
                     f"[default: inference config's baseImage, or {builder.DEFAULT_BASE}]."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Extra image label (repeatable)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _report(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(doc)
        return
    for platform, info in doc.get("platforms", {}).items():
        console.print(f"{platform:<14} {info['digest']}")
    if "index_digest" in doc:
        console.print(f"{'index':<14} {doc['index_digest']}")
    if "reference" in doc:
        console.print(f"pushed {markup_safe(doc['reference'])}")
    pushed = doc.get("push")
    if pushed:
        console.print(
            f"  {pushed['blobs_uploaded']} blob(s) uploaded ({human_size(pushed['bytes_sent'])}), "
            f"{pushed['blobs_skipped']} already there, {pushed['blobs_mounted']} mounted, in {pushed['seconds']} s"
        )
    for kind in ("oci_layout", "docker_archives"):
        if kind in doc:
            console.print(f"wrote {markup_safe(doc[kind])}")
    for item in doc.get("manifests", ()):
        note = " (0600: holds registry credentials)" if item["private"] else ""
        console.print(f"wrote manifest {markup_safe(item['file'])}{note}")


def build_request(
    *,
    models: tuple[str, ...],
    inference_config: str | None,
    entry_script: str | None,
    source_dir: str | None,
    requirements: tuple[str, ...],
    platforms: str,
    base: str | None,
    labels: tuple[str, ...],
    tag: str | None,
    push: bool,
    output: str | None,
    backend: str,
    username: str | None,
    password: str | None,
) -> builder.BuildRequest:
    """The :class:`~packager.image.builder.BuildRequest` the ``build``/``build-and-push`` flags describe."""
    destination = builder.Destination.from_options(tag, push, output)
    credentials = _credentials(username, password)
    config = _config(inference_config, entry_script, source_dir)
    return builder.BuildRequest(
        models=models, destination=destination, config=config, platforms=builder.parse_platforms(platforms),
        base=base, labels=_labels(labels), extra_requirements=requirements, backend=backend, credentials=credentials,
    )  # fmt: skip


def _build(ctx: click.Context, as_json: bool, flags: dict[str, Any], manifest: dict[str, Any] | None = None) -> None:
    request = build_request(**flags)  # every flag is checked before anything runs
    if manifest is not None:
        _check_manifest_flags(manifest)
    with RichReporter() as reporter:
        doc = builder.run(open_workspace(ctx), request, reporter)
    if manifest is not None and (manifest["manifest"] or manifest["manifest_dir"]):
        doc["manifests"] = _write_manifests(doc, manifest)
    _report(doc, as_json)


def _check_manifest_flags(m: dict[str, Any]) -> None:
    from packager.cli.manifest_gen import module_settings, parse_routes

    if m["manifest"] and m["manifest_dir"]:
        raise InvalidInputError("give --manifest FILE (one manifest on the index) or -o DIR (one per platform)")
    if m["manifest"] and not str(m["manifest"]).endswith(".json"):
        raise InvalidInputError(f"--manifest {m['manifest']}: name a .json file (or -o DIR for one per platform)")
    parse_routes(m["routes"])
    module_settings(m, [m["module_name"]])


def _write_manifests(doc: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    """``--manifest FILE``: one manifest on the index digest; ``-o DIR``: deployment.<platform>.json each."""
    from packager.cli.manifest_gen import check_and_write, from_summary, output_files

    manifests = from_summary(doc, m, index=bool(m["manifest"]), name=m["module_name"], credentials=m["credentials"])
    files = {"index": Path(m["manifest"])} if m["manifest"] else output_files(list(manifests), m["manifest_dir"])
    return check_and_write(manifests, files)


@click.command()
@image_options
@click.option("-t", "--tag", metavar="REF", help="Image reference, e.g. 127.0.0.1:5000/models/digits:1.")
@click.option("--push", is_flag=True, help="Push the images and their index to the registry of --tag.")
@click.option("--output", metavar="oci:DIR|docker-archive:FILE", help="Write the images locally instead of pushing.")
@click.option("--backend", type=click.Choice(builder.BACKENDS), default="oci", show_default=True,
              help="oci: no daemon, appended layers; docker: the Docker daemon builds the same content.")  # fmt: skip
@click.option("--username", envvar="EDGEPACK_REGISTRY_USERNAME", help="Registry user [default: ~/.docker/config.json].")
@click.option("--password", envvar="EDGEPACK_REGISTRY_PASSWORD", help="Registry password or token.")
@click.pass_context
def build(ctx: click.Context, as_json: bool, **flags: Any) -> None:
    """Build module images for one or more platforms (multi-arch), without a Docker daemon."""
    _build(ctx, as_json, flags)


@click.command("build-and-push")
@image_options
@click.option("-t", "--tag", required=True, metavar="REF", help="Where to push, e.g. 127.0.0.1:5000/models/digits:1.")
@click.option("--backend", type=click.Choice(builder.BACKENDS), default="oci", show_default=True)
@click.option("--username", envvar="EDGEPACK_REGISTRY_USERNAME", help="Registry user [default: ~/.docker/config.json].")
@click.option("--password", envvar="EDGEPACK_REGISTRY_PASSWORD", help="Registry password or token.")
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write an IoT Edge deployment manifest for the pushed index digest.",
)
@click.option(
    "-o",
    "--manifest-dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Also write deployment.<platform>.json per platform (pinned by platform digest).",
)
@click.option("--module-name", default="scoring", show_default=True, help="The module's name in the manifest.")
@manifest_options
@click.pass_context
def build_and_push(ctx: click.Context, as_json: bool, **flags: Any) -> None:
    """Build the images for every platform, push them with one index, print the digests.

    With --manifest FILE or -o DIR, also write IoT Edge deployment manifests for exactly what was pushed
    (see `edgepack manifest gen --help` for the module and route flags).
    """
    manifest = {k: flags.pop(k) for k in (*MANIFEST_FLAGS, "manifest", "manifest_dir", "module_name")}
    manifest["credentials"] = _credentials(flags["username"], flags["password"])  # pull credentials too
    _build(ctx, as_json, {**flags, "push": True, "output": None}, manifest)


@click.command()
@image_options
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.pass_context
def package(
    ctx: click.Context,
    output_dir: str,
    as_json: bool,
    models: tuple[str, ...],
    inference_config: str | None,
    entry_script: str | None,
    source_dir: str | None,
    requirements: tuple[str, ...],
    platforms: str,
    base: str | None,
    labels: tuple[str, ...],
) -> None:
    """Write a Dockerfile and build context per platform (build them anywhere with `docker build`)."""
    config = _config(inference_config, entry_script, source_dir)
    with RichReporter() as reporter:
        ws = open_workspace(ctx)
        staged = builder.stage(
            ws, builder.resolve_models(ws, models), config=config, platforms=builder.parse_platforms(platforms),
            base=base, labels=_labels(labels), extra_requirements=requirements, reporter=reporter,
        )  # fmt: skip
        contexts = builder.write_contexts(staged, Path(output_dir), config.extra_steps_text)
    doc = {"contexts": {str(p): str(path) for p, path in contexts.items()}}
    if as_json:
        print_json(doc)
        return
    for platform, path in doc["contexts"].items():
        shown = markup_safe(path)
        console.print(f"{platform:<14} {shown}  (docker build --platform {platform} -t IMAGE {shown})")
