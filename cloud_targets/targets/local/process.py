"""Process mode: the scoring module as a detached local process on staged content (no Docker engine).

The process runs ``python -m edge_module`` with this interpreter, in its own session (process group),
with the v1 environment (``AZUREML_MODEL_DIR``, ``AML_APP_ROOT``, ``AZUREML_ENTRY_SCRIPT``), listening
on 127.0.0.1 only, its output appended to ``<service>/logs/service.log`` (0600). Its pid and start time
(``/proc/<pid>/stat``) are recorded, so a later call never signals a process that reused the pid.
Keys reach it through its environment, which only its user (and root) can read (``/proc/<pid>/environ``
is 0400). It uses this machine's Python packages: the inference config's conda/pip dependencies are
not installed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import edge_module
from cloud_targets.targets.base import FAILED, TargetStatus
from cloud_targets.targets.local.health import probe

LOG_DIR = "logs"
LOG_FILE = "service.log"
#: Variables of the caller's environment a scoring process keeps (no EDGEPACK_* leaks in from the shell).
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "VIRTUAL_ENV", "TZ")
_children: dict[int, subprocess.Popen[bytes]] = {}  # reaped on stop when we are the parent


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie is gone for our purposes
        return None
    return int(fields[19])


def alive(handle: Mapping[str, Any]) -> bool:
    """True when the recorded process is still the one we started (same pid and start time)."""
    pid, started = handle.get("pid"), handle.get("start_time")
    return bool(pid) and started is not None and start_time(int(pid)) == started


def log_path(service_dir: Path, log_file: str = LOG_FILE) -> Path:
    return service_dir / LOG_DIR / log_file


def _open_log(service_dir: Path, log_file: str = LOG_FILE) -> int:
    folder = service_dir / LOG_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder / log_file, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def start(
    service_dir: Path,
    content_dir: Path,
    model_dir: Path,
    entry_script: str,
    port: int,
    env: Mapping[str, str],
    preexec: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start the scoring process; returns its handle (``mode``, ``pid``, ``start_time``, ``port``, ``content``).

    ``preexec`` runs in the child before the module starts (the profiler puts it in a cgroup there).
    """
    app = content_dir / "app"
    run_env = {
        "AZUREML_MODEL_DIR": str(model_dir),
        "AML_APP_ROOT": str(app),
        "AZUREML_SOURCE_DIRECTORY": str(app),
        "EDGEPACK_HOST": "127.0.0.1",
        "EDGEPACK_PORT": str(port),
        **dict(env),
    }
    if entry_script:
        run_env["AZUREML_ENTRY_SCRIPT"] = entry_script
    handle = spawn(
        service_dir, ["-m", "edge_module"], run_env, cwd=app, note=f"starting on port {port}", preexec=preexec
    )
    return {**handle, "port": port, "content": str(content_dir)}


def spawn(
    service_dir: Path,
    args: list[str],
    env: Mapping[str, str],
    cwd: Path,
    note: str,
    log_file: str = LOG_FILE,
    preexec: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start ``python ARGS`` detached (own session), output appended to ``<service_dir>/logs/<log_file>``.

    The environment is :data:`KEEP_ENV` of ours, ``PYTHONPATH`` to this edgepack, and ``env`` (secrets
    go here, never in ``args``). Returns ``{"mode": "process", "pid", "start_time"}``."""
    run_env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    module_root = str(Path(edge_module.__file__).resolve().parent.parent)
    run_env.update({"PYTHONPATH": module_root, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **dict(env)})
    log_fd = _open_log(service_dir, log_file)
    try:
        os.write(log_fd, f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {note}\n".encode())
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec,
        )
    finally:
        os.close(log_fd)
    _children[proc.pid] = proc
    return {"mode": "process", "pid": proc.pid, "start_time": start_time(proc.pid)}


def stop(handle: Mapping[str, Any], timeout: float = 5.0) -> None:
    """Stop the recorded process group (TERM, then KILL after ``timeout``); a reused pid is left alone."""
    pid = handle.get("pid")
    if not pid or not alive(handle):
        _reap(int(pid or 0))
        return
    pid = int(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if start_time(pid) is None:
            break
        time.sleep(0.02)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    # the group's other members (with --workers N) go with the leader's TERM; make sure
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    proc = _children.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
            return
        _children[pid] = proc


def status(handle: Mapping[str, Any], service_dir: Path) -> TargetStatus:
    """Failed when the process is gone (with its last log lines), else what its readiness probe says."""
    if not alive(handle):
        return TargetStatus(FAILED, "the scoring process exited:\n" + tail(service_dir, 40))
    return probe(int(handle["port"]))


def tail(service_dir: Path, num_lines: int = 5000, log_file: str = LOG_FILE) -> str:
    """The last ``num_lines`` lines of the service's log."""
    try:
        fd = os.open(log_path(service_dir, log_file), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        data = _read_tail(fh, num_lines)
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-num_lines:]) + ("\n" if lines else "")


def _read_tail(fh: Any, num_lines: int, block: int = 1 << 16) -> bytes:
    """The end of ``fh`` holding at least ``num_lines`` lines (the log only grows: never read all of it)."""
    end = fh.seek(0, os.SEEK_END)
    pos, data = end, b""
    while pos > 0 and data.count(b"\n") <= num_lines:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
    return data if pos == 0 else data[data.index(b"\n") + 1 :]  # drop the partial first line


__all__ = ["alive", "log_path", "spawn", "start", "start_time", "status", "stop", "tail"]
