"""The load generator: closed loop, keep-alive HTTP/1.1 connections, every latency recorded.

It runs as its own process(es) (``python load.py``, standard library only, so it shares no GIL and no
imports with the caller): :func:`start` launches ``processes`` of them with ``connections`` each, all
measuring the same window of the system-wide monotonic clock (``t0``..``t1``; the warm-up runs before
``t0``). Each sends the request bodies round-robin on raw asyncio connections (one request in flight per
connection, the next sent when the answer is complete) and prints one JSON line: the latencies (µs) of
the requests that completed inside the window, successes (2xx and a JSON body), errors by kind, and its
own CPU seconds in the window (``os.times``), which says whether it was the bottleneck.

``python load.py serve`` is the trivial endpoint (a fixed 200 ``{}`` answer to every request) used once
to measure the generator's own top rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class _Shared:
    """One generator process's state: request bytes, the window, the records."""

    def __init__(self, cfg: dict[str, Any]):
        host = f"{cfg['host']}:{cfg['port']}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in cfg.get("headers", {}).items())
        self.requests = [
            (f"POST {cfg['path']} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
             f"Content-Length: {len(b.encode())}\r\n\r\n").encode() + b.encode()
            for b in cfg["bodies"]
        ]  # fmt: skip
        self.next = int(cfg.get("index", 0))
        self.t0, self.t1 = float(cfg["t0"]), float(cfg["t1"])
        self.check_json = bool(cfg.get("check_json", True))
        self.latencies: list[int] = []
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.done = asyncio.get_running_loop().create_future()

    def request(self) -> bytes:
        data = self.requests[self.next % len(self.requests)]
        self.next += 1
        return data

    def record(self, started: float, ended: float, ok: bool, kind: str | None) -> None:
        if started < self.t0 or ended > self.t1:
            return  # warm-up, or finished after the window
        self.latencies.append(int((ended - started) * 1e6))
        if ok:
            self.ok += 1
        else:
            self.errors[kind or "error"] = self.errors.get(kind or "error", 0) + 1


class _Client(asyncio.Protocol):
    """One keep-alive connection, one request in flight."""

    def __init__(self, shared: _Shared, lost: asyncio.Future[None]):
        self.shared = shared
        self.lost = lost
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if time.monotonic() >= self.shared.t1:
            assert self.transport is not None
            self.transport.close()
            return
        self.started = time.monotonic()
        assert self.transport is not None
        self.transport.write(self.shared.request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER:
                    self.fail("bad_response")
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            try:
                status = int(head[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                return self.fail("bad_response")
            length, close = 0, False
            for line in head[1:]:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value.strip())
                elif key == "transfer-encoding":
                    return self.fail("chunked_response")
                elif key == "connection" and value.strip().lower() == "close":
                    close = True
            if length > MAX_BODY:
                return self.fail("bad_response")
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            ended = time.monotonic()
            ok, kind = 200 <= status < 300, f"http_{status}"
            if ok and self.shared.check_json:
                try:
                    json.loads(body)
                except ValueError:
                    ok, kind = False, "invalid_body"
            self.shared.record(self.started, ended, ok, None if ok else kind)
            if close:
                assert self.transport is not None
                self.transport.close()
                return
            self.send()

    def fail(self, kind: str) -> None:
        self.shared.record(self.started, time.monotonic(), False, kind)
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _connection(shared: _Shared, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    while time.monotonic() < shared.t1:
        lost: asyncio.Future[None] = loop.create_future()
        started = time.monotonic()
        try:
            await loop.create_connection(lambda lost=lost: _Client(shared, lost), host, port)
        except OSError:
            shared.record(started, time.monotonic(), False, "connect_error")
            await asyncio.sleep(0.05)
            continue
        remaining = shared.t1 - time.monotonic() + 30.0  # a stuck request ends 30 s after the window
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(lost, max(0.1, remaining))


async def generate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one generator process's connections until the window ends; its result document."""
    shared = _Shared(cfg)
    tasks = [asyncio.create_task(_connection(shared, cfg["host"], int(cfg["port"]))) for _ in range(cfg["connections"])]
    await asyncio.sleep(max(0.0, shared.t0 - time.monotonic()))
    cpu0 = os.times()
    await asyncio.sleep(max(0.0, shared.t1 - time.monotonic()))
    cpu1 = os.times()
    _, pending = await asyncio.wait(tasks, timeout=5.0)
    for task in pending:
        task.cancel()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "latencies_us": shared.latencies,
        "ok": shared.ok,
        "errors": shared.errors,
        "window_s": shared.t1 - shared.t0,
        "cpu_s": round(cpu_s, 4),
    }


# -- the trivial endpoint ----------------------------------------------------------------------------------
_TRIVIAL = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Trivial(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self.transport.write(_TRIVIAL)  # type: ignore[attr-defined]


async def serve_trivial() -> None:
    server = await asyncio.get_running_loop().create_server(_Trivial, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# -- the caller's side ---------------------------------------------------------------------------------------
def start(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[str],
    connections: int,
    processes: int,
    warmup_s: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
    affinity: Sequence[int] | None = None,
) -> list[subprocess.Popen[bytes]]:
    """Launch the generator processes (``connections`` split among them); :func:`collect` their results."""
    t0 = time.monotonic() + 0.5 + warmup_s  # ~0.5 s for the interpreters to start
    procs = []
    for i in range(processes):
        share = connections // processes + (1 if i < connections % processes else 0)
        if share == 0:
            continue
        cfg = {"host": host, "port": port, "path": path, "bodies": list(bodies), "connections": share,
               "index": i * 7919, "t0": t0, "t1": t0 + duration_s, "headers": headers or {}}  # fmt: skip
        cores = list(affinity) if affinity else None
        with tempfile.TemporaryFile() as fh:  # the bodies may be large: not on the command line
            fh.write(json.dumps(cfg).encode())
            fh.seek(0)
            proc = subprocess.Popen(
                [sys.executable, "-S", os.path.abspath(__file__)],
                stdin=fh,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c)) if cores else None,
            )
        procs.append(proc)
    return procs


def collect(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> list[dict[str, Any]]:
    """Each generator process's result document (a clear error when one failed)."""
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"the load generator failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
        results.append(json.loads(out.splitlines()[-1]))
    return results


def start_trivial() -> tuple[subprocess.Popen[bytes], int]:
    """The trivial endpoint's process and port."""
    proc = subprocess.Popen(
        [sys.executable, "-S", os.path.abspath(__file__), "serve"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        proc.wait()
        raise RuntimeError("the trivial endpoint did not start")
    return proc, int(line)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["serve"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_trivial())
        return 0
    cfg = json.loads(sys.stdin.read())
    result = asyncio.run(generate(cfg))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
