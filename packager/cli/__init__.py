"""The ``edgepack`` command line.

Errors print one line, ``error: <what and how to fix>``, on stderr: exit 2 for bad input,
1 for failures, no traceback unless ``--debug``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import ClassVar

import click

from packager import __version__
from packager.cli.build import build, build_and_push, package
from packager.cli.convert import convert
from packager.cli.edge import edge
from packager.cli.fpga import fpga
from packager.cli.manifest import manifest
from packager.cli.model import model
from packager.cli.mqtt import mqtt
from packager.cli.output import err_console, log_to_console, markup_safe
from packager.cli.quantize import quantize
from packager.cli.quickstart import quickstart
from packager.cli.serve import score, serve, token
from packager.errors import EdgepackError
from packager.workspace import ENV_WORKSPACE


class _EdgepackGroup(click.Group):
    """The root group, plus command groups that live in other packages, imported only when used.

    ``deploy``, ``service``, ``endpoint`` live in cloud_targets: imports flow cloud_targets -> packager, so packager
    never imports cloud_targets at import time; the CLI entry point is the one place that reaches up, lazily,
    and a missing package or extra becomes a clear error naming the extra to install instead of breaking ``edgepack``.
    """

    # name -> (module, attribute, extra)
    _lazy: ClassVar[dict[str, tuple[str, str, str]]] = {
        "deploy": ("cloud_targets.cli", "deploy", "cloud"),
        "service": ("cloud_targets.commands.service", "service", "cloud"),
        "profile": ("cloud_targets.commands.profile", "profile", "cloud"),
        "endpoint": ("cloud_targets.commands.endpoint", "endpoint", "cloud"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self._lazy:
            return command
        module_name, attribute, extra = self._lazy[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = exc.name or module_name

            @click.command(cmd_name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
            def unavailable() -> None:
                raise EdgepackError(f"'edgepack {cmd_name}' needs {missing}: pip install 'edgepack[{extra}]'")

            unavailable.help = f"(needs the {extra} extra: pip install 'edgepack[{extra}]')"
            return unavailable
        return getattr(module, attribute)


@click.group(cls=_EdgepackGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
cli.add_command(fpga)
cli.add_command(quickstart)


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
