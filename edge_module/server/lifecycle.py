"""Starting, running and stopping the server: one worker (:class:`Server`), a server on its own
thread (:class:`BackgroundServer`, for tests and embedding), and :func:`serve` (blocking, 1..N workers).

Each worker is an asyncio server (uvloop when it is installed) accepting
:class:`~edge_module.server.connection.Connection` s for one
:class:`~edge_module.server.service.Service`; worker 0 also runs the MQTT / IoT Edge transports the
settings ask for, on the same app. Several worker processes share the port with ``SO_REUSEPORT``
(:mod:`.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_module.runtime import ScoringApp
from edge_module.server.connection import Connection
from edge_module.server.limits import SharedLimit
from edge_module.server.metrics import Metrics, SharedSlots
from edge_module.server.service import Service
from edge_module.settings import Settings
from edge_module.transports.hosted import TRANSPORT_FAILED

__all__ = ["BackgroundServer", "Server", "configure_logging", "make_socket", "new_event_loop", "serve"]

log = logging.getLogger("edgepack.server")

StateCallback = Callable[[str, dict[str, Any]], None]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def make_socket(host: str, port: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(4096)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    logging.getLogger("edgepack").setLevel(level)


class _FailedApp(ScoringApp):
    """Stands in for an app whose construction raised: load() raises the same error."""

    def __init__(self, error: BaseException):
        self.error = error

    def load(self) -> None:
        raise self.error

    def score(self, request: Any) -> Any:
        raise RuntimeError("not loaded")

    def models(self) -> list:
        return []

    def swagger(self, version: int = 2) -> dict[str, Any]:
        return {}


def build(app_factory: Callable[[], ScoringApp]) -> ScoringApp:
    try:
        return app_factory()
    except Exception as exc:
        return _FailedApp(exc)


class Server:
    """One worker: an asyncio server for ``app`` on one socket."""

    def __init__(
        self,
        app: ScoringApp,
        settings: Settings,
        worker: int = 0,
        shared: SharedSlots | None = None,
        on_state: StateCallback | None = None,
        exit_on_transport_failure: bool = False,
        shared_limit: SharedLimit | None = None,
    ):
        self.app = app
        self.settings = settings
        self.worker = worker
        self.shared = shared
        self.shared_limit = shared_limit  # several workers: the concurrency limit they share
        self.on_state = on_state
        # a transport that fails for good: /v2/health/ready answers 503 naming it (transport_error) and,
        # with exit_on_transport_failure (a process of its own), the server stops with exit_code 3
        self.exit_on_transport_failure = exit_on_transport_failure
        self.transport_error: str | None = None
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self.service: Service | None = None
        self.transports: list[Any] = []  # MQTT / IoT Edge hub beside HTTP (edge_module.transports.hosted)
        self.port: int | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopped: asyncio.Event | None = None

    async def start(self, sock: socket.socket | None = None, listen_after_load: bool = False) -> None:
        """Listen and load. ``listen_after_load``: load first and only then accept connections (a
        worker restarted beside ready ones stays out of the port's rotation until it can score; one
        whose load fails never joins it)."""
        loop = self._loop = asyncio.get_running_loop()
        if sock is None:
            sock = make_socket(self.settings.host, self.settings.port)
        settled = asyncio.Event()

        def on_state(state: str, info: dict[str, Any]) -> None:
            if state in ("ready", "failed"):
                settled.set()
                self._start_transports(info.get("error") if state == "failed" else None)
            if self.on_state:
                self.on_state(state, info)

        metrics = Metrics(self.worker, self.shared)
        self.service = service = Service(self.app, self.settings, loop, metrics, on_state, self.shared_limit)
        self._stopped = asyncio.Event()
        if listen_after_load:
            service.start_loading()
            await settled.wait()
            if not service.ready:
                sock.close()
                return
        self._server = await loop.create_server(lambda: Connection(service), sock=sock, backlog=4096)
        self.port = sock.getsockname()[1]
        if self.on_state:
            self.on_state("listening", {"port": self.port, "host": self.settings.host})
        if not listen_after_load:
            service.start_loading()

    def _start_transports(self, load_error: str | None) -> None:
        s = self.settings
        if self.worker != 0 or (s.mqtt is None and s.iotedge is None) or self.service is None:
            return
        from edge_module.transports.hosted import start_transports

        try:
            metrics = self.service.metrics.attach()
            self.transports = start_transports(
                s, self.app, metrics, load_error, self._transport_failed, self._versions_switched
            )
        except Exception as exc:  # e.g. an unsafe spool folder, or azure-iot-device missing
            log.error("the MQTT / IoT Edge transport could not start", exc_info=True)
            self._transport_failed("MQTT / IoT Edge", f"it could not start: {type(exc).__name__}: {exc}")

    def _versions_switched(self, served: dict[str, str | None]) -> None:
        """The app switched the versions it serves (the module twin's ``model_version``; called from the
        transport's thread after ``/score`` switched): point V2's unversioned routes at them too, on the
        loop, waiting for it (a second at most) so that what is reported next is what HTTP serves."""
        loop, service = self._loop, self.service
        if loop is None or service is None:
            return
        done = threading.Event()

        def repoint() -> None:
            try:
                service.v2.serve_versions(served)
            finally:
                done.set()

        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone anyway
            loop.call_soon_threadsafe(repoint)
            done.wait(1.0)

    def _transport_failed(self, name: str, error: str) -> None:
        """A transport stopped for good (called from any thread): not ready, and stop when asked to."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server is gone anyway
                loop.call_soon_threadsafe(self._on_transport_failure, name, error)

    def _on_transport_failure(self, name: str, error: str) -> None:
        message = f"the {name} transport failed: {error}"
        self.transport_error = message
        if self.service is not None:
            self.service.transport_error = message
        if not self.exit_on_transport_failure or self.exit_code:
            log.error("%s; /v2/health/ready answers 503", message)
            return
        self.exit_code = TRANSPORT_FAILED
        log.critical(
            "%s; stopping with exit code %d for the supervisor to restart the service", message, self.exit_code
        )
        self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let requests being scored finish (up to ``grace`` seconds), close."""
        if self.transports:
            from edge_module.transports.hosted import stop_transports

            transports, self.transports = self.transports, []
            await asyncio.get_running_loop().run_in_executor(None, stop_transports, transports, grace)
        if self._server is None:
            if self._stopped is not None:  # loaded but never listened (a failed listen_after_load)
                if self.service is not None:
                    self.service.close()
                self._stopped.set()
            return
        self._server.close()
        service = self.service
        assert service is not None
        deadline = time.monotonic() + grace
        for conn in list(service.connections):
            if not conn.busy and not conn.pending and conn.transport is not None:
                conn.transport.close()
        while any(c.busy or c.pending for c in service.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(service.connections):
            if conn.transport is not None:
                conn.transport.close()
        service.close()
        self._server = None
        if self._stopped is not None:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def run(
        self, sock: socket.socket | None = None, install_signals: bool = True, listen_after_load: bool = False
    ) -> None:
        """Serve until SIGTERM/SIGINT (blocking)."""
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, lambda: loop.create_task(self.stop()))
            loop.run_until_complete(self.start(sock, listen_after_load))
            loop.run_until_complete(self.wait_stopped())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


class BackgroundServer:
    """A :class:`Server` on its own event loop in a daemon thread (tests, notebooks, embedding).

    >>> with BackgroundServer(app, Settings(port=0)) as srv:
    ...     srv.wait_ready()
    ...     requests.post(srv.url + "/score", json=...)
    """

    def __init__(self, app: ScoringApp, settings: Settings | None = None, host: str = "127.0.0.1"):
        self.settings = (settings or Settings(port=0)).replace(host=host)
        self.server = Server(app, self.settings, on_state=self._state)
        self.states: list[tuple[str, dict[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._settled = threading.Event()
        self._error: BaseException | None = None

    def _state(self, state: str, info: dict[str, Any]) -> None:
        self.states.append((state, info))
        if state == "failed":
            log.error("load() failed; the server stays up and reports not ready:\n%s", info.get("traceback"))
        if state in ("ready", "failed"):
            self._settled.set()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.server.port}"

    @property
    def service(self) -> Service:
        assert self.server.service is not None
        return self.server.service

    def start(self) -> BackgroundServer:
        def main() -> None:
            loop = self._loop = new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                self._error = exc
                self._started.set()
                return
            self._started.set()
            loop.run_until_complete(self.server.wait_stopped())
            loop.close()

        self._thread = threading.Thread(target=main, name="edgepack-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Wait until load() finished; True when it succeeded."""
        if not self._settled.wait(timeout):
            raise TimeoutError(f"the server did not finish loading within {timeout} s")
        return self.service.ready

    def stop(self, grace: float = 2.0) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result(grace + 5)
        self._thread.join(grace + 5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app_factory: Callable[[], ScoringApp], settings: Settings, on_state: StateCallback | None = None) -> int:
    """Serve until SIGTERM/SIGINT with ``settings.workers`` processes; returns the exit code.

    ``app_factory`` is called in each worker (after the fork: every worker loads its own model).
    ``on_state(state, info)`` is called in this process for ``listening``, ``ready`` and ``failed``
    (``info`` has ``worker``, and ``error``/``traceback`` for a failed load).
    """
    if settings.workers == 1:

        def state(name: str, info: dict[str, Any]) -> None:
            if on_state is not None:
                on_state(name, {**info, "worker": 0})

        server = Server(build(app_factory), settings, on_state=state, exit_on_transport_failure=True)
        server.run()
        return server.exit_code
    from edge_module.server.workers import Supervisor

    return Supervisor(app_factory, settings, on_state).run()
