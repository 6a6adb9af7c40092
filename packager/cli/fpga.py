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


def _print_report(report: dict[str, Any]) -> None:
    split = report["split"]
    console.print(
        f"Registered [bold]{report['target']}[/] from {report['source']} ({report['format']}"
        f"{', calibrated' if report['calibrated'] else ', not calibrated'}; {len(split['accelerator'])} layers on "
        f"the accelerator, {len(split['host'])} ops on the host)"
    )
    acc = report.get("accuracy")
    if acc:
        table = Table("", "float", "emulated", "C-sim", "change", box=None, pad_edge=False)
        for column in table.columns[1:]:
            column.justify = "right"
        if acc.get("float") is not None:
            drop = 100 * (acc["emulated"] - acc["float"])
            csim = _pct(acc.get("csim")) if acc.get("csim") is not None else "–"
            table.add_row(
                f"accuracy ({acc['rows']} rows, {acc['data']})",
                _pct(acc["float"]),
                _pct(acc["emulated"]),
                csim,
                f"{drop:+.2f} pt",
            )
        if acc.get("agreement") is not None:
            csim = _pct(acc.get("csim_agreement_float")) if "csim_agreement_float" in acc else ""
            table.add_row(f"predictions equal to float ({acc['output']})", "", _pct(acc["agreement"]), csim, "")
        if "csim_agreement_emulated" in acc:
            table.add_row("C-sim predictions equal to emulated", "", "", _pct(acc["csim_agreement_emulated"]), "")
        for d in acc.get("outputs", []):
            if d.get("max_abs_diff") is not None and d.get("mismatch_rate") is None:
                table.add_row(f"max abs diff {d['name']}", "", f"{d['max_abs_diff']:.3g}", "", "")
        console.print(table)
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
    With --labels, accuracy float vs emulated (what the FPGA would give). A non-ONNX model is converted
    to ONNX first (registered as NAME-onnx).
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
