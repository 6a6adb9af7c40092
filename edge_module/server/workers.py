"""Several worker processes on one port (``SO_REUSEPORT``), supervised by the parent.

The parent binds the port first (so ``port=0`` resolves to one free port for everyone) without
listening on it, creates the shared metrics map, and forks the workers; each builds and loads its
own app and listens on its own ``SO_REUSEPORT`` socket, so the kernel spreads connections across
them. The concurrency limit (``--max-concurrent-requests``) is the replica's: one semaphore, made
before the fork, for every worker. At start every worker listens at once (liveness answers while
models load); a worker restarted after one has been ready loads first and joins the port only when
it can score.
Workers report ``listening``/``ready``/``failed`` to the parent over a pipe. A worker that dies is
restarted with a growing delay; a failed ``load()`` is not a death: that worker stays up,
alive and not ready, and the failure is reported once instead of looping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from edge_module.runtime import ScoringApp
from edge_module.server.limits import SharedLimit
from edge_module.server.metrics import SharedSlots
from edge_module.settings import Settings
from edge_module.transports.hosted import TRANSPORT_FAILED

log = logging.getLogger("edgepack.server")


class _Worker:
    def __init__(self, index: int):
        self.index = index
        self.pid = 0
        self.fd = -1
        self.buffer = b""
        self.started = 0.0
        self.restarts = 0
        self.next_start = 0.0


class Supervisor:
    def __init__(
        self,
        app_factory: Callable[[], ScoringApp],
        settings: Settings,
        on_state: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.app_factory = app_factory
        self.settings = settings
        self.on_state = on_state
        self.workers = [_Worker(i) for i in range(settings.workers)]
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.exit_code = 0
        self.port = settings.port
        # once a worker has been ready, workers (re)started later load before they listen, so the
        # kernel never hands them a connection they would answer with 503
        self.ever_ready = False

    # -- child ----------------------------------------------------------------------------------------
    def _child(self, worker: _Worker, write_fd: int, listen_after_load: bool) -> None:
        from edge_module.server.lifecycle import Server, build, make_socket

        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; SIGTERM stops us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

            def report(state: str, info: dict[str, Any]) -> None:
                line = json.dumps({"state": state, "worker": worker.index, **info}, default=str) + "\n"
                with contextlib.suppress(OSError):
                    os.write(write_fd, line.encode())

            sock = make_socket(self.settings.host, self.port, reuse_port=True, listen=not listen_after_load)
            settings = self.settings.replace(port=self.port)
            server = Server(
                build(self.app_factory),
                settings,
                worker.index,
                self.shared,
                on_state=report,
                exit_on_transport_failure=True,
                shared_limit=self.shared_limit,
            )
            server.run(sock, listen_after_load=listen_after_load)
            code = server.exit_code
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    # -- parent ---------------------------------------------------------------------------------------
    def _spawn(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            for other in self.workers:
                if other.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(other.fd)
            self._child(worker, write_fd, listen_after_load=self.ever_ready)
        os.close(write_fd)
        worker.pid = pid
        worker.fd = read_fd
        worker.buffer = b""
        worker.started = time.monotonic()
        os.set_blocking(read_fd, False)
        self.selector.register(read_fd, selectors.EVENT_READ, worker)

    def _read(self, worker: _Worker) -> None:
        try:
            chunk = os.read(worker.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.selector.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = -1
            return
        worker.buffer += chunk
        while b"\n" in worker.buffer:
            line, worker.buffer = worker.buffer.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            state = msg.pop("state")
            if state == "ready":
                worker.restarts = 0
                self.ever_ready = True
            if self.on_state is not None:
                self.on_state(state, msg)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for worker in self.workers:
                if worker.pid == pid:
                    worker.pid = 0
                    if worker.fd >= 0:
                        self._read(worker)
                    if self.stopping:
                        break
                    code = os.waitstatus_to_exitcode(status)
                    if code == TRANSPORT_FAILED:  # restarting the process is the supervisor's call, not ours
                        log.critical(
                            "worker %d: a transport failed for good; stopping (exit code %d)", worker.index, code
                        )
                        self.stopping = True
                        self.exit_code = code
                        break
                    worker.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** (worker.restarts - 1))
                    worker.next_start = time.monotonic() + delay
                    log.error("worker %d (pid %d) exited with %s; restarting in %.1f s", worker.index, pid, code, delay)
                    if self.on_state is not None:
                        self.on_state("exited", {"worker": worker.index, "code": code, "restart_in": delay})
                    break

    def run(self) -> int:
        from edge_module.server.lifecycle import make_socket

        reserve = make_socket(self.settings.host, self.settings.port, reuse_port=True, listen=False)
        self.port = reserve.getsockname()[1]
        self.shared = SharedSlots(len(self.workers))
        limit = self.settings.max_concurrent_requests
        # the concurrency limit is the replica's: one semaphore for every worker (limits.SharedLimit)
        self.shared_limit = SharedLimit(limit, len(self.workers)) if limit else None

        def stop(signum: int, frame: Any) -> None:
            self.stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in self.workers:
                self._spawn(worker)
            while not self.stopping:
                for key, _ in self.selector.select(timeout=0.2):
                    self._read(key.data)
                self._reap()
                now = time.monotonic()
                for worker in self.workers:
                    if not worker.pid and not self.stopping and now >= worker.next_start:
                        if worker.fd >= 0:
                            self.selector.unregister(worker.fd)
                            os.close(worker.fd)
                            worker.fd = -1
                        self._spawn(worker)
            return self._shutdown() or self.exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            reserve.close()

    def _shutdown(self, grace: float = 7.0) -> int:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(w.pid for w in self.workers) and time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=0.05):
                self._read(key.data)
            self._reap()
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
        for worker in self.workers:
            if worker.fd >= 0:
                with contextlib.suppress(Exception):
                    self.selector.unregister(worker.fd)
                os.close(worker.fd)
        return 0
