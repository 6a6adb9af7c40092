"""CPU per request inside the server, without sockets or a load generator: steadier than wrk on a shared VM.

    python3 benchmarks/http_inprocess.py [--requests 5000] [--repeats 7] [--json]
    python3 benchmarks/ab.py --base REV -- http_inprocess.py        # before/after, same machine minute

Starts the scoring service (no-code ONNX app, the reference 64-256-256-10 MLP) on an event loop, opens
one :class:`~edge_module.server.connection.Connection` on a transport that only collects what is
written, and feeds it whole HTTP requests one at a time (``POST /score`` and V2 infer, batch 1, the
same bodies as ``http_scoring.py``); each reply is written before the next request goes in. Reports
CPU microseconds per request (``time.process_time``, best of the repeats) and the implied ceiling in
requests per second for one core. The parsing, routing, limits, decode, ONNX run and encode are all
in; the kernel's socket work and the client are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(folder: Path) -> Path:
    from tests.support.scorers import make_mlp

    path = folder / "azureml-models" / "mlp" / "1" / "mlp.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_mlp())
    return path.parent


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.replies = 0
        self.last = b""

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.replies += data.count(b"HTTP/1.1 ")
        self.last = data

    def writelines(self, chunks) -> None:  # type: ignore[no-untyped-def, override]
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default=None):  # type: ignore[no-untyped-def]
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def measure(requests: int, repeats: int) -> dict[str, float]:
    import numpy as np

    from edge_module.scoring import OnnxScoringApp
    from edge_module.server.connection import Connection
    from edge_module.server.lifecycle import new_event_loop
    from edge_module.server.metrics import Metrics
    from edge_module.server.service import Service
    from edge_module.settings import Settings

    x = np.random.default_rng(0).random((1, 64)).astype(np.float32).ravel().tolist()
    bodies = {
        "/score": json.dumps({"data": [x]}).encode(),
        "v2 infer": json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x}]}
        ).encode(),
    }
    paths = {"/score": "/score", "v2 infer": "/v2/models/mlp/infer"}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        ready = asyncio.Event()
        app = OnnxScoringApp(_model(Path(tmp)), intra_op_threads=1, inter_op_threads=1)
        service = Service(app, Settings(port=0), loop, Metrics(), lambda s, i: ready.set())
        service.start_loading()
        loop.run_until_complete(asyncio.wait_for(ready.wait(), 60))
        assert service.ready, "the model did not load"
        for case, body in bodies.items():
            raw = _request(paths[case], body)
            best = float("inf")
            for _ in range(repeats):
                conn = Connection(service)
                transport = _Transport()
                conn.connection_made(transport)

                async def run(conn: Connection = conn, transport: _Transport = transport, raw: bytes = raw) -> float:
                    t0 = time.process_time()
                    for i in range(requests):
                        conn.data_received(raw)
                        while transport.replies <= i:  # a reply finished off the loop's next turn
                            await asyncio.sleep(0)
                    return time.process_time() - t0

                seconds = loop.run_until_complete(run())
                assert b" 200 " in transport.last.split(b"\r\n", 1)[0], transport.last[:200]
                conn.connection_lost(None)
                best = min(best, seconds)
            out[case] = best / requests * 1e6
        service.close()
        loop.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    per_request = measure(args.requests, args.repeats)
    rows = [{"route": case, "us_per_request": round(us, 2), "rps": round(1e6 / us)} for case, us in per_request.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        print(f"{row['route']:10} {row['us_per_request']:8.2f} µs CPU per request  (one core: {row['rps']:,} req/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
