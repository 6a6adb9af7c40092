"""MQTT scoring throughput: edgepack's MQTT transport vs a bare paho echo responder, same broker, same load.

    python benchmarks/mqtt_scoring.py [--duration S] [--window N] [--broker lifted|defaults]...
                                      [--paho 1.6|2]... [--max-wait-ms MS] [--json]

Run from the repository root. Each case starts its own Mosquitto on a free port of 127.0.0.1 with
the stated settings (``lifted``: ``max_inflight_messages 0``, ``max_queued_messages 0``, i.e. no
limits; ``defaults``: Mosquitto's 20 and 1000), then a responder in its own process:

- ``echo``: a bare paho client that answers every request (QoS 1) on its MQTT 5 response topic with
  the request's payload and correlation data: the transport's ceiling on this machine;
- ``edgepack``: :class:`edge_module.transports.mqtt.MqttTransport` scoring the reference
  64-256-256-10 MLP (``../shared/bench/make_model.py``, or the same network built here) with
  ``OnnxScoringApp``, batch-1 ``{"data": [[64 floats]]}`` requests (``../shared/bench/bodies.py``'s
  body), replies spooled to disk and published QoS 1.

The load generator (its own process, host paho) keeps ``--window`` requests in flight (closed loop:
each reply sends the next request), MQTT 5 with a response topic and correlation data, QoS 1 both
ways, and counts round trips and their latency over ``--duration`` seconds after ``--warmup``. The
CPU used by the broker, the responder and the generator during the measurement is reported (% of
one core): a generator near 100 % would be the bottleneck. The responder runs under paho 1.6 (host)
and 2.x (a venv under ``$EDGEPACK_TEST_VENVS``, built on first use, like the tests').
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_BENCH = ROOT.parent / "shared" / "bench"
BROKERS = {
    "lifted": ["max_inflight_messages 0", "max_queued_messages 0", "max_queued_bytes 0"],
    "defaults": [],  # Mosquitto 2.0: max_inflight_messages 20, max_queued_messages 1000
}
ECHO_REQUEST = "echo/request"
SCORE_REQUEST = "edgepack/bench/score/request"


def body() -> bytes:
    """The body ``../shared/bench/bodies.py`` writes as aml.json."""
    import numpy as np

    x = np.random.default_rng(1).random((1, 64)).astype(np.float32).round(4).tolist()
    return json.dumps({"data": x}).encode()


def model(workdir: Path) -> Path:
    path = workdir / "azureml-models" / "mlp" / "1" / "mlp.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    maker = SHARED_BENCH / "make_model.py"
    if maker.exists():
        subprocess.run([sys.executable, str(maker), str(path)], check=True)
    else:
        from tests.support.scorers import make_mlp

        path.write_bytes(make_mlp())
    return path


# child processes ------------------------------------------------------------------------------------
def run_echo(port: int) -> None:
    from edge_module.transports import paho_compat as pc

    client = pc.new_client("bench-echo", pc.MQTT_V5)
    client.max_inflight_messages_set(0)

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        props = msg.properties
        c.publish(props.ResponseTopic, msg.payload, 1, properties=pc.publish_properties(props.CorrelationData))

    client.on_connect = lambda c, *a: c.subscribe(ECHO_REQUEST, 1)
    client.on_subscribe = lambda *a: print("ready", flush=True)
    client.on_message = on_message
    client.connect("127.0.0.1", port, 30)
    client.loop_forever()


def run_scorer(port: int, model_dir: str, inflight: int, max_batch: int, max_wait_ms: float, spool: str) -> None:
    import signal
    import threading

    from edge_module.scoring.onnx_app import OnnxScoringApp
    from edge_module.transports.mqtt import MqttSettings, MqttTransport

    settings = MqttSettings(
        url=f"mqtt://127.0.0.1:{port}",
        service="bench",
        client_id="bench-scorer",
        max_inflight=inflight,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        spool_dir=spool,
    )
    transport = MqttTransport(OnnxScoringApp(model_dir, intra_op_threads=1), settings).start()
    transport.wait_connected(30)
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    done.wait()
    print(json.dumps(transport.stats()), file=sys.stderr, flush=True)
    transport.stop(2)


def run_load(port: int, topic: str, window: int, warmup: float, duration: float) -> None:
    import resource
    import threading

    from edge_module.transports import paho_compat as pc

    payload = body()
    reply = "bench/load/response"
    client = pc.new_client("bench-load", pc.MQTT_V5)
    client.max_inflight_messages_set(0)
    lock = threading.Lock()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    state = {"seq": 0, "done": 0, "measuring": False, "stop": False}
    subscribed = threading.Event()

    def send(c: Any) -> None:
        seq = state["seq"]
        state["seq"] = seq + 1
        sent[seq] = time.perf_counter()
        c.publish(topic, payload, 1, properties=pc.publish_properties(str(seq).encode(), reply, "application/json"))

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        with lock:
            t0 = sent.pop(int(msg.properties.CorrelationData), None)
            if t0 is not None and state["measuring"]:
                latencies.append(now - t0)
                state["done"] += 1
            if not state["stop"]:
                send(c)

    client.on_connect = lambda c, *a: c.subscribe(reply, 1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    subscribed.wait(10)
    with lock:
        for _ in range(window):
            send(client)
    time.sleep(warmup)
    print("go", flush=True)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with lock:
        state["measuring"] = True
    t0 = time.perf_counter()
    time.sleep(duration)
    with lock:
        state["measuring"] = False
        state["stop"] = True
        n = state["done"]
        lat = sorted(latencies)
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / elapsed * 100
    client.disconnect()
    client.loop_stop()

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

    result = {"rps": round(n / elapsed), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "load_cpu": round(cpu)}
    print(json.dumps(result), flush=True)


# orchestration ----------------------------------------------------------------------------------------
def build_loadgen(workdir: Path) -> str:
    """Compile benchmarks/mqtt_loadgen.c (libmosquitto) into ``workdir``; exit with a hint when that fails."""
    out = workdir / "mqtt_loadgen"
    cmd = ["cc", "-O2", "-o", str(out), str(Path(__file__).with_name("mqtt_loadgen.c")), "-lmosquitto"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            f"error: cannot build the C load generator ({result.stderr.strip()[:300]}): "
            "apt-get install -y libmosquitto-dev, or run with --load paho"
        )
    return str(out)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(python: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [python, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"child exited: {proc.stderr.read() if proc.stderr else ''}")
    raise TimeoutError(f"no {expected!r} from the child within {timeout} s")


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stderr.read() if proc.stderr else ""


def run_case(
    responder: str, paho: str, broker_kind: str, args: argparse.Namespace, workdir: Path, model_path: Path
) -> dict[str, Any]:
    from tests.support.mqtt import Mosquitto, paho2_python

    python = sys.executable if paho == "1.6" else str(paho2_python())
    case_dir = Path(tempfile.mkdtemp(prefix=f"{responder}-{paho}-{broker_kind}-", dir=workdir))
    broker = Mosquitto(case_dir / "broker", max_inflight=None, max_queued=None, extra=BROKERS[broker_kind]).start()
    procs: list[subprocess.Popen[str]] = []
    try:
        if responder == "echo":
            resp = child(python, "_echo", str(broker.port))
            topic = ECHO_REQUEST
        else:
            resp = child(
                python,
                "_scorer",
                str(broker.port),
                str(model_path.parent),
                str(args.scorer_inflight),
                str(args.max_batch),
                str(args.max_wait_ms),
                str(case_dir / "spool"),
            )
            topic = SCORE_REQUEST
        procs.append(resp)
        wait_line(resp, "ready")
        if args.loadgen:
            load = subprocess.Popen(
                [args.loadgen, str(broker.port), topic, str(workdir / "body.json")]
                + [str(v) for v in (args.window, args.warmup, args.duration)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        else:
            load = child(
                sys.executable, "_load", str(broker.port), topic, str(args.window), str(args.warmup), str(args.duration)
            )
        procs.append(load)
        wait_line(load, "go")
        pids = {"broker": broker.proc.pid if broker.proc else 0, "responder": resp.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.perf_counter()
        line = load.stdout.readline() if load.stdout else ""
        elapsed = time.perf_counter() - t0
        after = {k: cpu_seconds(p) for k, p in pids.items()}
        result = json.loads(line)
        result.update({f"{k}_cpu": round((after[k] - before[k]) / elapsed * 100) for k in pids})
        load.wait(10)
        stats = stop(resp).strip().splitlines()
        if responder == "edgepack" and stats:
            with_stats = json.loads(stats[-1])
            result["errors"] = with_stats.get("errors")
            result["max_batch_seen"] = with_stats.get("max_batch")
            result["mean_batch"] = round(with_stats["scored"] / max(1, with_stats["batches"]), 1)
        load_kind = "C" if args.loadgen else "paho"
        return {"responder": responder, "paho": paho, "broker": broker_kind, "load": load_kind, **result}
    finally:
        for p in procs:
            stop(p)
        broker.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "_echo":
            run_echo(int(rest[0]))
        elif cmd == "_scorer":
            run_scorer(int(rest[0]), rest[1], int(rest[2]), int(rest[3]), float(rest[4]), rest[5])
        elif cmd == "_load":
            run_load(int(rest[0]), rest[1], int(rest[2]), float(rest[3]), float(rest[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=int, default=200, help="requests in flight from the load generator")
    parser.add_argument("--scorer-inflight", type=int, default=200, help="the scorer's max_inflight")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="the scorer's max_wait_ms")
    parser.add_argument("--broker", action="append", choices=sorted(BROKERS), help="default: lifted")
    parser.add_argument("--paho", action="append", choices=["1.6", "2"], help="default: both")
    parser.add_argument(
        "--load",
        choices=["c", "paho"],
        default="c",
        help="load generator: c (libmosquitto, benchmarks/mqtt_loadgen.c; needs libmosquitto-dev) or paho (Python)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp:
        workdir = Path(tmp)
        model_path = model(workdir)
        (workdir / "body.json").write_bytes(body())
        args.loadgen = build_loadgen(workdir) if args.load == "c" else None
        for broker_kind in args.broker or ["lifted"]:
            for paho in args.paho or ["1.6", "2"]:
                for responder in ("echo", "edgepack"):
                    row = run_case(responder, paho, broker_kind, args, workdir, model_path)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    for row in rows:
        if row["responder"] == "edgepack":
            echo = next(
                r
                for r in rows
                if r["responder"] == "echo" and r["paho"] == row["paho"] and r["broker"] == row["broker"]
            )
            row["vs_echo"] = round(row["rps"] / echo["rps"], 2) if echo["rps"] else None
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        "| responder | paho | broker | load | round trips/s | p50 ms | p99 ms | vs echo "
        "| CPU % broker/responder/load | mean batch |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        cpu = f"{r['broker_cpu']}/{r['responder_cpu']}/{r['load_cpu']}"
        print(
            f"| {r['responder']} | {r['paho']} | {r['broker']} | {r['load']} | {r['rps']:,} | {r['p50_ms']} | "
            f"{r['p99_ms']} | "
            f"{r.get('vs_echo', '')} | {cpu} | {r.get('mean_batch', '')} |"
        )


if __name__ == "__main__":
    main()
