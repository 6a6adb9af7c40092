"""``edgepack edge``: run a deployment manifest on this machine (a small local IoT Edge runtime).

``run FILE`` starts the local edgeHub and the manifest's modules and supervises them until Ctrl-C (which
removes what it started); ``status`` shows each module's state and reported properties; ``messages``
prints what reached ``$upstream``; ``apply FILE`` re-applies a changed manifest to the running runtime
(twins are patched, routes replaced, changed modules created again). See :mod:`packager.edge.runtime`.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from packager.cli.output import console, err_console, plain, print_json, printable
from packager.errors import EdgepackError, InvalidInputError

APPLY_FILE = "apply.json"
APPLIED_FILE = "applied.json"


def _state_dir(ctx: click.Context) -> Path:
    from packager.edge.runtime import state_dir_for

    return state_dir_for((ctx.obj or {}).get("workspace"))


def _plan(path: str) -> Any:
    from packager.edge.plan import load_manifest, plan_from_manifest

    return plan_from_manifest(load_manifest(path), path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@click.group()
def edge() -> None:
    """Run an IoT Edge deployment manifest on this machine (local edgeHub + Docker modules)."""


@edge.command()
@click.argument("manifest_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--device", default="edgepack-device", show_default=True, help="Device id the modules see.")
@click.option("--watch/--no-watch", default=True, show_default=True, help="Re-apply FILE when it changes.")
@click.pass_context
def run(ctx: click.Context, manifest_file: str, device: str, watch: bool) -> None:
    """Start FILE's modules around a local edgeHub; Ctrl-C stops and removes them."""
    from packager.edge.runtime import EdgeRuntime, read_state
    from packager.fs import write_atomic

    plan = _plan(manifest_file)  # a broken manifest starts nothing
    state_dir = _state_dir(ctx)
    previous = read_state(state_dir) if state_dir.exists() else None
    if previous and previous.get("running") and _alive(int(previous.get("pid", 0))) and previous["pid"] != os.getpid():
        raise EdgepackError(f"a local edge runtime (pid {previous['pid']}) already uses {state_dir}: stop it first")
    for name in (APPLY_FILE, APPLIED_FILE):
        (state_dir / name).unlink(missing_ok=True)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    runtime = EdgeRuntime(plan, state_dir, device_id=device)
    try:
        signal.signal(signal.SIGINT, on_signal)
        with err_console.status("starting the local edge hub and modules"):
            runtime.start()
        assert runtime.hub is not None
        err_console.print(
            f"edge hub on {runtime.hub.host}:{runtime.hub.port}; modules: {', '.join(plan.modules) or 'none'};"
            f" $upstream in {printable(state_dir / 'upstream.jsonl')}. Ctrl-C stops.",
            markup=False,
            highlight=False,
        )
        mtime = Path(manifest_file).stat().st_mtime
        while not stopping:
            time.sleep(0.5)
            runtime.supervise()
            request = state_dir / APPLY_FILE
            if request.is_file() and not request.is_symlink():
                doc = json.loads(request.read_bytes())
                request.unlink()
                _apply(runtime, doc.get("path", "apply request"), doc, state_dir, write_atomic)
            elif watch:
                try:
                    now = Path(manifest_file).stat().st_mtime
                except OSError:
                    now = mtime
                if now != mtime:
                    mtime = now
                    _apply(runtime, manifest_file, None, state_dir, write_atomic)
            runtime.write_state()
    finally:
        with err_console.status("stopping: removing the modules"):
            runtime.stop()
        err_console.print("stopped; modules removed", markup=False)


def _apply(runtime: Any, where: str, request: dict[str, Any] | None, state_dir: Path, write_atomic: Any) -> None:
    from packager.edge.plan import plan_from_manifest

    result: dict[str, Any] = {"id": (request or {}).get("id")}
    try:
        doc = request["manifest"] if request else json.loads(Path(where).read_bytes())
        changes = runtime.apply(plan_from_manifest(doc, where))
        result["changes"] = changes
        for line in changes or ["no changes"]:
            err_console.print(f"applied {printable(where)}: {printable(line)}", markup=False, highlight=False)
    except (EdgepackError, ValueError, OSError, RuntimeError) as e:
        result["error"] = str(e)
        err_console.print(f"warning: {printable(where)} not applied: {printable(e)}", markup=False, highlight=False)
    write_atomic(state_dir / APPLIED_FILE, json.dumps(result).encode(), mode=0o600)


@edge.command()
@click.argument("manifest_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the runtime to apply it.")
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
@click.pass_context
def apply(ctx: click.Context, manifest_file: str, timeout: float, as_json: bool) -> None:
    """Re-apply FILE to the running `edge run` (twins patched, routes replaced, changed modules recreated)."""
    from packager.edge.plan import load_manifest, plan_from_manifest
    from packager.edge.runtime import read_state
    from packager.fs import write_atomic

    doc = load_manifest(manifest_file)
    plan_from_manifest(doc, manifest_file)  # broken: nothing is sent
    state_dir = _state_dir(ctx)
    state = read_state(state_dir) if state_dir.is_dir() else None
    if not state or not state.get("running") or not _alive(int(state.get("pid", 0))):
        raise EdgepackError(f"no local edge runtime is running on {state_dir}: start one with `edgepack edge run`")
    request_id = uuid.uuid4().hex
    request = {"id": request_id, "path": manifest_file, "manifest": doc}
    write_atomic(state_dir / APPLY_FILE, json.dumps(request).encode(), mode=0o600)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = state_dir / APPLIED_FILE
        if done.is_file() and not done.is_symlink():
            result = json.loads(done.read_bytes())
            if result.get("id") == request_id:
                if "error" in result:
                    raise EdgepackError(f"the runtime did not apply {manifest_file}: {result['error']}")
                if as_json:
                    print_json({"changes": result["changes"]})
                else:
                    for line in result["changes"] or ["no changes"]:
                        console.print(plain(line))
                return
        time.sleep(0.1)
    raise EdgepackError(f"the runtime did not answer within {timeout:g} s")


@edge.command()
@click.option("--json", "as_json", is_flag=True, help="The whole state as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Each module's state, restarts, hub connection and reported properties."""
    from packager.edge.runtime import read_state

    state_dir = _state_dir(ctx)
    state = read_state(state_dir) if state_dir.is_dir() else None
    if state is None:
        raise EdgepackError(f"no local edge runtime has run with {state_dir}: start one with `edgepack edge run`")
    if state.get("running") and not _alive(int(state.get("pid", 0))):
        state["running"] = False
        state["note"] = "the runtime is gone (crashed?): its containers are removed on the next run"
    if as_json:
        print_json(state)
        return
    head = "running" if state.get("running") else "not running"
    console.print(plain(f"local edge runtime {head}; device {state.get('device')}; hub {state.get('hub')}"))
    if state.get("note"):
        console.print(plain(state["note"]))
    table = Table("module", "container", "restarts", "hub", "queued", "reported")
    for name, m in state.get("modules", {}).items():
        reported = json.dumps(m.get("reported") or {}, separators=(",", ":"))
        table.add_row(
            plain(name),
            plain(m.get("status")),
            str(m.get("restarts", 0)),
            "connected" if m.get("connected") else "-",
            str(m.get("queued", 0)),
            plain(reported if len(reported) < 400 else reported[:397] + "..."),
        )
    console.print(table)
    up = state.get("upstream") or {}
    console.print(plain(f"$upstream: {up.get('messages', 0)} message(s) in {up.get('file')}"))


@edge.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, as stored.")
@click.option("--last", "-n", type=click.IntRange(min=0), default=None, help="Only the last N messages.")
@click.pass_context
def messages(ctx: click.Context, follow: bool, as_json: bool, last: int | None) -> None:
    """Messages that reached $upstream (module, output, properties, body)."""
    from packager.edge.runtime import UPSTREAM_FILE

    path = _state_dir(ctx) / UPSTREAM_FILE
    if path.is_symlink():
        raise InvalidInputError(f"{path} is a symbolic link: not followed")
    if not path.is_file():
        if not follow:
            raise EdgepackError(f"no $upstream messages yet ({path} does not exist)")
        while not path.is_file():
            time.sleep(0.5)
    with open(path, "rb") as f:
        lines = f.readlines()
        if last is not None:
            lines = lines[-last:] if last else []
        for line in lines:
            _show(line, as_json)
        while follow:
            line = f.readline()
            if line.endswith(b"\n"):
                _show(line, as_json)
            else:
                if line:
                    f.seek(-len(line), os.SEEK_CUR)
                time.sleep(0.2)


def _show(line: bytes, as_json: bool) -> None:
    if as_json:
        click.echo(line.decode("utf-8", "replace").rstrip("\n"))
        return
    try:
        m = json.loads(line)
    except ValueError:
        return
    props = "&".join(f"{k}={v}" for k, v in (m.get("properties") or {}).items())
    stamp = time.strftime("%H:%M:%S", time.localtime(m.get("time", 0)))
    body = m.get("body", "<binary>")
    console.print(plain(f"{stamp} {m.get('module')}/{m.get('output')} [{props}] {body}"), soft_wrap=True)
