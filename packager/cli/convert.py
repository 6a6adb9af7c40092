"""``edgepack convert``: registered model → ONNX or TFLite, checked against the source."""

from __future__ import annotations

from contextlib import nullcontext

import click
from rich.table import Table

from packager.cli.model import json_option, open_workspace
from packager.cli.output import console, err_console, print_json
from packager.convert import ConvertOptions, convert_model
from packager.convert.base import TARGETS
from packager.errors import InvalidInputError
from packager.registry.names import parse_ref


def parse_shape(text: str | None) -> tuple[int | None, ...] | None:
    """``N,64`` / ``-1,1,8,8`` / ``?,64`` → ``(None, 64)`` ...; None when not given."""
    if text is None:
        return None
    dims: list[int | None] = []
    for part in text.replace("x", ",").split(","):
        part = part.strip()
        if part in ("N", "n", "?", "-1", "None"):
            dims.append(None)
        elif part.isdigit() and int(part) > 0:
            dims.append(int(part))
        else:
            raise InvalidInputError(f"invalid --input-shape {text!r}: use comma-separated sizes, N for the batch")
    return tuple(dims)


@click.command()
@click.argument("ref", metavar="NAME[:VERSION]")
@click.option("--to", "target", type=click.Choice(TARGETS), default="onnx", show_default=True, help="Target format.")
@click.option("--opset", type=click.IntRange(7, 25), help="ONNX opset (default: the converter's).")
@click.option("--input-shape", help="Input shape when there is no sample, N for the batch: N,64 or N,1,8,8.")
@click.option("--sample", type=click.Path(exists=True, dir_okay=False), help="Sample input (.npy, .npz, .json).")
@click.option("--output-name", help="Name to register the result under [default: NAME-onnx / NAME-tflite].")
@click.option("--inputs-as-nchw", multiple=True, metavar="INPUT", help="TensorFlow: make this input NCHW (repeatable).")
@click.option("--dynamo", is_flag=True, help="PyTorch: use the dynamo exporter.")
@click.option("--int8", is_flag=True, help="TFLite: full-integer quantization (sample as representative data).")
@click.option("--atol", type=float, help="Parity: absolute tolerance [default: 1e-4; 0.1 with --int8].")
@click.option("--rtol", type=float, help="Parity: relative tolerance [default: 1e-4; 0 with --int8].")
@json_option
@click.pass_context
def convert(
    ctx: click.Context,
    ref: str,
    target: str,
    opset: int | None,
    input_shape: str | None,
    sample: str | None,
    output_name: str | None,
    inputs_as_nchw: tuple[str, ...],
    dynamo: bool,
    int8: bool,
    atol: float | None,
    rtol: float | None,
    as_json: bool,
) -> None:
    """Convert a registered model, check it against the source, register the result."""
    name, version = parse_ref(ref)
    options = ConvertOptions(
        target=target,
        opset=opset,
        input_shape=parse_shape(input_shape),
        inputs_as_nchw=list(inputs_as_nchw),
        dynamo=dynamo,
        int8=int8,
        atol=atol,
        rtol=rtol,
    )
    ws = open_workspace(ctx)
    spinner = err_console.status(f"converting {ref} to {target}") if err_console.is_terminal else nullcontext()
    with spinner:
        result = convert_model(ws, name, version, options=options, output_name=output_name, sample=sample)
    if as_json:
        print_json(result.to_dict())
        return
    c = result.conversion
    opset_text = f", opset {c.opset}" if c.opset else ""
    made_by = f"{c.converter} {c.converter_version}{opset_text}"
    console.print(f"Registered [bold]{result.model.id}[/] from {result.source.id} ({made_by})")
    table = Table("Output", "Max abs diff", "Max rel diff", "OK", box=None, pad_edge=False)
    for d in result.diffs:
        table.add_row(d.name, f"{d.max_abs_diff:.3g}", f"{d.max_rel_diff:.3g}", "yes" if d.within_tolerance else "NO")
    console.print(table)
