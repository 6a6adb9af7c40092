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
