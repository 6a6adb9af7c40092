"""``edgepack manifest validate FILE``: check an IoT Edge deployment manifest offline."""

from __future__ import annotations

import sys

import click

from packager.cli.output import console, err_console, print_json, printable
from packager.errors import EdgepackError


@click.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON ([] when valid).")
@click.pass_context
def validate(ctx: click.Context, file: str, as_json: bool) -> None:
    """Validate a deployment manifest (full or layered) without IoT Hub.

    Checks the published schema, routes (syntax and modules), module names, images, createOptions
    chunks, env values, twin limits and unexpanded ${...} placeholders. Prints "valid" and exits 0,
    or one line per problem (JSON path: what to change) and exits 2. FILE may be - for stdin.
    """
    from packager.iotedge.validate import validate_file, validate_text

    try:
        problems = validate_text(sys.stdin.buffer) if file == "-" else validate_file(file)
    except ImportError as exc:  # jsonschema comes with the cloud extra
        raise EdgepackError(f"manifest validation needs {exc.name}: pip install 'edgepack[cloud]'") from None
    if as_json:
        print_json([p.to_dict() for p in problems])
    elif not problems:
        console.print("valid", markup=False, highlight=False)
    else:
        for problem in problems:
            err_console.print(printable(str(problem)), markup=False, highlight=False, soft_wrap=True)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        err_console.print(f"error: {count} in {printable(file)}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        ctx.exit(2)
