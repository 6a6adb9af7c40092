"""HTTP scoring throughput: azureml-inference-server-http, MLServer and edgepack's server, side by side.

    python benchmarks/http_scoring.py [--duration S] [--connections C] [--only NAME]... [--batching] [--json]

Run from the repository root. Every server serves the same model, the 64-256-256-10 MLP made by
``../shared/bench/make_model.py``, to the same batch-1 JSON request (``../shared/bench/bodies.py``:
``aml.json`` for ``/score``, ``v2.json`` for V2 infer), one server at a time:

- ``azureml``: azureml-inference-server-http 1.5.1 (Flask + gunicorn sync workers), 1 and 2 workers,
  with a ``score.py`` entry script (``init()`` loads the model with onnxruntime, ``run(raw_data)``
  decodes ``{"data": ...}``, runs, returns the output list).
- ``mlserver``: MLServer 1.7.1 with a custom ``MLModel`` over onnxruntime (there is no mlserver-onnx
  on PyPI for 1.7.1), V2 infer; parallel_workers 0 (model in the HTTP process), 1 (the default) and 2.
  MLServer has one HTTP process; its ``parallel_workers`` are the pool that runs the model.
- ``edgepack``: ``python -m edge_module`` with ``/score`` and V2 infer, 1 and 2 workers (the command
  line is ``EDGEPACK_CMD`` below: the one place to edit if the server's flags change). Skipped with a
  note when ``edge_module/server/`` or ``python -m edge_module --help`` is not there yet.
- ``thin``: the thinnest possible server (asyncio + uvloop + httptools + orjson, no routing, metrics
  or checks: ``THIN_PY``), 1 and 2 processes: the ceiling for a Python HTTP server; edgepack rows get
  ``vs thin``, their req/s over thin's with as many processes.
- ``inprocess``: the ceiling, decode + onnxruntime run + encode in a loop, in one process pinned to
  one core (orjson when installed, else json).

Load: ``wrk -t1 -c<connections> -d<duration>s`` (after a warm-up of the same kind) with a Lua script
that POSTs the body and prints req/s and latency percentiles as JSON from wrk's ``done()`` hook.
Cold start: from process start to the first 200 on the readiness route (``/`` for azureml,
``/v2/health/ready`` for MLServer and edgepack). Every response is first checked against the model's
output computed here. Ratios are req/s over azureml 1 worker and over edgepack 1 worker (``/score``).

``--batching`` adds edgepack's adaptive batching, off vs on, through V2 infer (where edgepack batches)
at concurrency 32 on a heavier MLP (64-2560-2560-10, 1.2-4.5 ms per batch-1 request on one core of
the 2-core dev VM, depending on the moment; the run measures and prints it).

On a shared machine: before each case the run waits (``--quiet-wait``, 120 s at most) until no other
load generator (wrk, ab, hey...) runs and the CPUs are mostly idle; during each measurement it counts
the CPU time used by processes that are not its own, measures again (``--retries``) when that is over
10 % of the machine, and flags the row ``DOUBTFUL`` if it stays over.

The peers live in their own virtualenvs under ``--venvs`` (default ``$EDGEPACK_BENCH_VENVS`` or
``/var/cache/edgepack/bench-venvs``), created with pip on the first run and reused after (a marker
file records what was installed; a venv is rebuilt only when the pinned requirements change). The
venvs' pip gets the host pip's configuration (index, find-links, certificate), written as the venv's
site ``pip.conf``, and the environment is passed through. onnxruntime is pinned to the host's version
so every contender runs the same kernels; the peers' sessions use one intra-op thread, like the
in-process loop (ORT's spinning thread pool only costs at batch 1 with several worker processes).

Needs ``wrk`` (``apt-get install -y wrk``), onnx and onnxruntime on the host (edgepack's own
dependencies). Servers listen on free ports (azureml binds 0.0.0.0: its host is not configurable);
traffic goes to 127.0.0.1 only. Every child process is stopped on exit, errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import configparser
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.scorers (the MLP maker)
SHARED_BENCH = ROOT.parent / "shared" / "bench"
DEFAULT_VENVS = Path(os.environ.get("EDGEPACK_BENCH_VENVS", "/var/cache/edgepack/bench-venvs"))

MODEL_NAME = "mlp"  # V2 model name everywhere; the model file is azureml-models/mlp/1/mlp.onnx
WIDE_DIMS = (64, 2560, 2560, 10)  # --batching: a model that takes >= 1 ms per batch-1 request

# ----------------------------------------------------------------------------------------------
# edgepack's server: the one place to edit while its command line settles.
# Placeholders: {python} {model_dir} {port} {workers} {max_batch_size} {max_batch_wait_ms}.
# {model_dir} is an AZUREML_MODEL_DIR-style folder (.../azureml-models/mlp/1) holding mlp.onnx.
EDGEPACK_CMD = ["{python}", "-m", "edge_module", "--host", "127.0.0.1", "--port", "{port}", "--workers", "{workers}"]
EDGEPACK_CMD += ["--model-dir", "{model_dir}"]
# Alternative: ["edgepack", "serve", "--model-dir", "{model_dir}", "--port", "{port}", "--workers", "{workers}"]
EDGEPACK_BATCHING_ARGS = ["--max-batch-size", "{max_batch_size}", "--max-batch-wait-ms", "{max_batch_wait_ms}"]
EDGEPACK_BATCHING_ENV: dict[str, str] = {}  # or {"EDGEPACK_MAX_BATCH_SIZE": "{max_batch_size}", ...WAIT_MS}
EDGEPACK_ENV: dict[str, str] = {}  # extra environment for every edgepack run
EDGEPACK_READY_PATH = "/v2/health/ready"
EDGEPACK_SCORE_PATH = "/score"
EDGEPACK_V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
EDGEPACK_BATCHING_ROUTE = "v2"  # the route --batching loads: "v2" (batching applies to V2 infer) or "score"
# ----------------------------------------------------------------------------------------------

PEERS: dict[str, list[str]] = {
    "azureml": ["azureml-inference-server-http==1.5.1"],
    # MLServer 1.7.1 leaves uvloop unpinned; uvloop >= 0.22 raises in asyncio.get_event_loop() without a
    # running loop, which kills every parallel inference worker at start ("Couldn't load model").
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22"],
}
PEER_REPORTED = {  # versions recorded in the report (what pip resolved)
    "azureml": ["azureml-inference-server-http", "flask", "gunicorn", "onnxruntime", "numpy"],
    "mlserver": ["mlserver", "fastapi", "uvicorn", "uvloop", "onnxruntime", "numpy"],
}
PEER_COMMON = ["numpy"]  # + onnxruntime==<host version>
MARKER = ".edgepack-bench.json"

READY_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 10.0
OTHERS_CPU_LIMIT = 10.0  # % of all CPUs used by others during a measurement above which it is retried/flagged

SCORE_PY = """\
import json
import os

import numpy as np
import onnxruntime as ort

session = None
input_name = None


def init():
    global session, input_name
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "mlp.onnx")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


def run(raw_data):
    x = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    return session.run(None, {input_name: x})[0].tolist()
"""

MLSERVER_RUNTIME_PY = """\
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            (request_input.name if request_input.name in self._inputs else self._inputs[i]):
            NumpyCodec.decode_input(request_input).astype(np.float32, copy=False)
            for i, request_input in enumerate(payload.inputs)
        }
        results = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(self._outputs, results)],
        )
"""

# The in-process ceiling, run in a child pinned to one core: argv = model, body, kind, seconds, cpu.
INPROCESS_PY = """\
import json, os, sys, time
import numpy as np
import onnxruntime as ort
try:
    import orjson
    loads, dumps, codec = orjson.loads, orjson.dumps, "orjson"
except ImportError:
    loads, dumps, codec = json.loads, (lambda o: json.dumps(o).encode()), "json"
model, body_path, kind, seconds, cpu = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
os.sched_setaffinity(0, {cpu})
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
body = open(body_path, "rb").read()

def aml(raw):
    x = np.asarray(loads(raw)["data"], dtype=np.float32)
    return dumps(session.run(None, {name: x})[0].tolist())

def v2(raw):
    t = loads(raw)["inputs"][0]
    x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
    y = session.run(None, {name: x})[0]
    return dumps({"model_name": "mlp", "outputs": [
        {"name": "output", "shape": list(y.shape), "datatype": "FP32", "data": y.ravel().tolist()}]})

step = aml if kind == "aml" else v2
for _ in range(200):
    step(body)
lat = []
clock = time.perf_counter_ns
start = clock()
deadline = start + int(seconds * 1e9)
now = start
while now < deadline:
    t0 = now
    step(body)
    now = clock()
    lat.append(now - t0)
lat.sort()
print(json.dumps({"codec": codec, "n": len(lat), "rps": len(lat) / ((now - start) / 1e9),
                  "p50_ms": lat[len(lat) // 2] / 1e6, "p99_ms": lat[int(len(lat) * 0.99)] / 1e6}))
"""

# The thinnest possible server, the ceiling for any Python HTTP server here (what the issue measured):
# asyncio + uvloop + httptools + orjson, no routing, metrics, auth or checks; POST anywhere scores a
# /score body, GET answers "ok". argv = model, port, processes (SO_REUSEPORT, forked).
THIN_PY = """\
import asyncio, os, socket, sys
import httptools, numpy as np, onnxruntime as ort, orjson, uvloop
model, port, processes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n"

def serve():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    class Thin(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.body = transport, []
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_begin(self):
            self.body = []

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            if self.parser.get_method() == b"POST":
                x = np.asarray(orjson.loads(b"".join(self.body))["data"], dtype=np.float32)
                y = session.run(None, {name: x})[0]
                out = orjson.dumps({out_name: y}, option=orjson.OPT_SERIALIZE_NUMPY)
            else:
                out = b"ok"
            self.transport.write(HEAD % len(out) + out)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(loop.create_server(Thin, sock=sock))
    loop.run_forever()

for _ in range(processes - 1):
    if os.fork() == 0:
        break
serve()
"""

WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [{eq}[{body}]{eq}]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "mean_us": %.1f, "max_us": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


# ---------------------------------------------------------------------------------------------- processes

_CHILDREN: list[subprocess.Popen] = []


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def spawn(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, log: Path) -> subprocess.Popen:
    """Start a child in its own process group (so stopping it stops its workers), output to ``log``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN.append(proc)
    return proc


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[2]) == pgid:
                    members.append(int(entry))
    return members


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
    # Workers may outlive the leader: kill whatever is left in the group (only if something is).
    if _group_members(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT_S)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def stop_all() -> None:
    for proc in list(_CHILDREN):
        stop(proc)


def run_child(
    cmd: list[str], *, timeout: float, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Run a child to completion, bounded in time; its output goes to ``log``."""
    proc = spawn(cmd, env=env, cwd=cwd, log=log)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _log(f"  timed out after {timeout:.0f} s: {' '.join(cmd)}")
        return -1
    finally:
        stop(proc)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOAD_GENERATORS = {"wrk", "wrk2", "ab", "hey", "oha", "vegeta", "locust", "h2load", "bombardier"}


def other_load_generators() -> list[str]:
    """Load generators running on this machine that are not ours (``pid command``)."""
    mine = {proc.pid for proc in _CHILDREN}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if comm in LOAD_GENERATORS:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry} {cmdline.strip()[:120]}")
        except OSError:
            continue
    return found


def cpu_busy(seconds: float = 1.0) -> float:
    """Percent of all CPUs busy over ``seconds`` (from /proc/stat)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = snapshot()
    time.sleep(seconds)
    idle1, total1 = snapshot()
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def _cpu_ticks(pgids: set[int]) -> tuple[int, int, int, dict[int, int]]:
    """Ticks: (machine busy, machine total, stolen by the hypervisor, {pid: ticks} of our groups and this process)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = sum(values[:3])  # user, nice, system: irq/softirq time (mostly our loopback traffic) is left out
    mine = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # fields[2] = pgrp, [11] = utime, [12] = stime
        if int(fields[2]) in pgids or int(entry) == os.getpid():
            mine[int(entry)] = int(fields[11]) + int(fields[12])
    return busy, total, values[7], mine


class OthersCpu:
    """CPU used by processes that are not this benchmark's over a measurement, in % of all CPUs.

    Call ``sample()`` while the measured children run (a child's ticks vanish once it is reaped):
    the window ends at the last sample.
    """

    def __init__(self) -> None:
        self.busy0, self.total0, self.steal0, self.first = _cpu_ticks(self._pgids())
        self.busy1, self.total1, self.steal1, self.last = self.busy0, self.total0, self.steal0, dict(self.first)

    @staticmethod
    def _pgids() -> set[int]:
        return {proc.pid for proc in _CHILDREN}

    def sample(self) -> None:
        self.busy1, self.total1, self.steal1, mine = _cpu_ticks(self._pgids())
        self.last.update(mine)

    def percent(self) -> float:
        mine = sum(ticks - self.first.get(pid, 0) for pid, ticks in self.last.items())
        return max(0.0, 100.0 * ((self.busy1 - self.busy0) - mine) / max(1, self.total1 - self.total0))

    def steal(self) -> float:
        """CPU time the hypervisor gave to other VMs, in % of this machine's CPUs."""
        return 100.0 * (self.steal1 - self.steal0) / max(1, self.total1 - self.total0)


def contamination(result: dict[str, Any]) -> float:
    """How much of the machine others took during a measurement: other processes plus hypervisor steal."""
    return result["others_cpu_pct"] + result.get("steal_pct", 0.0)


def flag_contamination(row: Any) -> None:
    if (row.others_cpu_pct or 0) + (row.steal_pct or 0) > OTHERS_CPU_LIMIT:
        row.notes.append(
            f"DOUBTFUL: others took {(row.others_cpu_pct or 0) + (row.steal_pct or 0):.0f}% of the CPUs meanwhile "
            f"(processes {row.others_cpu_pct or 0:.0f}%, other VMs {row.steal_pct or 0:.0f}%)"
        )


def wait_quiet(max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until nobody else's load generator runs and the CPUs are mostly idle.

    Returns the CPU use seen last, in percent of all CPUs.
    """
    deadline = time.monotonic() + max_wait
    said = False
    while True:
        others = other_load_generators()
        busy = cpu_busy(0.5)
        if (not others and busy < 15) or time.monotonic() > deadline:
            return busy
        if not said:
            what = f"another load generator: {others[0]}" if others else f"CPUs {busy:.0f}% busy"
            _log(f"  waiting up to {max_wait:.0f} s for a quiet machine ({what})")
            said = True
        time.sleep(1.0)


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------------------------- venvs


def host_pip_config() -> dict[str, dict[str, str]]:
    """The host pip's file configuration (``pip config list``), as sections for a site pip.conf."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    sections: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.startswith(":env:") or "." not in key:
            continue  # environment variables are inherited as they are
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value.strip().strip("'\"")
    return sections


def peer_requirements(name: str) -> list[str]:
    return [*PEERS[name], f"onnxruntime=={importlib.metadata.version('onnxruntime')}", *PEER_COMMON]


def ensure_venv(root: Path, name: str, work: Path) -> Path:
    """The peer's virtualenv, created and installed on first use; reused when its marker matches."""
    venv = root / name
    wanted = {"python": platform.python_version(), "requirements": peer_requirements(name)}
    marker = venv / MARKER
    if marker.is_file():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(marker.read_text()) == wanted and (venv / "bin" / "python").exists():
                return venv
        _log(f"  {venv}: requirements changed, rebuilding")
    if venv.exists():
        shutil.rmtree(venv)
    root.mkdir(parents=True, exist_ok=True)
    _log(f"  creating {venv} ({' '.join(wanted['requirements'])}); this takes a few minutes once")
    log = work / f"pip-{name}.log"
    if run_child([sys.executable, "-m", "venv", str(venv)], timeout=300, log=log) != 0:
        raise SystemExit(f"error: could not create the virtualenv {venv}:\n{tail(log)}")
    config = configparser.ConfigParser(interpolation=None)
    config.read_dict(host_pip_config())
    with open(venv / "pip.conf", "w") as f:
        config.write(f)
    code = run_child(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", *wanted["requirements"]],
        timeout=PIP_TIMEOUT_S,
        log=log,
    )
    if code != 0:
        raise SystemExit(f"error: pip could not install {name} into {venv} (log {log}):\n{tail(log)}")
    marker.write_text(json.dumps(wanted, indent=1))
    return venv


def venv_version(venv: Path, dist: str) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.stdout.strip() or "?"


def venv_versions(venv: Path, dists: list[str]) -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys; print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *dists], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {}


def prime(python: str, modules: str, env: dict[str, str] | None = None) -> None:
    """Import once so .pyc files and the page cache are warm before the cold-start clock runs."""
    subprocess.run([python, "-c", f"import {modules}"], capture_output=True, timeout=120, check=False, env=env)


# ---------------------------------------------------------------------------------------------- models


def make_wide_model(path: Path, dims: tuple[int, ...]) -> None:
    """An MLP like ../shared/bench/make_model.py's, with other widths (same ops, seed and IR)."""
    from tests.support.scorers import make_mlp

    path.write_bytes(make_mlp(dims))


def reference_output(model: Path, aml_body: Path) -> list[float]:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.asarray(json.loads(aml_body.read_bytes())["data"], dtype=np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0].ravel().tolist()


def find_output(doc: Any, size: int) -> list[float] | None:
    """The first list in a response that flattens to ``size`` numbers (AML list, V2 ``data``, named outputs)."""

    def flat(value: Any) -> list[float] | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return [float(value)]
        if isinstance(value, list):
            out: list[float] = []
            for item in value:
                part = flat(item)
                if part is None:
                    return None
                out += part
            return out
        return None

    if isinstance(doc, list):
        numbers = flat(doc)
        if numbers is not None and len(numbers) == size:
            return numbers
        items = doc
    elif isinstance(doc, dict):
        items = list(doc.values())
    elif isinstance(doc, str):  # a JSON document encoded twice
        try:
            return find_output(json.loads(doc), size)
        except ValueError:
            return None
    else:
        return None
    for item in items:
        found = find_output(item, size)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    section: str
    server: str
    route: str
    workers: str
    config: str = ""
    connections: int = 0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    cold_start_s: float | None = None
    others_cpu_pct: float | None = None  # CPU used by processes not ours during the measurement, % of all CPUs
    steal_pct: float | None = None  # CPU the hypervisor gave to other VMs meanwhile, % of all CPUs
    probe_kps: float | None = None  # machine-speed probe just before (in-process /score loop, k/s)
    vs_azureml_1w: float | None = None
    vs_edgepack_1w: float | None = None
    vs_thin: float | None = None  # edgepack rows: over the thin server with as many processes
    notes: list[str] = field(default_factory=list)


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    ready_path: str


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.wrk = shutil.which("wrk") or "wrk"
        self.probe_files: tuple[Path, Path] | None = None  # (model, aml body) for the machine-speed probe

    def probe(self) -> float | None:
        """Machine speed now: the in-process /score loop on the reference model for 1 s, in k iterations/s.

        The dev VM's speed drifts by tens of percent over minutes (neighbour VMs, clocks) with no CPU use
        visible from inside; a probe next to each case shows whether the rows are comparable.
        """
        if not self.probe_files:
            return None
        log = self.work / "probe.log"
        log.write_text("")
        model, body = self.probe_files
        cpu = max(os.sched_getaffinity(0))
        code = run_child(
            [sys.executable, "-c", INPROCESS_PY, str(model), str(body), "aml", "1", str(cpu)], timeout=60, log=log
        )
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        return json.loads(lines[-1])["rps"] / 1000 if code == 0 and lines else None

    def lua(self, body: Path) -> Path:
        text = body.read_text()
        eq = "="
        while f"]{eq}]" in text:
            eq += "="
        script = self.work / f"post-{body.stem}.lua"
        script.write_text(WRK_LUA.format(eq=eq, body=text))
        return script

    def wrk_run(self, url: str, body: Path, connections: int, seconds: float) -> dict[str, Any]:
        log = self.work / "wrk.log"
        log.write_text("")
        cmd = [
            self.wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.lua(body)),
            url,
        ]
        proc = spawn(cmd, log=log)
        others_cpu = OthersCpu()
        seen: set[str] = set()
        deadline = time.monotonic() + seconds + 60
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen.update(other_load_generators())  # someone else's benchmark skews this one
                others_cpu.sample()
                time.sleep(0.5)
            code = proc.poll()
            others_pct, steal_pct = others_cpu.percent(), others_cpu.steal()
        finally:
            stop(proc)
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("BENCH_JSON "):
                result = json.loads(line.removeprefix("BENCH_JSON "))
                return result | {"others": sorted(seen), "others_cpu_pct": others_pct, "steal_pct": steal_pct}
        raise RuntimeError(f"wrk exited with {code} and no result:\n{tail(log)}")

    @contextlib.contextmanager
    def serving(self, server: Server) -> Iterator[float]:
        """Start ``server``, wait for a 200 on its readiness route, yield the cold start in seconds."""
        log = self.work / f"{server.name}.log"
        log.write_text("")
        wait_quiet(self.args.quiet_wait)
        _log(f"  start: {' '.join(server.cmd)}")
        start = time.perf_counter()
        proc = spawn(server.cmd, env=server.env, cwd=server.cwd, log=log)
        try:
            url = f"http://127.0.0.1:{server.port}{server.ready_path}"
            deadline = start + READY_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{server.name} exited with {proc.returncode} before ready:\n{tail(log)}")
                with contextlib.suppress(OSError):
                    if http("GET", url, timeout=1.0)[0] == 200:
                        break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")
                time.sleep(0.01)
            cold = time.perf_counter() - start
            _log(f"  ready in {cold:.2f} s")
            yield cold
        finally:
            stop(proc)

    def serve_and_measure(
        self, server: Server, cases: list[tuple[Row, str, Path]], expected: list[float], connections: int
    ) -> None:
        """Start ``server`` once and measure each (row, URL path, body); a failed start is noted on each row."""
        try:
            with self.serving(server) as cold:
                for row, path, body in cases:
                    row.cold_start_s = cold
                    self.measure(row, f"http://127.0.0.1:{server.port}{path}", body, expected, connections)
        except RuntimeError as e:
            for row, _, _ in cases:
                row.notes.append(str(e).splitlines()[0])
            _log(f"  failed: {e}")

    def measure(self, row: Row, url: str, body: Path, expected: list[float], connections: int) -> Row:
        """Check one response, warm up, then measure with wrk."""
        row.connections = connections
        row.probe_kps = self.probe()
        status, content = http("POST", url, body.read_bytes(), timeout=30)
        if status != 200:
            row.notes.append(f"HTTP {status}: {content[:200].decode(errors='replace')}")
            _log(f"  {row.server} {row.route}: {row.notes[-1]}")
            return row
        try:
            got = find_output(json.loads(content), len(expected))
        except ValueError:
            got = None
        if got is None:
            row.notes.append(f"no {len(expected)}-number output in the response: {content[:200]!r}")
        elif max(abs(a - b) for a, b in zip(got, expected, strict=True)) > 1e-4:
            row.notes.append("output differs from onnxruntime's")
        for note in row.notes:
            _log(f"  warning: {note}")
        result: dict[str, Any] = {}
        for attempt in range(1 + self.args.retries):
            if attempt:
                _log(f"  others used {contamination(result):.0f}% of the CPUs meanwhile: measuring again")
                wait_quiet(self.args.quiet_wait)
            if self.args.warmup > 0:
                self.wrk_run(url, body, connections, self.args.warmup)
            this = self.wrk_run(url, body, connections, self.args.duration)
            if not result or contamination(this) < contamination(result):
                result = this
            if contamination(result) <= OTHERS_CPU_LIMIT:
                break
        seconds = result["duration_us"] / 1e6
        row.rps = result["requests"] / seconds if seconds else None
        row.p50_ms = result["p50_us"] / 1000
        row.p99_ms = result["p99_us"] / 1000
        row.others_cpu_pct, row.steal_pct = round(result["others_cpu_pct"], 1), round(result["steal_pct"], 1)
        flag_contamination(row)
        if result["others"]:
            row.notes.append(f"another load generator ran meanwhile ({result['others'][0]})")
        row.errors = sum(
            result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        if row.errors:
            row.notes.append(f"{row.errors} errors (wrk: {result})")
        _log(
            f"  {row.server} {row.route} w{row.workers}: {row.rps:,.0f} req/s, "
            f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, "
            f"others' CPU {row.others_cpu_pct:.0f}% + steal {row.steal_pct:.0f}%"
        )
        return row


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return env


def fill(template: list[str], values: dict[str, Any]) -> list[str]:
    return [part.format(**values) for part in template]


# ---------------------------------------------------------------------------------------------- contenders


def run_azureml(bench: Bench, venv: Path, files: dict[str, Path], expected: list[float]) -> list[Row]:
    app = bench.work / "azureml"
    app.mkdir(exist_ok=True)
    (app / "score.py").write_text(SCORE_PY)
    version = venv_version(venv, "azureml-inference-server-http")
    prime(str(venv / "bin" / "python"), "azureml_inference_server_http.server.create_app, onnxruntime, numpy")
    rows = []
    for workers in (1, 2):
        port = free_port()
        env = base_env() | {"AZUREML_MODEL_DIR": str(files["model_dir"]), "AML_APP_ROOT": str(app)}
        cmd = [str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(app / "score.py")]
        cmd += ["--model_dir", str(files["model_dir"]), "--port", str(port), "--worker_count", str(workers)]
        server = Server(f"azureml-w{workers}", cmd, env, app, port, "/")
        row = Row("main", "azureml", "/score", str(workers), f"azureml-inference-server-http {version}, gunicorn sync")
        bench.serve_and_measure(server, [(row, "/score", files["aml"])], expected, bench.args.connections)
        rows.append(row)
    return rows


def run_mlserver(bench: Bench, venv: Path, files: dict[str, Path], expected: list[float]) -> list[Row]:
    version = venv_version(venv, "mlserver")
    prime(str(venv / "bin" / "python"), "mlserver.server, mlserver.codecs, onnxruntime, numpy")
    rows = []
    for pool in (0, 1, 2):  # 0: the model runs in the HTTP process; 1 is MLServer's default
        repo = bench.work / f"mlserver-{pool}"
        model_folder = repo / MODEL_NAME
        model_folder.mkdir(parents=True, exist_ok=True)
        (model_folder / "onnx_runtime.py").write_text(MLSERVER_RUNTIME_PY)
        model_settings = {
            "name": MODEL_NAME,
            "implementation": "onnx_runtime.OnnxModel",
            "parameters": {"uri": str(files["model"])},
        }
        (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
        port = free_port()
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": pool,
        }
        (repo / "settings.json").write_text(json.dumps(settings, indent=1))
        server = Server(
            f"mlserver-p{pool}",
            [str(venv / "bin" / "mlserver"), "start", str(repo)],
            base_env(),
            repo,
            port,
            "/v2/health/ready",
        )
        row = Row("main", "mlserver", "v2 infer", str(pool), f"MLServer {version}, parallel_workers={pool}")
        path = f"/v2/models/{MODEL_NAME}/infer"
        bench.serve_and_measure(server, [(row, path, files["v2"])], expected, bench.args.connections)
        rows.append(row)
    return rows


def git_revision() -> str:
    """The commit edgepack was measured at, and whether edge_module/ had uncommitted or untracked changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30)
    status = subprocess.run(
        [*git, "status", "--porcelain", "--", "edge_module"], capture_output=True, text=True, timeout=30
    )
    revision = head.stdout.strip() or "?"
    return revision + (" + uncommitted edge_module changes" if status.stdout.strip() else "")


def edgepack_available() -> str | None:
    """None when edgepack's server can be started, else why not."""
    if not (ROOT / "edge_module" / "server").is_dir():
        return f"{ROOT / 'edge_module' / 'server'} does not exist yet"
    env = base_env() | {"PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "edge_module", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return "`python -m edge_module --help` did not finish in 60 s"
    if out.returncode != 0:
        return f"`python -m edge_module --help` failed ({out.returncode}): {(out.stderr or out.stdout).strip()[-300:]}"
    return None


def edgepack_server(bench: Bench, model_dir: Path, workers: int, batching: tuple[int, float] | None) -> Server:
    port = free_port()
    values = {"python": sys.executable, "model_dir": model_dir, "port": port, "workers": workers}
    cmd = fill(EDGEPACK_CMD, values)
    env = base_env() | {"PYTHONPATH": str(ROOT)} | EDGEPACK_ENV
    name = f"edgepack-w{workers}"
    if batching:
        values |= {"max_batch_size": batching[0], "max_batch_wait_ms": batching[1]}
        cmd += fill(EDGEPACK_BATCHING_ARGS, values)
        env |= {k: v.format(**values) for k, v in EDGEPACK_BATCHING_ENV.items()}
        name += "-batching"
    return Server(name, cmd, env, bench.work, port, EDGEPACK_READY_PATH)


def run_edgepack(bench: Bench, files: dict[str, Path], expected: list[float]) -> list[Row]:
    prime(sys.executable, "edge_module, onnxruntime, numpy", env=base_env() | {"PYTHONPATH": str(ROOT)})
    rows = []
    for workers in (1, 2):
        server = edgepack_server(bench, files["model_dir"], workers, None)
        routes = [("/score", EDGEPACK_SCORE_PATH, files["aml"]), ("v2 infer", EDGEPACK_V2_PATH, files["v2"])]
        cases = [(Row("main", "edgepack", label, str(workers)), path, body) for label, path, body in routes]
        bench.serve_and_measure(server, cases, expected, bench.args.connections)
        rows += [row for row, _, _ in cases]
    return rows


def run_thin(bench: Bench, files: dict[str, Path], expected: list[float]) -> list[Row]:
    """The thin server (THIN_PY) with 1 and 2 processes, /score bodies."""
    rows = []
    for processes in (1, 2):
        port = free_port()
        cmd = [sys.executable, "-c", THIN_PY, str(files["model"]), str(port), str(processes)]
        server = Server(f"thin-{processes}", cmd, base_env(), bench.work, port, "/")
        row = Row("main", "thin", "/score", str(processes), "asyncio+uvloop+httptools+orjson, no routing or checks")
        bench.serve_and_measure(server, [(row, "/score", files["aml"])], expected, bench.args.connections)
        rows.append(row)
    return rows


def run_inprocess(bench: Bench, model: Path, bodies: list[tuple[str, str, Path]], section: str) -> list[Row]:
    cpu = max(os.sched_getaffinity(0))
    seconds = min(bench.args.duration, 5.0)
    rows = []
    for label, kind, body in bodies:
        row = Row(section, "in-process", label, "1 core", connections=1)
        best: dict[str, Any] = {}
        for attempt in range(1 + bench.args.retries):
            if attempt:
                _log(f"  others used {contamination(best):.0f}% of the CPUs meanwhile: measuring again")
            wait_quiet(bench.args.quiet_wait)
            log = bench.work / "inprocess.log"
            log.write_text("")
            cmd = [sys.executable, "-c", INPROCESS_PY, str(model), str(body), kind, str(seconds), str(cpu)]
            proc = spawn(cmd, log=log)
            others_cpu = OthersCpu()
            deadline = time.monotonic() + seconds + 120
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    others_cpu.sample()
                    time.sleep(0.5)
                code = proc.poll()
                others_pct, steal_pct = others_cpu.percent(), others_cpu.steal()
            finally:
                stop(proc)
            lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
            if code != 0 or not lines:
                row.notes.append(f"failed ({code}): {tail(log, 3)}")
                break
            result = json.loads(lines[-1]) | {"others_cpu_pct": others_pct, "steal_pct": steal_pct}
            if not best or contamination(result) < contamination(best):
                best = result
            if contamination(best) <= OTHERS_CPU_LIMIT:
                break
        if best:
            row.rps, row.p50_ms, row.p99_ms = best["rps"], best["p50_ms"], best["p99_ms"]
            row.others_cpu_pct, row.steal_pct = round(best["others_cpu_pct"], 1), round(best["steal_pct"], 1)
            row.config = f"decode + run + encode, {best['codec']}, ORT 1 thread, cpu {cpu}"
            flag_contamination(row)
            _log(
                f"  in-process {label}: {row.rps:,.0f}/s, p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms, "
                f"others' CPU {row.others_cpu_pct:.0f}% + steal {row.steal_pct:.0f}%"
            )
        rows.append(row)
    return rows


def run_batching(bench: Bench, files: dict[str, Path], expected: list[float]) -> list[Row]:
    kind = ("v2 body", "v2", files["v2"]) if EDGEPACK_BATCHING_ROUTE == "v2" else ("/score body", "aml", files["aml"])
    rows = run_inprocess(bench, files["wide_model"], [kind], "batching")
    rows[0].notes.append(f"MLP {'-'.join(map(str, WIDE_DIMS))}: per-request cost of the model")
    size, wait = bench.args.max_batch_size, bench.args.max_batch_wait_ms
    for batching in (None, (size, wait)):
        server = edgepack_server(bench, files["wide_model_dir"], 1, batching)
        config = f"batching max {size}, wait {wait:g} ms" if batching else "batching off"
        route, path, body = (
            ("v2 infer", EDGEPACK_V2_PATH, files["v2"])
            if EDGEPACK_BATCHING_ROUTE == "v2"
            else ("/score", EDGEPACK_SCORE_PATH, files["aml"])
        )
        row = Row("batching", "edgepack", route, "1", config)
        bench.serve_and_measure(server, [(row, path, body)], expected, bench.args.batching_connections)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- output


def add_ratios(rows: list[Row]) -> None:
    def base(server: str) -> float | None:
        for row in rows:
            if row.section == "main" and row.server == server and row.workers == "1" and row.route == "/score":
                return row.rps
        return None

    aml, edge = base("azureml"), base("edgepack")
    thin = {r.workers: r.rps for r in rows if r.section == "main" and r.server == "thin" and r.rps}
    for row in rows:
        if row.rps and row.section == "main":
            row.vs_azureml_1w = row.rps / aml if aml else None
            row.vs_edgepack_1w = row.rps / edge if edge else None
            if row.server == "edgepack" and thin.get(row.workers):
                row.vs_thin = row.rps / thin[row.workers]
    batch_off = [r.rps for r in rows if r.section == "batching" and r.config == "batching off" and r.rps]
    for row in rows:
        if row.section == "batching" and row.server == "edgepack" and row.rps and batch_off:
            row.vs_edgepack_1w = row.rps / batch_off[0]


def table(rows: list[Row]) -> str:
    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = [
        "server",
        "route",
        "workers",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "cold s",
        "vs aml-1",
        "vs edge-1",
        "vs thin",
        "others+steal %",
        "probe k/s",
        "config / notes",
    ]
    lines = []
    for section in ("main", "batching"):
        these = [r for r in rows if r.section == section]
        if not these:
            continue
        body = [
            [
                r.server,
                r.route,
                r.workers,
                str(r.connections),
                num(r.rps, ",.0f"),
                num(r.p50_ms, ".2f"),
                num(r.p99_ms, ".2f"),
                num(r.cold_start_s, ".2f"),
                num(r.vs_azureml_1w, ".2f"),
                num(r.vs_edgepack_1w, ".2f"),
                num(r.vs_thin, ".2f"),
                "-" if r.others_cpu_pct is None else f"{r.others_cpu_pct:.0f}+{r.steal_pct or 0:.0f}",
                num(r.probe_kps, ".1f"),
                "; ".join([r.config, *r.notes]).strip("; "),
            ]
            for r in these
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
        title = "batching (vs edge-1 = vs batching off)" if section == "batching" else "batch-1 requests"
        title += " (others+steal %: CPU used meanwhile by other processes + other VMs, % of the machine)"
        lines += ["", f"## {title}", "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        lines += [
            "  ".join(
                c.rjust(w) if 3 <= i <= 12 else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths, strict=True))
            ).rstrip()
            for b in body
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main

NAMES = ("azureml", "mlserver", "thin", "edgepack", "inprocess", "batching")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of measurement per case (default 10)")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of warm-up load before each case (default 2)"
    )
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only these (repeatable)")
    parser.add_argument("--batching", action="store_true", help="add edgepack's adaptive batching, off vs on")
    parser.add_argument("--batching-connections", type=int, default=32, help="wrk connections for --batching (32)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="edgepack max batch size for --batching (32)")
    parser.add_argument(
        "--max-batch-wait-ms", type=float, default=2.0, help="edgepack max batch wait for --batching (2)"
    )
    parser.add_argument(
        "--venvs", type=Path, default=DEFAULT_VENVS, help=f"peers' virtualenvs (default {DEFAULT_VENVS})"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="seconds to wait for others' load to stop before a case (120)"
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="measure again when other processes used the CPUs meanwhile (2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (models, configs, server logs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--duration must be >= 1, --warmup >= 0, --connections >= 1")
    selected = set(args.only or [n for n in NAMES if n != "batching"])
    if args.batching:
        selected.add("batching")
    args.selected = selected
    return args


def _terminate(signum: int, _frame: Any) -> None:
    _log(f"stopped by signal {signum}: stopping the servers")
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        print("error: wrk is not installed: install it with `apt-get install -y wrk` (Debian/Ubuntu)", file=sys.stderr)
        return 2
    if not (SHARED_BENCH / "make_model.py").is_file() or not (SHARED_BENCH / "bodies.py").is_file():
        print(
            f"error: {SHARED_BENCH}/make_model.py and bodies.py are missing: the benchmark needs the shared "
            "folder next to the repository (../shared/bench)",
            file=sys.stderr,
        )
        return 2
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"error: {e}: install edgepack first (`pip install -e .`)", file=sys.stderr)
        return 2

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    atexit.register(stop_all)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="edgepack-http-bench-"))
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    try:
        # The reference model and bodies, in an AZUREML_MODEL_DIR layout: azureml-models/mlp/1/mlp.onnx.
        files: dict[str, Path] = {"model_dir": work / "azureml-models" / MODEL_NAME / "1"}
        files["model_dir"].mkdir(parents=True)
        files["model"] = files["model_dir"] / f"{MODEL_NAME}.onnx"
        log = work / "setup.log"
        for cmd in (
            [sys.executable, str(SHARED_BENCH / "make_model.py"), str(files["model"])],
            [sys.executable, str(SHARED_BENCH / "bodies.py"), str(work)],
        ):
            if run_child(cmd, timeout=120, log=log) != 0:
                raise SystemExit(f"error: {' '.join(cmd)} failed:\n{tail(log)}")
        files["aml"], files["v2"] = work / "aml.json", work / "v2.json"
        expected = reference_output(files["model"], files["aml"])
        bench = Bench(args, work)
        bench.probe_files = (files["model"], files["aml"])
        _log(f"work folder {work}; load average {load:.2f} on {os.cpu_count()} cpus")
        if load > 0.5:
            _log("  warning: the machine is busy; numbers will be lower and noisier than on an idle one")

        if "inprocess" in args.selected:
            _log("in-process ceiling")
            rows += run_inprocess(
                bench, files["model"], [("/score body", "aml", files["aml"]), ("v2 body", "v2", files["v2"])], "main"
            )
        if "thin" in args.selected:
            _log("thin server (the ceiling for a Python HTTP server)")
            rows += run_thin(bench, files, expected)
        for name in ("azureml", "mlserver"):
            if name in args.selected:
                _log(f"{name}: virtualenv")
                venv = ensure_venv(args.venvs, name, work)
                versions[name] = venv_versions(venv, PEER_REPORTED[name])
                _log(name)
                rows += (run_azureml if name == "azureml" else run_mlserver)(bench, venv, files, expected)
        if {"edgepack", "batching"} & args.selected:
            reason = edgepack_available()
            if reason:
                for name in sorted({"edgepack", "batching"} & args.selected):
                    skipped[name] = reason
                _log(f"edgepack: skipped: {reason}")
            else:
                if "edgepack" in args.selected:
                    _log("edgepack")
                    rows += run_edgepack(bench, files, expected)
                if "batching" in args.selected:
                    _log(f"edgepack batching on MLP {'-'.join(map(str, WIDE_DIMS))}")
                    files["wide_model_dir"] = work / "wide" / "azureml-models" / MODEL_NAME / "1"
                    files["wide_model_dir"].mkdir(parents=True)
                    files["wide_model"] = files["wide_model_dir"] / f"{MODEL_NAME}.onnx"
                    make_wide_model(files["wide_model"], WIDE_DIMS)
                    wide_expected = reference_output(files["wide_model"], files["aml"])
                    rows += run_batching(bench, files, wide_expected)
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        stop_all()
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    add_ratios(rows)
    elapsed = time.perf_counter() - started
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1m_at_start": round(load, 2),
        },
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk": "wrk -t1",
            "onnxruntime": importlib.metadata.version("onnxruntime"),
            "peers": versions,
            "edgepack": git_revision(),
        },
        "results": [asdict(r) for r in rows],
        "skipped": skipped,
        "elapsed_s": round(elapsed, 1),
    }
    out = sys.stderr if args.json else sys.stdout  # with --json the table goes to stderr
    if args.json:
        print(json.dumps(report, indent=1))
    print(table(rows), file=out)
    for name, reason in skipped.items():
        print(f"\n{name}: skipped: {reason}", file=out)
    print(
        f"\n{report['date']}, {os.cpu_count()} cpus, load {load:.2f} at start; "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s after {args.warmup:g} s warm-up; "
        f"run took {elapsed:.0f} s",
        file=out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
