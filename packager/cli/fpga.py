"""``edgepack fpga compile NAME[:VERSION]``: a quantized FPGA package, emulated bit-accurately, registered."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import click
from rich.table import Table

from packager.cli.model import json_option, open_workspace
from packager.cli.output import console, err_console, markup_safe, plain, print_json, print_warning
from packager.registry.names import parse_ref


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


KINDS = {"csim": "C-sim", "qonnx": "QONNX", "qdq": "QDQ"}


def _print_accuracy(acc: dict[str, Any]) -> None:
    """Accuracy, agreement with float and with the emulator, bit-exactness (fpga.toolchain.compare)."""
    pairs = acc.get("pairs", {})
    kinds = [k for k in KINDS if f"emulated vs {k}" in pairs]
    table = Table("", "float", "emulated", *(KINDS[k] for k in kinds), "change", box=None, pad_edge=False)
    for column in table.columns[1:]:
        column.justify = "right"
    if acc.get("float") is not None:
        drop = 100 * (acc["emulated"] - acc["float"])
        table.add_row(
            f"accuracy ({acc['rows']} rows, {acc['data']})",
            _pct(acc["float"]),
            _pct(acc["emulated"]),
            *(_pct(acc.get(k)) for k in kinds),
            f"{drop:+.2f} pt",
        )
    if acc.get("agreement") is not None:
        agree = [_pct(pairs[f"float vs {k}"]["top1_agreement"]) for k in kinds]
        table.add_row(f"predictions equal to float ({acc['output']})", "", _pct(acc["agreement"]), *agree, "")
        if kinds:
            agree = [_pct(pairs[f"emulated vs {k}"]["top1_agreement"]) for k in kinds]
            table.add_row("predictions equal to emulated", "", "", *agree, "")
    if kinds:
        exact = [_pct(acc["bit_exact"][k]) for k in kinds]
        table.add_row("bit-exact with emulated", "", "", *exact, "")
    if "float vs emulated" in pairs:
        diff = f"{pairs['float vs emulated']['max_abs_difference']:.3g}"
        table.add_row("max abs diff from float", "", diff, *("" for _ in kinds), "")
    console.print(table)
    for k in kinds:
        why = pairs[f"emulated vs {k}"]["explanation"]
        if why != "bit-exact":
            console.print(f"  {KINDS[k]} vs emulated: {markup_safe(why)}")


def _print_report(report: dict[str, Any]) -> None:
    split = report["split"]
    console.print(
        f"Registered [bold]{report['target']}[/] from {report['source']} ({report['format']}"
        f"{', calibrated' if report['calibrated'] else ', not calibrated'}; {len(split['accelerator'])} layers on "
        f"the accelerator, {len(split['host'])} ops on the host)"
    )
    acc = report.get("accuracy")
    if acc:
        _print_accuracy(acc)
    split_table = Table("part", "layer / op", "op", "why", box=None, pad_edge=False)
    for lay in split["accelerator"]:
        split_table.add_row("accelerator", plain(lay["name"]), lay["op"], "")
    supported = ""
    for op in split["host"]:
        reason, _, rest = op["reason"].partition(" (supported: ")
        supported = supported or rest.rstrip(")")
        split_table.add_row("[yellow]host[/]", plain(op["name"]), op["op"], plain(reason))
    console.print(split_table)
    if supported:
        console.print(f"accelerator ops: {markup_safe(supported)}")
    hls = report.get("hls")
    if hls:
        console.print(
            f"HLS project [bold]{markup_safe(hls['files'])}/[/] ({hls['backend']}, {hls['io_type']}, reuse factor "
            f"{hls['reuse_factor']})"
        )
        for note in hls.get("notes", []):
            console.print(f"  note: {markup_safe(note)}")
    if report.get("estimates"):
        try:
            from fpga.hls import format_estimates

            text = format_estimates(report["estimates"])
        except ImportError:
            text = str(report["estimates"])
        for line in text.splitlines():
            console.print(plain(line))


@click.group()
def fpga() -> None:
    """FPGA packages: quantized graphs emulated bit-accurately, served like any model."""


@fpga.command("compile")
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option(
    "--format",
    "fmt",
    default="fixed<16,6>",
    show_default=True,
    metavar="FORMAT",
    help="fixed<W,I> (integer bits per layer from calibration), int8, msfp12, msfp16, bfp<k=16,m=5,e=8>, float.",
)
@click.option(
    "--calibration",
    metavar="FILE.npz|DIR",
    help="Calibration inputs (also the evaluation rows without a labels .npz) [default: the registered sample].",
)
@click.option(
    "--labels", metavar="FILE", help="Labels for accuracy: a .npy for the calibration rows, or an .npz with x and y."
)
@click.option("--override", "overrides", multiple=True, metavar="LAYER=FORMAT", help="A layer's format (repeatable).")
@click.option("--hls", type=click.Choice(["vivado", "vitis"]), help="Also write an hls4ml project with this backend.")
@click.option(
    "--io",
    "io_type",
    type=click.Choice(["parallel", "stream"]),
    default="parallel",
    show_default=True,
    help="HLS io type (io_parallel / io_stream).",
)
@click.option("--reuse", type=click.IntRange(min=1), default=1, show_default=True, help="HLS reuse factor.")
@click.option("--output-name", metavar="NAME", help="Register as NAME [default: NAME-fpga].")
@json_option
@click.pass_context
def compile_(
    ctx: click.Context,
    ref: str,
    fmt: str,
    calibration: str | None,
    labels: str | None,
    overrides: tuple[str, ...],
    hls: str | None,
    io_type: str,
    reuse: int,
    output_name: str | None,
    as_json: bool,
) -> None:
    """Compile registered model NAME for an FPGA and register the package as NAME-fpga.

    Ops the accelerator cannot run stay on the host (onnxruntime), and the report says which and why.
    With --labels, accuracy float vs emulated (what the FPGA would give), and vs the C simulation (--hls)
    and the QONNX/QDQ exports, with their bit-exactness against the emulator. --hls needs a fixed-point
    format. A non-ONNX model is converted to ONNX first (registered as NAME-onnx).
    """
    from packager.fpga_compile import compile_registered, parse_overrides

    name, version = parse_ref(ref)
    ws = open_workspace(ctx)
    spinner = err_console.status(f"compiling {ref} ({fmt})") if err_console.is_terminal else nullcontext()
    with spinner:
        result = compile_registered(
            ws,
            name,
            version,
            format=fmt,
            calibration=calibration,
            labels=labels,
            overrides=parse_overrides(overrides),
            hls=hls,
            io=io_type,
            reuse=reuse,
            output_name=output_name,
        )
    if as_json:
        print_json(result.to_dict())
        return
    for note in result.report["notes"]:
        print_warning(note, "note")
    _print_report(result.report)
