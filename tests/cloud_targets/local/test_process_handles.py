"""Process-mode handles: a recorded pid is signalled only while it is still the process we started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cloud_targets.targets.base import Target
from cloud_targets.targets.local import LocalTarget, process
from packager import Workspace


def test_a_reused_pid_is_left_alone() -> None:
    me = {"mode": "process", "pid": os.getpid(), "start_time": process.start_time(os.getpid())}
    assert process.alive(me)
    stale = {**me, "start_time": me["start_time"] - 1}  # same pid, another process's start time
    assert not process.alive(stale)
    process.stop(stale)  # must not signal this test process
    assert process.alive(me)


def test_stop_ends_the_whole_group(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
         "'import time; time.sleep(60)']); time.sleep(60)"],
        start_new_session=True,
    )  # fmt: skip
    handle = {"pid": child.pid, "start_time": process.start_time(child.pid)}
    process.stop(handle, timeout=2)
    child.wait(5)
    out = subprocess.run(["pgrep", "-g", str(child.pid)], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == ""


def test_local_target_is_a_target(tmp_path: Path) -> None:
    target = LocalTarget(Workspace.from_path(tmp_path / "ws"), tmp_path / "svc", mode="process")
    assert isinstance(target, Target)


def test_tail_reads_only_the_end_of_a_big_log(tmp_path: Path) -> None:
    """A long-running service's log only grows: ``logs``/``state`` read its end, not the whole file (a sparse
    1 GiB file here: reading it all would take a gigabyte of memory)."""
    log = process.log_path(tmp_path)
    log.parent.mkdir(mode=0o700)
    with open(log, "wb") as fh:
        fh.seek(1 << 30)
        fh.write(b"".join(f"line {i}\n".encode() for i in range(100_000)))
    assert process.tail(tmp_path, 3) == "line 99997\nline 99998\nline 99999\n"
    assert process.tail(tmp_path, 20_000).splitlines()[0] == "line 80000"
    small = tmp_path / "small"
    process.log_path(small).parent.mkdir(parents=True)
    process.log_path(small).write_bytes(b"one\ntwo")
    assert process.tail(small, 5) == "one\ntwo\n" and process.tail(small, 1) == "two\n"
