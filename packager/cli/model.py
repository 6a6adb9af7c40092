"""``edgepack model ...``: register, list, show, download, update, delete."""

from __future__ import annotations

import click
from rich.table import Table

from packager.cli.output import byte_progress, console, human_size, markup_safe, plain, print_json
from packager.errors import InvalidInputError, NotFoundError
from packager.registry import Model
from packager.registry.frameworks import FRAMEWORKS
from packager.registry.names import parse_pairs, parse_ref
from packager.workspace import Workspace


def open_workspace(ctx: click.Context, create: bool = False) -> Workspace:
    path = ctx.obj.get("workspace")
    return Workspace.from_path(path, create=create) if path else Workspace.default(create=create)


def _model(ctx: click.Context, ref: str, need_version: bool = False) -> Model:
    name, version = parse_ref(ref)
    if need_version and version is None:
        raise InvalidInputError(f"give an explicit version, e.g. {name}:1 (see `edgepack model list --name {name}`)")
    return Model(open_workspace(ctx), name, version=version)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def model() -> None:
    """Register and manage models in the workspace registry."""


@model.command()
@click.option("-n", "--name", required=True, help="Model name (letters, digits, - _ .).")
@click.option("-p", "--path", "model_path", required=True, type=click.Path(exists=True), help="Model file or folder.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag (repeatable; tags can change later).")
@click.option("--property", "properties", multiple=True, metavar="K=V", help="Property (repeatable; add-only).")
@click.option("--description", help="Free-text description.")
@click.option(
    "--framework",
    type=click.Choice(FRAMEWORKS, case_sensitive=False),
    help="Framework (detected from the files when omitted).",
)
@click.option("--framework-version", help="Framework version, e.g. 1.5.2.")
@click.option(
    "--child-path",
    "child_paths",
    multiple=True,
    metavar="P",
    help="With a folder: register only this file or sub-folder (repeatable).",
)
@click.option(
    "--sample-input",
    type=click.Path(exists=True, dir_okay=False),
    help="Sample input (.npy, .npz, .json, .csv) used by convert and swagger.",
)
@click.option("--sample-output", type=click.Path(exists=True, dir_okay=False), help="Sample output.")
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Store the content of file links that point outside the folder (refused by default).",
)
@json_option
@click.pass_context
def register(
    ctx: click.Context,
    name: str,
    model_path: str,
    tags: tuple[str, ...],
    properties: tuple[str, ...],
    description: str | None,
    framework: str | None,
    framework_version: str | None,
    child_paths: tuple[str, ...],
    sample_input: str | None,
    sample_output: str | None,
    follow_symlinks: bool,
    as_json: bool,
) -> None:
    """Register a file or folder as the next version of model NAME."""
    tag_map = parse_pairs(tags, "--tag")
    prop_map = parse_pairs(properties, "--property")
    ws = open_workspace(ctx, create=True)
    with byte_progress(f"registering {name}") as advance:
        m = Model.register(
            ws,
            model_path,
            name,
            tags=tag_map,
            properties=prop_map,
            description=description,
            model_framework=framework,
            model_framework_version=framework_version,
            child_paths=list(child_paths) or None,
            sample_input=sample_input,
            sample_output=sample_output,
            progress=advance,
            follow_symlinks=follow_symlinks,
        )
    if as_json:
        print_json(m.serialize())
    else:
        console.print(
            f"Registered [bold]{markup_safe(m.id)}[/] ({markup_safe(m.model_framework)}, {len(m.files)} "
            f"file{'s' * (len(m.files) != 1)}, {human_size(m.size)})"
        )


@model.command("list")
@click.option("--name", help="Only this model name.")
@click.option("--tag", "tags", multiple=True, metavar="K[=V]", help="Has this tag (and value). Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="K[=V]", help="Has this property. Repeatable.")
@click.option("--framework", type=click.Choice(FRAMEWORKS, case_sensitive=False), help="Only this framework.")
@click.option("--latest", is_flag=True, help="Only the newest matching version of each name.")
@json_option
@click.pass_context
def list_(
    ctx: click.Context,
    name: str | None,
    tags: tuple[str, ...],
    properties: tuple[str, ...],
    framework: str | None,
    latest: bool,
    as_json: bool,
) -> None:
    """List registered models, newest version first."""
    try:
        ws = open_workspace(ctx)
    except NotFoundError:
        if ctx.obj.get("workspace"):
            raise  # an explicit --workspace that does not exist is probably a typo
        ws = None  # no default workspace yet: nothing registered
    models = (
        []
        if ws is None
        else Model.list(
            ws,
            name=name,
            tags=list(tags) or None,
            properties=list(properties) or None,
            framework=framework,
            latest=latest,
        )
    )
    if as_json:
        print_json([m.serialize() for m in models])
        return
    if not models:
        console.print("No models registered.")
        return
    table = Table("Name", "Version", "Framework", "Size", "Tags", "Created", box=None, pad_edge=False)
    for m in models:
        tags_text = ", ".join(f"{k}={v}" for k, v in m.tags.items())
        cells = (m.name, m.version, m.model_framework, human_size(m.size), tags_text, m.created_time)
        table.add_row(*map(plain, cells))
    console.print(table)


@model.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@json_option
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one model version (the latest when no version is given)."""
    m = _model(ctx, ref)
    if as_json:
        print_json(m.serialize())
        return
    data = m.serialize()
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("id", "framework", "frameworkVersion", "description", "createdTime", "modelRoot"):
        if data[key] is not None:
            table.add_row(key, plain(data[key]))
    table.add_row("size", human_size(m.size))
    for key in ("tags", "properties"):
        if data[key]:
            table.add_row(key, plain(", ".join(f"{k}={v}" for k, v in data[key].items())))
    if m.sample_input:
        table.add_row("sampleInput", plain(m.sample_input.path))
    console.print(table)
    files = Table("File", "Size", "Digest", box=None, pad_edge=False)
    for f in m.files:
        files.add_row(plain(f.path), human_size(f.size), f"sha256:{f.digest[:12]}")
    console.print(files)


@model.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option(
    "-t",
    "--target",
    "target_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to download into (created if missing).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing copy in the target folder.")
@json_option
@click.pass_context
def download(ctx: click.Context, ref: str, target_dir: str, overwrite: bool, as_json: bool) -> None:
    """Download a model's file or folder; every file is checked against its digest."""
    m = _model(ctx, ref)
    with byte_progress(f"downloading {m.id}", total=m.size) as advance:
        path = m.download(target_dir, exist_ok=overwrite, progress=advance)
    if as_json:
        print_json({"id": m.id, "path": path})
    else:
        console.print(plain(path))


@model.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Add or change a tag. Repeatable.")
@click.option("--remove-tag", "remove_tags", multiple=True, metavar="K", help="Remove a tag. Repeatable.")
@click.option("--property", "properties", multiple=True, metavar="K=V", help="Add a property (add-only).")
@click.option("--description", help="Replace the description.")
@json_option
@click.pass_context
def update(
    ctx: click.Context,
    ref: str,
    tags: tuple[str, ...],
    remove_tags: tuple[str, ...],
    properties: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Change tags and description, or add properties, of one model version."""
    tag_map = parse_pairs(tags, "--tag")
    prop_map = parse_pairs(properties, "--property")
    if not (tag_map or remove_tags or prop_map or description is not None):
        raise click.UsageError("nothing to update: give --tag, --remove-tag, --property or --description")
    m = _model(ctx, ref, need_version=True)
    if tag_map:
        m.add_tags(tag_map)
    if remove_tags:
        m.remove_tags(list(remove_tags))
    if prop_map:
        m.add_properties(prop_map)
    if description is not None:
        m.update(description=description)
    if as_json:
        print_json(m.serialize())
    else:
        console.print(f"Updated [bold]{markup_safe(m.id)}[/]")


@model.command()
@click.argument("ref", metavar="NAME:VERSION")
@json_option
@click.pass_context
def delete(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Delete one model version (its number is never reused)."""
    m = _model(ctx, ref, need_version=True)
    m.delete()
    if as_json:
        print_json({"deleted": m.id})
    else:
        console.print(f"Deleted [bold]{markup_safe(m.id)}[/]")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A duration: seconds, or a number with ``s``, ``m``, ``h`` or ``d`` (``0``, ``90s``, ``30m``, ``2d``)."""

    name = "DURATION"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
        try:
            seconds = float(number) * _UNITS[unit]
        except ValueError:
            seconds = -1.0
        if not seconds >= 0:  # also refuses nan
            self.fail(f"{value!r} is not a duration; use e.g. 0, 90s, 30m, 1h or 2d", param, ctx)
        return seconds


@model.command()
@click.option(
    "--grace",
    type=Duration(),
    default="1h",
    show_default=True,
    help="Keep unreferenced blobs newer than this (a register may still be writing them), e.g. 0, 30m, 2d.",
)
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@json_option
@click.pass_context
def gc(ctx: click.Context, grace: float, dry_run: bool, as_json: bool) -> None:
    """Remove stored content no model version uses (left by interrupted registers)."""
    report = open_workspace(ctx).gc(grace_s=grace, dry_run=dry_run)
    if as_json:
        print_json(report.serialize())
        return
    n = len(report.removed)
    verb = "Would remove" if dry_run else "Removed"
    line = f"{verb} {n} unreferenced blob{'s' * (n != 1)} ({human_size(report.bytes)})"
    if report.kept_recent:
        line += f"; kept {report.kept_recent} newer than the grace period"
    if report.temp_removed:
        line += f"; removed {report.temp_removed} stale temporary file{'s' * (report.temp_removed != 1)}"
    console.print(plain(line))
