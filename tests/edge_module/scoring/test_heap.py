"""glibc malloc thresholds raised for the emulator, in fresh processes (the setting is per process)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from edge_module.scoring import heap

SCRIPT = "from edge_module.scoring.heap import keep_freed_memory as k; print(k(), k())"


def _run(env: dict[str, str]) -> str:
    clean = {key: value for key, value in os.environ.items() if key not in heap.ENV_NAMES}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_are_set_once_on_glibc() -> None:
    assert _run({}) == "True True"


def test_the_environment_wins() -> None:
    assert _run({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False False"
