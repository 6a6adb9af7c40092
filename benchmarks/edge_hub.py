"""Messages through the local edge hub (`edgepack edge run`'s edgeHub) against a bare Mosquitto, same run.

    python benchmarks/edge_hub.py [--messages N] [--window W] [--json] [--no-scoring]

Run from the repository root. Rows (each of ``--messages`` messages, the reference MLP's batch-1 body
``{"data": [[64 floats]]}``, QoS 1 both ways, a paho 1.6 publisher and subscriber in their own processes
with ``--window`` messages in flight; rate = messages / (last receipt - first publish)):

- ``mosquitto``: a private Mosquitto (TLS on 127.0.0.1 with the hub's certificate, limits lifted),
  publish -> subscribe on one topic: the bare one-way figure;
- ``hub forwarding``: :class:`packager.edge.hub.EdgeHub` over TLS, module ``gen`` publishes to its
  output (SAS-authenticated as a module), a route forwards to module ``sink``'s input;
- ``scorer over MQTT``: ``benchmarks/mqtt_scoring.py``'s edgepack case (the MQTT transport scoring the
  MLP, closed loop with 200 in flight, paho load): what the scorer alone does over MQTT;
- ``end to end``: generator (``gen``) -> the hub -> the scorer (:class:`IotEdgeTransport`, the
  azure-iot-device module client, in its own process) -> the hub -> ``$upstream`` (the JSONL sink),
  counted when the last result is written.

Goals (issue 13): hub forwarding >= 0.5 x mosquitto; end to end >= 0.8 x scorer over MQTT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DEVICE = "bench"
HOSTNAME = "edgepack.local"


def sas(module: str, key: str) -> str:
    sr = urllib.parse.quote(f"{HOSTNAME}/devices/{DEVICE}/modules/{module}", safe="")
    se = str(int(time.time()) + 3600)
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"


def _client(spec: dict[str, Any]) -> Any:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(spec["client_id"], clean_session=True, protocol=mqtt.MQTTv311)
    if spec.get("ca"):
        c.tls_set(ca_certs=spec["ca"])
    if spec.get("username"):
        c.username_pw_set(spec["username"], spec.get("password"))
    c.max_inflight_messages_set(spec.get("window", 20))
    c.max_queued_messages_set(0)
    return c


def run_pub(spec: dict[str, Any]) -> None:
    """Publish ``n`` messages QoS 1 once told ``go`` on stdin; print the start time and when all were acked."""
    import threading

    from mqtt_scoring import body

    payload = body()
    c = _client(spec)
    acked = threading.Event()
    state = {"acks": 0}
    # paho keys unacknowledged messages by their 16-bit id: never queue 65,535 or more at once
    # (a reused id overwrites a queued message, which is then never acknowledged)
    room = threading.BoundedSemaphore(30_000)

    def on_publish(client: Any, userdata: Any, mid: int) -> None:
        room.release()
        state["acks"] += 1
        if state["acks"] == spec["n"]:
            acked.set()

    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_publish = on_publish
    c.connect(spec["host"], spec["port"], 60)
    c.loop_start()
    connected.wait(30)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    for _ in range(spec["n"]):
        room.acquire()
        c.publish(spec["topic"], payload, 1)
    acked.wait(600)
    print(json.dumps({"start": t0, "acked": time.time()}), flush=True)
    c.disconnect()
    c.loop_stop()


def run_sub(spec: dict[str, Any]) -> None:
    """Subscribe QoS 1; print ``ready`` once subscribed and the time of the n-th message."""
    import threading

    c = _client(spec)
    done = threading.Event()
    state = {"n": 0, "last": 0.0}

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        state["n"] += 1
        if state["n"] == spec["n"]:
            state["last"] = time.time()
            done.set()

    subscribed = threading.Event()
    c.on_connect = lambda client, *a: client.subscribe(spec["filter"], 1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    c.connect(spec["host"], spec["port"], 60)
    c.loop_start()
    subscribed.wait(30)
    print("ready", flush=True)
    done.wait(600)
    print(json.dumps({"last": state["last"], "received": state["n"]}), flush=True)
    c.disconnect()
    c.loop_stop()


def run_scorer(spec: dict[str, Any]) -> None:
    import signal
    import threading

    from edge_module.scoring.onnx_app import OnnxScoringApp
    from edge_module.transports.iotedge import IotEdgeTransport
    from edge_module.transports.settings import IotEdgeSettings

    settings = IotEdgeSettings(
        connection_string=spec["cs"],
        server_verification_cert=Path(spec["ca"]).read_text(),
        max_batch_size=spec["batch"],
        send_threads=spec["send_threads"],
    )
    transport = IotEdgeTransport(OnnxScoringApp(spec["model_dir"], intra_op_threads=1), settings).start()
    transport.wait_ready(60)
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    done.wait()
    transport.stop(2)


def child(role: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), f"_{role}", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"{role} did not start: {line!r}")
    return proc


def one_way(pub: dict[str, Any], sub: dict[str, Any]) -> dict[str, Any]:
    s = child("sub", sub)
    p = child("pub", pub)
    assert p.stdin is not None and p.stdout is not None and s.stdout is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    started = json.loads(p.stdout.readline())
    got = json.loads(s.stdout.readline())
    p.wait(30)
    s.wait(30)
    elapsed = got["last"] - started["start"]
    return {"messages": got["received"], "seconds": round(elapsed, 3), "per_s": round(got["received"] / elapsed)}


def mosquitto_case(work: Path, certs: Any, n: int, window: int) -> dict[str, Any]:
    from tests.support.net import free_port

    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                "user root",
                "allow_anonymous true",
                "persistence false",
                "max_inflight_messages 0",
                "max_queued_messages 0",
                "set_tcp_nodelay true",
                f"listener {port} 127.0.0.1",
                f"certfile {certs.cert}",
                f"keyfile {certs.key}",
            ]
        )
        + "\n"
    )
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        base = {"host": "127.0.0.1", "port": port, "ca": str(certs.ca), "n": n, "window": window}
        return one_way(
            {**base, "client_id": "pub", "topic": "bench/t"}, {**base, "client_id": "sub", "filter": "bench/t"}
        )
    finally:
        broker.terminate()
        broker.wait(10)


def hub_for(work: Path, certs: Any, host: str, modules: list[str], routes: dict[str, str]) -> tuple[Any, dict]:
    from packager.edge.hub import EdgeHub
    from packager.iotedge.routes import parse_routes

    keys = {m: base64.b64encode(os.urandom(32)).decode() for m in modules}
    hub = EdgeHub(
        DEVICE,
        keys,
        {},
        parse_routes(routes),
        certs.cert,
        certs.key,
        work / "upstream.jsonl",
        host=host,
        hostname=HOSTNAME,
        twin_hold=0.0,
    ).start()
    return hub, keys


def module_spec(hub: Any, keys: dict[str, str], module: str, ca: Path, n: int, window: int) -> dict[str, Any]:
    return {
        "host": hub.host,
        "port": hub.port,
        "ca": str(ca),
        "n": n,
        "window": window,
        "client_id": f"{DEVICE}/{module}",
        "username": f"{HOSTNAME}/{DEVICE}/{module}/?api-version=2021-04-12",
        "password": sas(module, keys[module]),
    }


def hub_case(work: Path, certs: Any, host: str, n: int, window: int) -> dict[str, Any]:
    route = {"r": 'FROM /messages/modules/gen/outputs/out INTO BrokeredEndpoint("/modules/sink/inputs/in")'}
    hub, keys = hub_for(work, certs, host, ["gen", "sink"], route)
    try:
        pub = {**module_spec(hub, keys, "gen", certs.ca, n, window)}
        pub["topic"] = f"devices/{DEVICE}/modules/gen/messages/events/%24.on=out&%24.ct=application%2Fjson"
        sub = {
            **module_spec(hub, keys, "sink", certs.ca, n, window),
            "filter": f"devices/{DEVICE}/modules/sink/inputs/#",
        }
        return one_way(pub, sub)
    finally:
        hub.stop()


def end_to_end_case(work: Path, certs: Any, host: str, model_dir: Path, n: int, window: int, args: Any) -> dict:
    routes = {
        "in": 'FROM /messages/modules/gen/outputs/samples INTO BrokeredEndpoint("/modules/scorer/inputs/input1")',
        "up": "FROM /messages/modules/scorer/outputs/output1 INTO $upstream",
    }
    hub, keys = hub_for(work, certs, host, ["gen", "scorer"], routes)
    procs = []
    try:
        cs = (
            f"HostName={HOSTNAME};GatewayHostName={hub.host};DeviceId={DEVICE};ModuleId=scorer;"
            f"SharedAccessKey={keys['scorer']}"
        )
        spec = {"cs": cs, "ca": str(certs.ca), "model_dir": str(model_dir), "batch": args.max_batch}
        procs.append(child("scorer", {**spec, "send_threads": args.send_threads}))
        pub = module_spec(hub, keys, "gen", certs.ca, n, window)
        pub["topic"] = f"devices/{DEVICE}/modules/gen/messages/events/%24.on=samples&%24.ct=application%2Fjson"
        p = child("pub", pub)
        procs.append(p)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        started = json.loads(p.stdout.readline())
        deadline = time.time() + 600
        while hub.snapshot()["upstream"] < n and time.time() < deadline:
            time.sleep(0.005)
        elapsed = time.time() - started["start"]
        got = hub.snapshot()["upstream"]
        return {"messages": got, "seconds": round(elapsed, 3), "per_s": round(got / elapsed)}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(20)
        hub.stop()


def scorer_alone(work: Path, model_path: Path, args: Any) -> dict[str, Any]:
    import mqtt_scoring

    ns = argparse.Namespace(
        duration=args.duration,
        warmup=2.0,
        window=200,
        scorer_inflight=200,
        max_batch=args.max_batch,
        max_wait_ms=0.0,
        loadgen=None,
    )
    row = mqtt_scoring.run_case("edgepack", "1.6", "lifted", ns, work, model_path)
    return {"messages": None, "seconds": args.duration, "per_s": row["rps"]}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1].startswith("_"):
        {"_pub": run_pub, "_sub": run_sub, "_scorer": run_scorer}[sys.argv[1]](json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="messages per one-way row")
    parser.add_argument("--scored", type=int, default=5000, help="messages for the end-to-end row")
    parser.add_argument("--window", type=int, default=200, help="QoS 1 messages in flight per publisher")
    parser.add_argument("--max-batch", type=int, default=32, help="the scorer's max_batch_size")
    parser.add_argument("--send-threads", type=int, default=4, help="the IoT Edge scorer's sender threads")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of the scorer-over-MQTT row")
    parser.add_argument("--no-scoring", action="store_true", help="only the forwarding rows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from mqtt_scoring import model

    from packager.edge.certs import ensure_certs
    from packager.edge.hub import free_hub_address

    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="edge-hub-bench-") as tmp:
        work = Path(tmp)
        host = free_hub_address()
        certs = ensure_certs(work / "certs", host)
        rows["mosquitto"] = mosquitto_case(work, certs, args.messages, args.window)
        rows["hub forwarding"] = hub_case(work, certs, host, args.messages, args.window)
        if not args.no_scoring:
            model_path = model(work)
            rows["scorer over MQTT"] = scorer_alone(work, model_path, args)
            rows["end to end"] = end_to_end_case(work, certs, host, model_path.parent, args.scored, args.window, args)
    ratios = {"forwarding / mosquitto": round(rows["hub forwarding"]["per_s"] / rows["mosquitto"]["per_s"], 2)}
    if "end to end" in rows:
        ratios["end to end / scorer over MQTT"] = round(
            rows["end to end"]["per_s"] / rows["scorer over MQTT"]["per_s"], 2
        )
    if args.json:
        print(json.dumps({"rows": rows, "ratios": ratios}, indent=1))
        return
    print("| path | messages | seconds | messages/s |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['messages'] if r['messages'] is not None else '-'} | {r['seconds']} | {r['per_s']:,} |")
    for name, value in ratios.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
