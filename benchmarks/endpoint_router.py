"""The endpoint router's cost: one scoring module served directly and through the router, in one run.

    python benchmarks/endpoint_router.py [--duration S] [--rounds N] [--connections C] [--workers W] [--json]

Run from the repository root. One scoring module (``python -m edge_module``, ``--workers W``) serves
the reference 64-256-256-10 MLP (``../shared/bench/make_model.py``) and the router
(``python -m edge_module.router``) fronts it as the endpoint's only version (100 %). The same wrk load
(``-t1 -c<connections>``, POST ``/score`` with ``../shared/bench/bodies.py``'s ``aml.json``; the load
generator, the checks and the CPU accounting are :mod:`http_scoring`'s) runs against the module and
against the router, alternating which goes first, ``--rounds`` times; the medians are compared:
throughput ratio (goal >= 0.8) and p99 added (goal <= 1 ms). Every response is first checked
against onnxruntime's output, and through the router for its ``azureml-model-deployment`` header.

On a 2-core machine the load generator, the module and the router share the cores: through the
router a third busy process competes for them, so the ratio measures the router's CPU cost as much
as its latency. The report says how many cores there were and how much CPU others took meanwhile.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import http_scoring as hs

ROUTER_CMD = ["{python}", "-m", "edge_module.router", "--host", "127.0.0.1", "--port", "{port}", "--routes", "{routes}"]
# The floor for any Python proxy: a uvloop forwarder that relays bytes between a client and one upstream
# connection, with no parsing, routing, auth or metrics (correct only for wrk's one-request-at-a-time load).
FLOOR_PY = """
import asyncio, sys
import uvloop
UP = ("127.0.0.1", int(sys.argv[2]))
class Up(asyncio.Protocol):
    def __init__(self, client): self.client = client
    def data_received(self, data): self.client.write(data)
class Client(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.up, self.pending = transport, None, []
        asyncio.ensure_future(self.open())
    async def open(self):
        self.up, _ = await asyncio.get_running_loop().create_connection(lambda: Up(self.transport), *UP)
        for data in self.pending:
            self.up.write(data)
    def data_received(self, data):
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.write(data)
    def connection_lost(self, exc):
        if self.up is not None:
            self.up.close()
async def main():
    await asyncio.get_running_loop().create_server(Client, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""
GOAL_RATIO = 0.8
GOAL_P99_ADDED_MS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each measurement (1)")
    p.add_argument("--rounds", type=int, default=3, help="direct/router alternations; medians are reported (3)")
    p.add_argument("--connections", type=int, default=8, help="wrk connections (8)")
    p.add_argument("--workers", type=int, default=1, help="scoring module workers (1)")
    p.add_argument("--quiet-wait", type=float, default=60.0, help="wait this long at most for a quiet machine (60)")
    p.add_argument("--no-floor", action="store_true", help="skip the bare uvloop forwarder (the Python floor)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p.parse_args(argv)


def wait_200(url: str, proc: Any, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: {url} exited before ready:\n{hs.tail(log)}")
        try:
            if hs.http("GET", url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"error: {url} not ready after {timeout:.0f} s:\n{hs.tail(log)}")


def check(url: str, body: Path, expected: list[float], through_router: bool) -> None:
    request = urllib.request.Request(url, data=body.read_bytes(), headers={"Content-Type": "application/json"})
    with hs._HTTP.open(request, timeout=30) as response:
        content = response.read()
        header = response.headers.get("azureml-model-deployment")
    got = hs.find_output(json.loads(content), len(expected))
    if got is None or max(abs(a - b) for a, b in zip(got, expected, strict=True)) > 1e-4:
        raise SystemExit(f"error: {url} answered {content[:200]!r}, not the model's output")
    if through_router and header != "blue":
        raise SystemExit(f"error: the router's answer has azureml-model-deployment {header!r}, not 'blue'")


def cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of a process group."""
    total = 0
    for pid in hs._group_members(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("error: wrk is not installed: install it with `apt-get install -y wrk` (Debian/Ubuntu)", file=sys.stderr)
        return 2
    if not (hs.SHARED_BENCH / "make_model.py").is_file():
        print(f"error: {hs.SHARED_BENCH}/make_model.py is missing (the shared bench folder)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    atexit.register(hs.stop_all)
    work = Path(tempfile.mkdtemp(prefix="edgepack-router-bench-"))
    model_dir = work / "azureml-models" / hs.MODEL_NAME / "1"
    model_dir.mkdir(parents=True)
    model = model_dir / f"{hs.MODEL_NAME}.onnx"
    log = work / "setup.log"
    for cmd in (
        [sys.executable, str(hs.SHARED_BENCH / "make_model.py"), str(model)],
        [sys.executable, str(hs.SHARED_BENCH / "bodies.py"), str(work)],
    ):
        if hs.run_child(cmd, timeout=120, log=log) != 0:
            raise SystemExit(f"error: {' '.join(cmd)} failed:\n{hs.tail(log)}")
    body = work / "aml.json"
    expected = hs.reference_output(model, body)
    env = hs.base_env() | {"PYTHONPATH": str(hs.ROOT)}

    module_port, router_port = hs.free_port(), hs.free_port()
    values = {"python": sys.executable, "model_dir": model_dir, "port": module_port, "workers": args.workers}
    module_log = work / "module.log"
    module = hs.spawn(hs.fill(hs.EDGEPACK_CMD, values), env=env, cwd=work, log=module_log)
    direct = f"http://127.0.0.1:{module_port}"
    wait_200(direct + hs.EDGEPACK_READY_PATH, module, module_log)
    routes = work / "routes.json"
    routes.write_text(
        json.dumps(
            {
                "format": 1,
                "endpoint": "bench",
                "revision": 1,
                "versions": [{"name": "blue", "url": direct, "traffic": 100, "default": True}],
            }
        )
    )
    router_log = work / "router.log"
    router_cmd = hs.fill(ROUTER_CMD, {"python": sys.executable, "port": router_port, "routes": routes})
    router = hs.spawn(router_cmd, env=env, cwd=work, log=router_log)
    routed = f"http://127.0.0.1:{router_port}"
    wait_200(routed + "/-/ready", router, router_log)
    check(direct + "/score", body, expected, False)
    check(routed + "/score", body, expected, True)
    targets: dict[str, tuple[str, Any]] = {"direct": (direct, None), "router": (routed, router)}
    if not args.no_floor:
        floor_port = hs.free_port()
        (work / "floor.py").write_text(FLOOR_PY)
        floor_log = work / "floor.log"
        floor = hs.spawn([sys.executable, str(work / "floor.py"), str(floor_port), str(module_port)], env=env,
                         cwd=work, log=floor_log)  # fmt: skip
        targets["floor"] = (f"http://127.0.0.1:{floor_port}", floor)
        wait_200(targets["floor"][0] + hs.EDGEPACK_READY_PATH, floor, floor_log)
        check(targets["floor"][0] + "/score", body, expected, False)

    bench = hs.Bench(argparse.Namespace(quiet_wait=args.quiet_wait, retries=0), work)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    hs._log(f"work folder {work}; {os.cpu_count()} cpus; load average {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        hs.wait_quiet(args.quiet_wait)
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            base, proxy = targets[name]
            url = base + "/score"
            if args.warmup > 0:
                bench.wrk_run(url, body, args.connections, args.warmup)
            pids = {"module": module.pid, "router": proxy.pid if proxy is not None else None}
            cpu0 = {who: cpu_seconds(pid) for who, pid in pids.items() if pid is not None}
            res = bench.wrk_run(url, body, args.connections, args.duration)
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
            res["router_cpu_us"] = 0.0
            for who, before in cpu0.items():  # CPU per request: robust to a busy machine, unlike req/s
                res[f"{who}_cpu_us"] = (cpu_seconds(pids[who]) - before) / res["requests"] * 1e6
            results[name].append(res)
            errors = sum(res[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
            hs._log(
                f"  round {r + 1} {name:6}: {res['rps']:,.0f} req/s, p50 {res['p50_us'] / 1000:.3f} ms, "
                f"p99 {res['p99_us'] / 1000:.3f} ms, CPU/request module {res['module_cpu_us']:.0f} us proxy "
                f"{res['router_cpu_us']:.0f} us, errors {errors}, others' CPU {res['others_cpu_pct']:.0f}% "
                f"+ steal {res['steal_pct']:.0f}%"
            )
    state = json.loads(hs.http("GET", routed + "/-/router")[1])
    for _, proxy in targets.values():
        if proxy is not None:
            hs.stop(proxy)
    hs.stop(module)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    summary = {
        "cpus": os.cpu_count(),
        "connections": args.connections,
        "module_workers": args.workers,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "direct": {
            "rps": median("direct", "rps"),
            "p50_ms": median("direct", "p50_us") / 1000,
            "p99_ms": median("direct", "p99_us") / 1000,
        },
        "router": {
            "rps": median("router", "rps"),
            "p50_ms": median("router", "p50_us") / 1000,
            "p99_ms": median("router", "p99_us") / 1000,
        },
        "others_cpu_pct_max": max(r["others_cpu_pct"] + r["steal_pct"] for rs in results.values() for r in rs),
        "router_errors": state["versions"]["blue"]["errors"],
        "rounds_raw": {
            k: [{"rps": round(r["rps"]), "p50_us": r["p50_us"], "p99_us": r["p99_us"]} for r in v]
            for k, v in results.items()
        },
    }
    if "floor" in results:
        summary["floor"] = {
            "rps": median("floor", "rps"),
            "p50_ms": median("floor", "p50_us") / 1000,
            "p99_ms": median("floor", "p99_us") / 1000,
            "cpu_us_per_request": median("floor", "router_cpu_us"),
        }
        summary["floor"]["ratio"] = summary["floor"]["rps"] / summary["direct"]["rps"]
    summary["router_cpu_us_per_request"] = median("router", "router_cpu_us")
    summary["module_cpu_us_per_request"] = median("direct", "module_cpu_us")
    summary["ratio"] = summary["router"]["rps"] / summary["direct"]["rps"]
    summary["p99_added_ms"] = summary["router"]["p99_ms"] - summary["direct"]["p99_ms"]
    summary["p50_added_ms"] = summary["router"]["p50_ms"] - summary["direct"]["p50_ms"]
    summary["goals"] = {
        "ratio >= 0.8": summary["ratio"] >= GOAL_RATIO,
        "p99 added <= 1 ms": summary["p99_added_ms"] <= GOAL_P99_ADDED_MS,
    }
    d, rt = summary["direct"], summary["router"]
    hs._log(
        f"\ndirect: {d['rps']:,.0f} req/s, p50 {d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms\n"
        f"router: {rt['rps']:,.0f} req/s, p50 {rt['p50_ms']:.3f} ms, p99 {rt['p99_ms']:.3f} ms\n"
        f"ratio {summary['ratio']:.2f} (goal >= {GOAL_RATIO}), p99 added {summary['p99_added_ms']:+.3f} ms "
        f"(goal <= {GOAL_P99_ADDED_MS} ms), p50 added {summary['p50_added_ms']:+.3f} ms\n"
        f"CPU per request: module {summary['module_cpu_us_per_request']:.0f} us, router "
        f"{summary['router_cpu_us_per_request']:.0f} us\n"
        + (
            f"floor (bare uvloop forwarder, no parsing/routing): {summary['floor']['rps']:,.0f} req/s, ratio "
            f"{summary['floor']['ratio']:.2f}, p99 {summary['floor']['p99_ms']:.3f} ms, CPU/request "
            f"{summary['floor']['cpu_us_per_request']:.0f} us\n"
            if "floor" in summary
            else ""
        )
        + f"{summary['cpus']} cpus shared by wrk, the module ({args.workers} worker) and the router; others' CPU + "
        f"steal up to {summary['others_cpu_pct_max']:.0f}% of the machine during a measurement"
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
