"""Server processes for the tests: ``edgepack serve`` or ``python -m edge_module``, stderr collected."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import ROOT

LAUNCH = (
    "import sys; from packager.cli import cli, main; from packager.cli.serve import serve; "
    "cli.add_command(serve); main(sys.argv[1:])"
)


class StderrProcess:
    """A child process whose stderr lines a thread collects (``lines``), with waits on them and a clean stop."""

    STOP_SIGNAL: int = signal.SIGINT
    STOP_WAIT: float = 15

    def _collect(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append(line)
            self._q.put(line)

    def wait_for(self, pattern: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.1)
            except queue.Empty:
                if self.p.poll() is not None:
                    break
                continue
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n{''.join(self.lines)}")

    def wait_seen(self, pattern: str, timeout: float = 20) -> None:
        """Wait until some stderr line, earlier or later, matches (unlike :meth:`wait_for`, order-free)."""
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.lines)):
            if time.monotonic() > deadline or self.p.poll() is not None:
                raise AssertionError(f"no line matching {pattern!r}; stderr so far:\n{''.join(self.lines)}")
            time.sleep(0.05)

    def stop(self, sig: int | None = None) -> int:
        """Signal the process (``STOP_SIGNAL`` by default), kill it after ``STOP_WAIT`` s; its exit code."""
        if self.p.poll() is None:
            self.p.send_signal(self.STOP_SIGNAL if sig is None else sig)
            try:
                self.p.wait(self.STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Proc(StderrProcess):
    """A server process whose stderr lines are collected by a thread."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, module: bool = False, cwd: str | None = None
    ):
        full_env = {**os.environ, **(env or {})}
        full_env.pop("AZUREML_MODEL_DIR", None)
        cmd = [sys.executable, "-m", "edge_module", *args] if module else [sys.executable, "-c", LAUNCH, *args]
        self._collect(
            subprocess.Popen(
                cmd, cwd=cwd or ROOT, env=full_env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
