"""``edgepack quantize NAME[:VERSION]``: INT8 quantization of a registered ONNX model, with a report."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from packager.cli.model import json_option, open_workspace
from packager.cli.output import console, err_console, human_size, print_json, print_warning
from packager.registry.names import parse_ref

if TYPE_CHECKING:
    from packager.quantize import QuantizeReport

_STAGES = {
    "preprocess": "pre-processing",
    "calibrate": "calibrating (batches)",
    "quantize": "quantizing",
    "evaluate": "evaluating fp32 and int8",
    "latency": "timing (batch sizes)",
    "register": "registering",
}


@contextmanager
def _progress() -> Iterator[Any]:
    """A transient progress bar on stderr; yields the ``progress(stage, done, total)`` callback."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("quantizing", total=None)

        def update(stage: str, done: int, total: int | None) -> None:
            bar.update(task, description=_STAGES.get(stage, stage), completed=done, total=total)

        yield update


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def _ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 100 else f"{x:.0f} ms"


def _print_report(report: QuantizeReport) -> None:
    kind = report.format + (", per-channel" if report.per_channel else ", per-tensor")
    if report.calibration_method:
        kind += f", {report.calibration_method} calibration on {report.calibration_rows} rows"
    console.print(
        f"Registered [bold]{report.target}[/] from {report.source} ({kind}; "
        f"{report.quantized_nodes}/{report.total_nodes} nodes int8)"
    )
    table = Table("", "fp32", "int8", "change", box=None, pad_edge=False)
    table.columns[1].justify = table.columns[2].justify = table.columns[3].justify = "right"
    table.add_row(
        "file size", human_size(report.size_before), human_size(report.size_after), f"{100 * report.size_ratio:.1f} %"
    )
    if report.accuracy_before is not None and report.accuracy_after is not None:
        drop = 100 * (report.accuracy_after - report.accuracy_before)
        table.add_row(
            f"accuracy ({report.eval_rows} rows)",
            _pct(report.accuracy_before),
            _pct(report.accuracy_after),
            f"{drop:+.2f} pt",
        )
    for lat in report.latency:
        table.add_row(
            f"latency batch {lat.batch} ({report.threads} thread{'s' * (report.threads != 1)})",
            _ms(lat.fp32_ms),
            _ms(lat.int8_ms),
            f"{lat.speedup:.2f}×",
        )
    console.print(table)
    diffs = Table("output", "max abs diff", "mean abs diff", "mismatch", box=None, pad_edge=False)
    for d in report.outputs:
        diffs.add_row(
            d.name,
            "–" if d.max_abs_diff is None else f"{d.max_abs_diff:.3g}",
            "–" if d.mean_abs_diff is None else f"{d.mean_abs_diff:.3g}",
            "–" if d.mismatch_rate is None else f"{100 * d.mismatch_rate:.2f} %",
        )
    console.print(diffs)


@click.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["qdq", "dynamic"]),
    default="qdq",
    show_default=True,
    help="qdq: static, calibrated int8 activations and weights; dynamic: int8 weights only.",
)
@click.option("--per-channel", is_flag=True, help="One weight scale per output channel.")
@click.option(
    "--calibration",
    metavar="FILE.npz|DIR",
    help="Calibration and evaluation inputs: an .npz (one array per input) or a folder of .npy/.npz "
    "[default: the registered sample input].",
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    help="Calibration method (qdq) [default: minmax].",
)
@click.option(
    "--labels",
    metavar="FILE",
    help="Class labels for accuracy before/after: a .npy for the calibration rows, or an .npz with y and x.",
)
@click.option("--output-name", metavar="NAME", help="Register as NAME [default: NAME-int8].")
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="intra_op_num_threads for timing."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Latency: best of this many runs (0 skips timing).",
)
@json_option
@click.pass_context
def quantize(
    ctx: click.Context,
    ref: str,
    fmt: str,
    per_channel: bool,
    calibration: str | None,
    method: str | None,
    labels: str | None,
    output_name: str | None,
    threads: int,
    repeats: int,
    as_json: bool,
) -> None:
    """Quantize registered ONNX model NAME to INT8 (onnxruntime) and register it as NAME-int8.

    Prints file size, accuracy (with --labels), batch-1/64 latency and output differences,
    fp32 against int8. Nothing is registered if quantization fails.
    """
    from packager.quantize import quantize_model  # onnxruntime.quantization loads only when used

    name, version = parse_ref(ref)
    ws = open_workspace(ctx)
    with warnings.catch_warnings(), _progress() as progress:
        warnings.simplefilter("ignore")  # the report's warnings are printed below
        result = quantize_model(
            ws,
            name,
            version,
            format=fmt,
            per_channel=per_channel,
            calibration=calibration,
            method=method,
            labels=labels,
            output_name=output_name,
            threads=threads,
            repeats=repeats,
            progress=progress,
        )
    for message in result.report.warnings:
        print_warning(message)
    if as_json:
        print_json({"model": result.model.serialize(), "report": result.report.to_dict()})
    else:
        _print_report(result.report)
