"""``edgepack profile -m MODEL[:VER] --ic FILE --input-data FILE [--cpu 0.5,1,2] ...``: v1's ``az ml model profile``.

Serves the model locally under load at each CPU (and memory) setting and prints a table (or ``--json``)
with requests/s, latency percentiles, success rate, peak memory, and the recommended ``cpu`` /
``memoryInGB`` as a ``deploymentconfig.json`` snippet. Progress goes to stderr; stdout is the result.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cloud_targets.commands.common import (
    Warnings,
    check_file,
    inference_config,
    inference_options,
    logged_warnings,
    open_ws,
)
from packager.cli.output import console, err_console, markup_safe, print_json, printable


class _Progress:
    """One spinner for the current stage on stderr; ``✓ stage (s)`` when the next one starts."""

    def __init__(self) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=err_console, transient=True, disable=not err_console.is_terminal)  # fmt: skip
        self.task: Any = None
        self.text = ""
        self.t0 = 0.0

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done()
        self.progress.stop()

    def stage(self, text: str) -> None:
        self._done()
        self.text, self.t0 = text, time.perf_counter()
        self.task = self.progress.add_task(markup_safe(text), total=None)

    def _done(self) -> None:
        if self.task is None:
            return
        self.progress.remove_task(self.task)
        self.task = None
        if err_console.is_terminal:
            seconds = time.perf_counter() - self.t0
            self.progress.console.print(f"[green]✓[/] {markup_safe(self.text)} [dim]({seconds:.1f} s)[/]")


@click.command("profile")
@click.option("-n", "--name", "profile_name", help="Profile name (stored as <workspace>/profiles/NAME.json; "
              "default: the first model's name).")  # fmt: skip
@click.option("-m", "--model", "models", multiple=True, required=True, metavar="NAME[:VERSION]",
              help="Registered model (repeatable; latest version when none is given).")  # fmt: skip
@inference_options
@click.option("--input-data", required=True, metavar="FILE",
              help="Request bodies for /score: a JSON list (bodies or JSON strings), one body, or JSONL.")  # fmt: skip
@click.option("--cpu", default="0.5,1", show_default=True, metavar="LIST", help="CPU settings, e.g. 0.5,1,2.")
@click.option("--memory-gb", default=None, metavar="LIST", help="Memory limits in GB, e.g. 0.5,1 [default: none].")
@click.option("--duration", default="30s", show_default=True, help="Measured time per setting (after a warm-up).")
@click.option("--latency-target-ms", type=float, help="Recommend the smallest setting whose p99 is within this.")
@click.option("--latency-percentile", type=float, default=99.0, show_default=True,
              help="The percentile the target applies to (50, 90, 95, 99 or 99.9).")  # fmt: skip
@click.option("--concurrency", type=int, help="Connections of the load generator [default: 2 per core].")
@click.option("--loadgen-processes", type=int, default=1, show_default=True, help="Load generator processes.")
@click.option("--mode", type=click.Choice(["docker", "process"]), help="Local mode [default: as for services].")
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
@click.pass_context
def profile(ctx: click.Context, profile_name: str | None, models: tuple[str, ...], ic: str | None,
            entry_script: str | None, source_dir: str | None, conda_file: str | None, runtime: str | None,
            input_data: str, cpu: str, memory_gb: str | None, duration: str, latency_target_ms: float | None,
            latency_percentile: float, concurrency: int | None, loadgen_processes: int, mode: str | None,
            as_json: bool) -> None:  # fmt: skip
    """Profile a model: serve it locally under load at each CPU setting and recommend cpu/memoryInGB."""
    from cloud_targets import Model
    from cloud_targets.profiling import limits
    from cloud_targets.profiling.inputs import load_file

    check_file(ic, "--ic")
    cpus = limits.parse_list(cpu, "--cpu")
    mems: list[float | None] = limits.parse_list(memory_gb, "--memory-gb") if memory_gb else [None]  # type: ignore[assignment]
    seconds = limits.parse_duration(duration)
    for c in cpus:
        limits.check_cpu(c)
    bodies = load_file(input_data)
    name = profile_name or models[0].split(":", 1)[0].lower().replace("_", "-")
    config = inference_config(ic, entry_script, source_dir, conda_file, runtime)
    ws = open_ws(ctx)
    warnings = Warnings()
    with logged_warnings(warnings), _Progress() as progress:
        result = Model.profile(ws, name, list(models), config, bodies, cpu=cpus, memory_gb=mems, duration_s=seconds,
                               latency_target_ms=latency_target_ms, concurrency=concurrency, mode=mode,
                               latency_percentile=latency_percentile,
                               loadgen_processes=loadgen_processes, on_stage=progress.stage)  # fmt: skip
    doc = result.get_details()
    if as_json:
        print_json(doc)
        return
    _print(doc)


def _print(doc: dict[str, Any]) -> None:
    from cloud_targets.profiling.report import table

    out = console if console.is_terminal else Console(width=140, highlight=False)  # the whole table in a pipe
    out.print(table(doc))
    gen = doc["loadGenerator"]
    console.print(printable(f"load generator: {gen['processes']} process(es), top rate "
                            f"{gen['maxRequestsPerSecond']:.0f} requests/s against a trivial endpoint; "
                            f"this machine has {gen['machineCpus']} CPUs"),
                  markup=False)  # fmt: skip
    for w in doc["warnings"]:
        err_console.print(f"[yellow]warning:[/] {markup_safe(w)}")
    rec = doc["recommendation"]
    if rec["cpu"] is None:
        console.print(printable(f"no recommendation: {rec['reason']}"), markup=False)
        return
    console.print(printable(f"recommended: cpu {rec['cpu']:g}, memoryInGB {rec['memoryInGB']} ({rec['reason']})"),
                  markup=False)  # fmt: skip
    console.print("deploymentconfig.json:", markup=False)
    console.print(json.dumps(doc["deploymentConfig"], indent=2), markup=False, highlight=False)


__all__ = ["profile"]
