"""Running the quickstart: a fresh folder, the steps in order, failures recorded (later steps that do not
need the failed one still run), one :class:`~packager.quickstart.report.Report`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError
from packager.quickstart import steps
from packager.quickstart.report import Listener, NullListener, Report, StepResult
from packager.workspace import Workspace

MARKER = ".edgepack-quickstart"
DEFAULT_DIRECTORY = Path("edgepack-quickstart")

#: name, title, the steps it needs (ok), the function
STEPS: tuple[tuple[str, str, tuple[str, ...], Callable[..., None]], ...] = (
    ("train", "train + register", (), steps.train),
    ("convert", "convert to ONNX", ("train",), steps.convert),
    ("quantize", "quantize to INT8", ("convert",), steps.quantize),
    ("fpga", "compile for FPGA", ("convert",), steps.fpga),
    ("build", "build module image", ("convert",), steps.build),
    ("manifest", "IoT Edge manifest", ("convert",), steps.manifest),
    ("serve", "serve + score", ("convert",), steps.serve),
)
STEP_NAMES = tuple(name for name, *_ in STEPS)
SKIPPABLE = ("quantize", "fpga", "build", "manifest", "serve")


def fresh_directory(directory: Path) -> Path:
    """Empty ``directory`` for a new run: created, or cleared when an earlier quickstart made it (its marker
    file); any other non-empty folder is refused rather than deleted."""
    directory = directory.absolute()
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise InvalidInputError(f"{directory} is not a folder: pass another --dir")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise InvalidInputError(
                f"{directory} is not empty and no quickstart made it: pass another --dir (it is cleared on each run)"
            )
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `edgepack quickstart`; cleared when it runs again\n")
    return directory


def run_quickstart(options: steps.Options, listener: Listener | None = None, reporter: Any = None) -> Report:
    """Run every step (but ``options.skip``) in a fresh ``options.directory``; never raises for a step's failure."""
    listener = listener or NullListener()
    unknown = sorted(set(options.skip) - set(SKIPPABLE))
    if unknown:
        raise InvalidInputError(f"--skip {unknown[0]}: steps that can be skipped: {', '.join(SKIPPABLE)}")
    t0 = time.perf_counter()
    options.directory = fresh_directory(options.directory)
    services = {"docker": "not used (daemonless build)", "cloud": "not used"}
    report = Report(str(options.directory), services)
    ctx = steps.Context(options, Workspace.from_path(options.directory / "workspace"), listener, services)
    for name, title, needs, func in STEPS:
        result = StepResult(name, title)
        report.steps.append(result)
        failed = [n for n in needs if (s := report.step(n)) is None or not s.ok]
        if name in options.skip or failed:
            result.status = "skipped"
            result.error = f"--skip {name}" if name in options.skip else f"needs {failed[0]}, which did not run"
            listener.finished(result)
            continue
        listener.started(name, title)
        t = time.perf_counter()
        try:
            func(ctx, result, reporter) if name == "build" else func(ctx, result)
        except Exception as exc:  # recorded; the summary shows it and the run exits non-zero
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        result.seconds = time.perf_counter() - t
        listener.finished(result)
    build = report.step("build")
    services.setdefault("base", "none found" if build is not None and build.status == "failed" else "not used")
    services.setdefault("registry", "not used")
    services.setdefault("mqtt", "not used")
    report.seconds = time.perf_counter() - t0
    return report
