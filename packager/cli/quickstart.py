"""``edgepack quickstart``: the whole pipeline on embedded defaults, with progress and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from packager.cli.output import console, err_console, markup_safe, plain, print_json
from packager.image.builder import parse_platforms
from packager.quickstart import DEFAULT_DIRECTORY, SKIPPABLE, Options, Report, StepResult, run_quickstart

_MARK = {"ok": "[green]ok[/]", "failed": "[red]FAILED[/]", "skipped": "[yellow]skipped[/]"}


class ProgressView:
    """Rich progress on stderr (a spinner per step, a bar per layer or blob of the image build), one line per
    finished step; quiet when stderr is not a terminal."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        self.steps: dict[str, TaskID] = {}
        self.titles: dict[str, str] = {}
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    # the quickstart's listener
    def started(self, name: str, title: str) -> None:
        self.titles[name] = title
        self.steps[name] = self.progress.add_task(markup_safe(title), total=None)

    def note(self, name: str, text: str) -> None:
        if name in self.steps:
            self.progress.update(self.steps[name], description=f"{markup_safe(self.titles[name])}: {markup_safe(text)}")

    def finished(self, result: StepResult) -> None:
        task = self.steps.pop(result.name, None)
        if task is not None:
            self.progress.remove_task(task)
        if err_console.is_terminal:
            line = f"{_MARK[result.status]} {markup_safe(result.title)} [dim]{result.seconds:.1f} s[/]"
            if result.artefact:
                line += f"  {markup_safe(result.artefact)}"
            self.progress.console.print(line)

    # the image builder's reporter (layers, downloads, uploads in bytes)
    def start(self, task: str, total: int | None = None) -> None:
        if task in self.bars:
            self.progress.reset(self.bars[task], total=total)
        else:
            self.bars[task] = self.progress.add_task(f"  [dim]{markup_safe(task)}[/]", total=total)

    def advance(self, task: str, amount: int) -> None:
        if task in self.bars:
            self.progress.advance(self.bars[task], amount)

    def done(self, task: str, note: str = "") -> None:
        bar = self.bars.pop(task, None)
        if bar is not None:
            self.progress.remove_task(bar)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def print_summary(report: Report) -> None:
    table = Table("step", "status", "time", "artefact", title="edgepack quickstart", title_justify="left")
    table.columns[2].justify = "right"
    for step in report.steps:
        artefact = step.artefact if step.ok else (step.error or "")
        table.add_row(step.title, _MARK[step.status], f"{step.seconds:.1f} s", plain(artefact))
    console.print(table)
    acc = report.accuracy()
    console.print(
        f"accuracy on {_test_rows(report)} test images: float {_pct(acc['float'])}, INT8 {_pct(acc['int8'])}, "
        f"FPGA emulated {_pct(acc['fpga_emulated'])}"
    )
    details = _details(report)
    for line in details:
        console.print(line)
    for name, what in report.services.items():
        console.print(f"[dim]{name}:[/] {markup_safe(what)}")
    console.print(f"everything is in [bold]{markup_safe(report.directory)}[/] ({report.seconds:.1f} s in all)")
    for step in report.steps:
        if step.status == "failed":
            console.print(f"[red]error:[/] {markup_safe(step.title)}: {markup_safe(step.error or '')}", soft_wrap=True)


def _test_rows(report: Report) -> str:
    train = report.step("train")
    return str(train.details.get("test_rows", "the")) if train is not None else "the"


def _details(report: Report) -> list[str]:
    lines = []
    convert = report.step("convert")
    if convert is not None and convert.ok:
        lines.append(f"ONNX parity: max abs diff {convert.details['parity_max_abs_diff']:.3g} (sklearn vs onnxruntime)")
    build = report.step("build")
    if build is not None and build.ok:
        platforms = ", ".join(build.details["platforms"])
        lines.append(f"image: {markup_safe(build.details['index_digest'])} ({platforms})")
    manifest = report.step("manifest")
    if manifest is not None and manifest.ok and manifest.details.get("note"):
        lines.append(f"manifest: {markup_safe(manifest.details['note'])}")
    serve = report.step("serve")
    if serve is not None and serve.ok:
        http, mqtt = serve.details["http"], serve.details["mqtt"]
        same = "equal to" if http["equal_to_onnx"] else "DIFFERENT from"
        lines.append(f"HTTP: {http['samples']} predictions {same} the ONNX model's")
        if mqtt.get("status") == "ok":
            same = "equal to" if mqtt["equal_to_onnx"] else "DIFFERENT from"
            lines.append(f"MQTT: {mqtt['samples']} predictions {same} the ONNX model's")
    return lines


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIRECTORY,
    show_default=True,
    help="Folder for the run (workspace, image, manifests); cleared when a quickstart made it.",
)
@click.option("--registry", metavar="HOST:PORT/REPO[:TAG]", help="Push the image there instead of an OCI layout.")
@click.option("--base", metavar="REF", help="Base image: oci:DIR[:TAG] or REGISTRY/REPO:TAG [found when not given].")
@click.option("--platforms", metavar="LIST", help="e.g. linux/amd64,linux/arm64 [the base's amd64 and arm64].")
@click.option("--mqtt-url", default="mqtt://127.0.0.1:1883", show_default=True, help="Broker to score over.")
@click.option("--no-mqtt", is_flag=True, help="Score over HTTP only.")
@click.option("--skip", "skip", multiple=True, type=click.Choice(SKIPPABLE), help="Leave a step out (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def quickstart(
    ctx: click.Context,
    directory: Path,
    registry: str | None,
    base: str | None,
    platforms: str | None,
    mqtt_url: str,
    no_mqtt: bool,
    skip: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run the whole pipeline on embedded defaults, offline: train a digits model and register it, convert it
    to ONNX, quantize it to INT8, compile an FPGA package, build the amd64+arm64 module image (an OCI layout;
    pushed with --registry), write and validate the IoT Edge manifest, serve it and score test images over HTTP
    (and MQTT when a broker answers). No Docker, registry, broker or cloud is needed. Exits 1 when a step failed.

    The base image is --base, else $EDGEPACK_BASE_IMAGE, else the OCI layout `bash scripts/dev-services.sh start
    base-images` saves in /var/cache/edgepack/base-oci, else the dev registry's 127.0.0.1:5000/library/python:3.11-slim.
    """
    options = Options(
        directory=directory,
        registry=registry,
        base=base,
        platforms=parse_platforms(platforms) if platforms else None,
        mqtt=not no_mqtt,
        mqtt_url=mqtt_url,
        skip=frozenset(skip),
    )
    if not as_json and err_console.is_terminal:
        err_console.print(f"edgepack quickstart in [bold]{markup_safe(directory.absolute())}[/]")
    view: Any = ProgressView()
    with view:
        report = run_quickstart(options, view, view)
    if as_json:
        print_json(report.to_dict())
    else:
        print_summary(report)
    if not report.ok:
        ctx.exit(1)
