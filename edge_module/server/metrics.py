"""Prometheus metrics as plain counters: no locks, no per-request allocation beyond a dict update.

Every mutation happens on the event-loop thread of one worker process, but for the counters of the
transports beside HTTP (MQTT, the IoT Edge hub): each has a :meth:`Metrics.attach`-ed object of its
own that only its thread writes, folded into the worker's snapshot when it is taken. With several workers each
one publishes a JSON snapshot of its counters into its own slot of a shared memory map (about once
a second and whenever it renders ``/metrics``); ``/metrics`` sums the slots, so a scrape that lands
on any worker sees the whole server (other workers' numbers at most ~1 s old).
"""

from __future__ import annotations

import mmap
import struct
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import orjson

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One worker's counters. ``observe`` is the per-request call."""

    def __init__(self, worker: int = 0, shared: SharedSlots | None = None):
        self.worker = worker
        self.shared = shared
        self.counts: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[float]] = {}  # route -> per-bucket counts (+Inf last), then the sum
        self.batch_hist: dict[str, list[float]] = {}
        self.in_flight = 0
        self.timeouts = 0
        self.queued = 0  # scoring requests that waited for a concurrency slot (limits.ConcurrencyLimit)
        self.rejected = 0  # ... and were answered 503 when the wait ran out
        self.waiting = 0  # waiting now
        self.load_seconds: float | None = None
        self.ready = False
        self.load_failed = False
        self.started = time.time()
        self.side: list[Metrics] = []
        self._nb = len(LATENCY_BUCKETS)

    def attach(self) -> Metrics:
        """Counters for another thread (a transport): written only there, shown with this worker's."""
        side = Metrics(self.worker)
        self.side.append(side)
        return side

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        h = self.hist.get(route)
        if h is None:
            h = self.hist[route] = [0] * (self._nb + 2)
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-1] += seconds

    def observe_batch(self, model: str, size: int) -> None:
        h = self.batch_hist.get(model)
        if h is None:
            h = self.batch_hist[model] = [0] * (len(BATCH_BUCKETS) + 2)
        h[bisect_left(BATCH_BUCKETS, size)] += 1
        h[-1] += size

    # -- snapshots and rendering ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        counts, hist = self.counts, self.hist
        if self.side:
            counts, hist = dict(counts), {k: list(v) for k, v in hist.items()}
            for side in self.side:  # dict() and list() copy in one step: safe against the writer thread
                for key, n in dict(side.counts).items():
                    counts[key] = counts.get(key, 0) + n
                _merge_hist(hist, dict(side.hist))
        return {
            "worker": self.worker,
            "counts": [[r, m, s, n] for (r, m, s), n in counts.items()],
            "hist": hist,
            "batch_hist": self.batch_hist,
            "in_flight": self.in_flight,
            "timeouts": self.timeouts,
            "queued": self.queued,
            "rejected": self.rejected,
            "waiting": self.waiting,
            "load_seconds": self.load_seconds,
            "ready": self.ready,
            "load_failed": self.load_failed,
            "started": self.started,
        }

    def publish(self) -> None:
        if self.shared is not None:
            self.shared.write(self.worker, orjson.dumps(self.snapshot()))

    def render(self) -> bytes:
        """The Prometheus text exposition of every worker's numbers."""
        mine = self.snapshot()
        snaps = [mine]
        if self.shared is not None:
            self.shared.write(self.worker, orjson.dumps(mine))
            for i in range(self.shared.slots):
                if i != self.worker:
                    raw = self.shared.read(i)
                    if raw:
                        snaps.append(orjson.loads(raw))
        return render(snaps)


def _labels(**labels: Any) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _histogram(out: list[str], name: str, buckets: tuple[float, ...], data: dict[str, list[float]], label: str) -> None:
    for key in sorted(data):
        h = data[key]
        cumulative = 0.0
        for bound, n in zip(buckets, h, strict=False):
            cumulative += n
            out.append(f"{name}_bucket{_labels(**{label: key, 'le': _fmt(bound)})} {_fmt(cumulative)}")
        cumulative += h[len(buckets)]
        out.append(f"{name}_bucket{_labels(**{label: key, 'le': '+Inf'})} {_fmt(cumulative)}")
        out.append(f"{name}_sum{_labels(**{label: key})} {_fmt(h[-1])}")
        out.append(f"{name}_count{_labels(**{label: key})} {_fmt(cumulative)}")


def _merge_hist(target: dict[str, list[float]], source: dict[str, list[float]]) -> None:
    for key, h in source.items():
        t = target.get(key)
        if t is None:
            target[key] = list(h)
        else:
            for i, v in enumerate(h):
                t[i] += v


def _family(out: list[str], name: str, kind: str, help: str) -> None:
    """Append a metric family's ``# HELP`` and ``# TYPE`` lines."""
    out += (f"# HELP {name} {help}", f"# TYPE {name} {kind}")


def _single(out: list[str], name: str, kind: str, help: str, value: int) -> None:
    """Append a metric family with one unlabelled sample."""
    _family(out, name, kind, help)
    out.append(f"{name} {value}")


def _per_worker(out: list[str], name: str, samples: Iterable[tuple[Any, Any]]) -> None:
    """Append a sample of ``name`` per ``(worker, value)``, labelled with the worker, in the order given."""
    out.extend(f"{name}{_labels(worker=worker)} {value}" for worker, value in samples)


def render(snapshots: list[dict[str, Any]]) -> bytes:
    counts: dict[tuple[str, str, int], int] = {}
    hist: dict[str, list[float]] = {}
    batch_hist: dict[str, list[float]] = {}
    in_flight = timeouts = queued = rejected = waiting = 0
    for snap in snapshots:
        for r, m, s, n in snap["counts"]:
            counts[(r, m, s)] = counts.get((r, m, s), 0) + n
        _merge_hist(hist, snap["hist"])
        _merge_hist(batch_hist, snap["batch_hist"])
        in_flight += snap["in_flight"]
        timeouts += snap["timeouts"]
        queued += snap.get("queued", 0)
        rejected += snap.get("rejected", 0)
        waiting += snap.get("waiting", 0)

    out: list[str] = []
    _family(
        out,
        "edgepack_requests_total",
        "counter",
        "Requests answered (HTTP, and routes mqtt/iotedge), by route, method, status.",
    )
    for (r, m, s), n in sorted(counts.items()):
        out.append(f"edgepack_requests_total{_labels(route=r, method=m, status=s)} {n}")
    _family(
        out,
        "edgepack_request_duration_seconds",
        "histogram",
        "Time from the end of the request to the response, by route.",
    )
    _histogram(out, "edgepack_request_duration_seconds", LATENCY_BUCKETS, hist, "route")
    _single(out, "edgepack_requests_in_flight", "gauge", "Requests received and not yet answered.", in_flight)
    _single(
        out,
        "edgepack_scoring_timeouts_total",
        "counter",
        "Scoring calls answered 504 because they ran past the timeout.",
        timeouts,
    )
    _single(
        out,
        "edgepack_requests_queued_total",
        "counter",
        "Scoring requests that waited for a slot (max concurrent requests).",
        queued,
    )
    _single(
        out,
        "edgepack_requests_rejected_total",
        "counter",
        "Scoring requests answered 503 after the max queue wait.",
        rejected,
    )
    _single(out, "edgepack_requests_waiting", "gauge", "Scoring requests waiting for a slot now.", waiting)
    if batch_hist:
        _family(out, "edgepack_batch_size", "histogram", "Rows per model call with adaptive batching, by model.")
        _histogram(out, "edgepack_batch_size", BATCH_BUCKETS, batch_hist, "model")
    workers = sorted(snapshots, key=lambda s: s["worker"])
    loaded = [w for w in workers if w["load_seconds"] is not None]
    _family(out, "edgepack_model_load_seconds", "gauge", "Time load() took (init() or model loading), by worker.")
    _per_worker(out, "edgepack_model_load_seconds", [(w["worker"], _fmt(w["load_seconds"])) for w in loaded])
    _family(out, "edgepack_ready", "gauge", "1 when the worker's load() has finished successfully.")
    _per_worker(out, "edgepack_ready", [(w["worker"], int(bool(w["ready"]))) for w in workers])
    _family(out, "edgepack_load_failed", "gauge", "1 when the worker's load() raised.")
    _per_worker(out, "edgepack_load_failed", [(w["worker"], int(bool(w["load_failed"]))) for w in workers])
    _family(
        out, "edgepack_process_start_time_seconds", "gauge", "Start time of the worker process since the Unix epoch."
    )
    _per_worker(out, "edgepack_process_start_time_seconds", [(w["worker"], _fmt(w["started"])) for w in workers])
    return ("\n".join(out) + "\n").encode()


class SharedSlots:
    """Fixed-size slots in an anonymous shared memory map, created before the workers fork.

    Each slot: ``seq`` (u64; odd while being written), ``length`` (u32), then the payload. One writer
    per slot (its worker); readers retry while a write is under way.
    """

    HEADER = struct.Struct("<QI")

    def __init__(self, slots: int, slot_size: int = 1 << 18):
        self.slots = slots
        self.slot_size = slot_size
        self._map = mmap.mmap(-1, slots * slot_size)

    def write(self, slot: int, payload: bytes) -> None:
        base = slot * self.slot_size
        room = self.slot_size - self.HEADER.size
        if len(payload) > room:
            payload = b""  # too large to share: the slot shows nothing rather than a torn document
        seq = self.HEADER.unpack_from(self._map, base)[0]
        self.HEADER.pack_into(self._map, base, seq + 1, 0)
        self._map[base + self.HEADER.size : base + self.HEADER.size + len(payload)] = payload
        self.HEADER.pack_into(self._map, base, seq + 2, len(payload))

    def read(self, slot: int) -> bytes:
        base = slot * self.slot_size
        for _ in range(100):
            seq, length = self.HEADER.unpack_from(self._map, base)
            if seq % 2:
                time.sleep(0.0001)
                continue
            data = self._map[base + self.HEADER.size : base + self.HEADER.size + length]
            if self.HEADER.unpack_from(self._map, base)[0] == seq:
                return data
        return b""
