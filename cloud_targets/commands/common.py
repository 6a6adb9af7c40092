"""What ``edgepack deploy``, ``service`` and ``endpoint`` share: config loading with warnings, stage progress,
the log bridge for ``cloud_targets.*`` warnings, the public (secret-free) service record, and output helpers
(plain lines, tables, reports, log tails, confirmations)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloud_targets.config import DeploymentConfig, LocalDeploymentConfig, load_deployment_config
from packager.cli.output import console, err_console, markup_safe, plain, print_json, print_warning, printable
from packager.errors import InvalidInputError
from packager.image.inference_config import InferenceConfig

MAX_REQUEST_BYTES = 100 * 1024 * 1024

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (no secrets).")


class Warnings:
    """Warnings printed once each (``warning: ...`` on stderr), whether returned by a loader or logged."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def add(self, messages: Sequence[str]) -> None:
        for message in messages:
            if not self.printed(message):
                self.seen.append(message)
                print_warning(message)

    def printed(self, message: str) -> bool:
        return any(message == s or message.endswith(s) or s.endswith(message) for s in self.seen)


class _Bridge(logging.Handler):
    """``cloud_targets.*`` warnings (the console handler covers ``packager.*`` only) through :class:`Warnings`."""

    def __init__(self, warnings: Warnings):
        super().__init__(logging.WARNING)
        self.warnings = warnings

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.warnings.add([record.getMessage()])
        except Exception:  # a broken message must not break the command
            self.handleError(record)


class _Once(logging.Filter):
    """On the ``packager`` console handler: a warning already printed is not printed again."""

    def __init__(self, warnings: Warnings):
        super().__init__()
        self.warnings = warnings

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.WARNING:
            return True
        if self.warnings.printed(message):
            return False
        self.warnings.seen.append(message)
        return True


@contextmanager
def logged_warnings(warnings: Warnings) -> Iterator[None]:
    """While the block runs, the ``cloud_targets`` loggers' warnings are printed too, and every warning
    (logged or added from a returned list) is printed once."""
    from packager.cli.output import ConsoleLogHandler

    logger = logging.getLogger("cloud_targets")
    handler = _Bridge(warnings)
    once = _Once(warnings)
    console_handlers = [h for h in logging.getLogger("packager").handlers if isinstance(h, ConsoleLogHandler)]
    old_level = logger.level
    logger.addHandler(handler)
    for h in console_handlers:
        h.addFilter(once)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for h in console_handlers:
            h.removeFilter(once)
        logger.setLevel(old_level)


# -- inference and deployment configurations -----------------------------------------------------------------
def inference_config(
    ic: str | None, entry_script: str | None, source_dir: str | None, conda_file: str | None, runtime: str | None
) -> InferenceConfig | None:
    """``--ic FILE`` or the ``--es/--sd/--cf/--rt`` flags (v1's ``az ml model deploy``); ``None`` for neither."""
    flags = [f for f, v in (("--es", entry_script), ("--sd", source_dir), ("--cf", conda_file), ("--rt", runtime)) if v]
    if ic and flags:
        raise InvalidInputError(f"give either --ic FILE or {'/'.join(flags)}, not both")
    if ic:
        return InferenceConfig.load(ic)
    if not flags:
        return None
    return InferenceConfig(
        entry_script=entry_script, source_directory=source_dir, conda_file=conda_file, runtime=runtime
    )


def deployment_config(dc: str | None) -> tuple[DeploymentConfig, list[str]]:
    """``--dc FILE`` (v1's deploymentconfig.json or YAML) with its warnings; none: Local on a free port."""
    if dc is None:
        return LocalDeploymentConfig(), []
    return load_deployment_config(dc)


def inference_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """v1's inference flags: ``--ic`` or ``--es/--sd/--cf/--rt``."""
    options = [
        click.option("--ic", "--inference-config-file", "ic", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Azure ML v1 inferenceconfig.json (or YAML): entryScript, sourceDirectory, condaFile..."),
        click.option("--es", "--entry-script", "entry_script", metavar="FILE",
                     help="score.py with init()/run(), relative to --sd when given (instead of --ic)."),
        click.option("--sd", "--source-directory", "source_dir", type=click.Path(file_okay=False), metavar="DIR",
                     help="Folder with the app's code (instead of --ic)."),
        click.option("--cf", "--conda-file", "conda_file", metavar="FILE",
                     help="Conda environment file of the app (instead of --ic)."),
        click.option("--rt", "--runtime", "runtime", metavar="python", help="Runtime (only 'python'; as in v1)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def check_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise InvalidInputError(f"{flag} {path}: no such file")


# -- progress -------------------------------------------------------------------------------------------------
class Stages:
    """A spinner per stage (``building and starting``, ``waiting for Healthy``...) on stderr, then one
    ``✓ stage (1.2 s)`` line when it ends. Quiet when stderr is not a terminal: scripts read stdout."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )

    def __enter__(self) -> Stages:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        task = self.progress.add_task(markup_safe(name), total=None)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.progress.remove_task(task)
        if err_console.is_terminal:
            seconds = time.perf_counter() - t0
            self.progress.console.print(f"[green]✓[/] {markup_safe(name)} [dim]({seconds:.1f} s)[/]")


# -- output ---------------------------------------------------------------------------------------------------
def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def public_record(service: Any, state: str | None = None) -> dict[str, Any]:
    """``service.serialize()`` (no secrets) with the state given or as last stored."""
    doc = service.serialize()
    if state is not None:
        doc["state"] = state
    return doc


def echo(text: str) -> None:
    """One line of plain text on stdout (no markup, never wrapped)."""
    console.print(printable(text), markup=False, soft_wrap=True)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A borderless table on stdout, every cell as plain text."""
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(plain(str(c)) for c in row))
    console.print(table)


def print_report(doc: dict[str, Any], lines: Sequence[str], as_json: bool, warnings: Warnings | None) -> None:
    """``doc`` (with the warnings printed so far) as JSON for ``--json``, else ``lines``."""
    if as_json:
        print_json({**doc, **({"warnings": list(warnings.seen)} if warnings else {})})
        return
    for line in lines:
        echo(line)


def print_log_tail(exc: BaseException, lines: int = 30) -> None:
    """A failed deployment's last log lines (``exc.logs``) on stderr."""
    logs = (getattr(exc, "logs", "") or "").strip().splitlines()[-lines:]
    if logs:
        err_console.print("last log lines:", markup=False)
        for line in logs:
            err_console.print("  " + printable(line), markup=False, soft_wrap=True)


def confirm(yes: bool, question: str, flag: str = "--yes") -> None:
    """Ask ``question?`` unless ``yes``; with no terminal to ask on, a usage error naming ``flag``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"pass {flag} to {question} without a prompt")
    click.confirm(f"{question}?", abort=True)


def json_body(data: str | None = None, file: str | None = None) -> str:
    """A request body to score: ``data``, else the UTF-8 text of ``file`` (at most ``MAX_REQUEST_BYTES``),
    checked to be JSON."""
    what = "the input" if data is not None else f"request file {file}"
    if data is None:
        path = Path(file or "")
        if path.stat().st_size > MAX_REQUEST_BYTES:
            raise InvalidInputError(f"{what} is larger than {MAX_REQUEST_BYTES} bytes")
        try:
            data = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{what} is not UTF-8 text ({exc.reason}); give JSON") from None
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON ({exc}); give a JSON body") from None
    return data


def open_ws(ctx: click.Context) -> Any:
    from packager.cli.model import open_workspace

    return open_workspace(ctx)


__all__ = [
    "Stages",
    "Warnings",
    "check_file",
    "confirm",
    "deployment_config",
    "echo",
    "first_line",
    "inference_config",
    "inference_options",
    "json_body",
    "json_option",
    "logged_warnings",
    "open_ws",
    "print_log_tail",
    "print_report",
    "print_table",
    "public_record",
]
