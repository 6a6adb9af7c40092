"""The ``edgepack`` command line.

Errors print one line, ``error: <what and how to fix>``, on stderr: exit 2 for bad input,
1 for failures, no traceback unless ``--debug``.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from packager import __version__
from packager.cli.build import build, build_and_push, package
from packager.cli.convert import convert
from packager.cli.edge import edge
from packager.cli.manifest import manifest
from packager.cli.model import model
from packager.cli.mqtt import mqtt
from packager.cli.output import err_console, log_to_console, markup_safe
from packager.cli.quantize import quantize
from packager.cli.serve import score, serve, token
from packager.errors import EdgepackError
from packager.workspace import ENV_WORKSPACE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--workspace",
    "-w",
    envvar=ENV_WORKSPACE,
    type=click.Path(file_okay=False),
    help=f"Workspace folder [env {ENV_WORKSPACE}; default ./.edgepack].",
)
@click.option("--debug", is_flag=True, envvar="EDGEPACK_DEBUG", help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="edgepack")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, debug: bool) -> None:
    """edgepack: package trained models for the edge and the cloud."""
    ctx.obj = {"workspace": workspace, "debug": debug}


cli.add_command(model)
cli.add_command(convert)
cli.add_command(quantize)
cli.add_command(serve)
cli.add_command(score)
cli.add_command(token)
cli.add_command(mqtt)
cli.add_command(build)
cli.add_command(build_and_push)
cli.add_command(package)
cli.add_command(manifest)
cli.add_command(edge)


def _error(message: str) -> None:
    """One line on stderr; the message is text, never markup (``pandas[parquet]``, ``[/variant]`` stay as typed),
    and control characters in it (from names, paths, values) are shown escaped."""
    err_console.print(f"[bold red]error:[/] {markup_safe(' '.join(message.split()))}", markup=True, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("EDGEPACK_DEBUG"))
    log_to_console(debug)
    try:
        code = cli.main(args=args, prog_name="edgepack", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _error(exc.format_message() + hint)
        code = exc.exit_code
    except click.ClickException as exc:
        _error(exc.format_message())
        code = exc.exit_code
    except click.Abort:
        _error("aborted")
        code = 1
    except EdgepackError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        code = 130
    except Exception as exc:  # a bug or an environment problem: say so, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
