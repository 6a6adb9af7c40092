"""Console output shared by CLI commands: JSON for scripts, rich for people, progress on stderr.

Text that comes from users or files (descriptions, tags, file names, error messages) goes to people
through :func:`printable` (or :func:`plain` for rich cells): control characters are shown as
escapes, never sent to the terminal, and brackets are never parsed as rich markup. ``--json`` output
is exact.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    cp = ord(ch)
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


def printable(value: object) -> str:
    """``value`` as text a terminal shows as is: characters Python's ``repr`` would escape (C0 and C1
    controls, DEL, bidi overrides, line separators, lone surrogates...) become ``\\x1b``-style escapes."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def plain(value: object) -> Text:
    """A rich cell or line for untrusted text: :func:`printable`, and never parsed as markup."""
    return Text(printable(value))


def markup_safe(value: object) -> str:
    """Untrusted text to embed in a rich markup string."""
    return escape(printable(value))


def print_warning(message: object, level: str = "warning") -> None:
    """One line on stderr, ``warning: <message>``, the message escaped (never markup, no control characters)."""
    colour = "red" if level in ("error", "critical") else "yellow"
    err_console.print(f"[{colour}]{level}:[/] {markup_safe(message)}", soft_wrap=True)


class ConsoleLogHandler(logging.Handler):
    """Log records of edgepack's own modules as one :func:`print_warning` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print_warning(record.getMessage(), record.levelname.lower())
        except Exception:  # a broken message must not break the command
            self.handleError(record)


def log_to_console(debug: bool = False) -> None:
    """Send the ``packager`` loggers' warnings (everything with ``debug``) to stderr, once."""
    logger = logging.getLogger("packager")
    if not any(isinstance(h, ConsoleLogHandler) for h in logger.handlers):
        logger.addHandler(ConsoleLogHandler())
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _byte_bars() -> Progress:
    """Transient byte-count bars on stderr (off when stderr is not a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Any]:
    """A transient byte-count progress bar on stderr; yields ``advance(nbytes)``."""
    with _byte_bars() as progress:
        task = progress.add_task(markup_safe(description), total=total)
        yield lambda n: progress.advance(task, n)


class RichReporter:
    """The image builder's progress sink for people: a bar per task (layer, download, upload) on
    stderr while it runs, then one line per finished task. Quiet when stderr is not a terminal
    unless ``verbose``: scripts read ``--json`` from stdout."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.progress = _byte_bars()
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, task: str, total: int | None = None) -> None:
        if task in self.tasks:
            self.progress.reset(self.tasks[task], total=total)
        else:
            self.tasks[task] = self.progress.add_task(markup_safe(task), total=total)

    def advance(self, task: str, amount: int) -> None:
        task_id = self.tasks.get(task)
        if task_id is not None:
            self.progress.advance(task_id, amount)

    def done(self, task: str, note: str = "") -> None:
        task_id = self.tasks.pop(task, None)
        if task_id is not None:
            self.progress.remove_task(task_id)
        if err_console.is_terminal or self.verbose:
            line = f"[green]✓[/] {markup_safe(task)}" + (f" [dim]{markup_safe(note)}[/]" if note else "")
            self.progress.console.print(line, markup=True)
