"""KServe's own Python client (InferenceRESTClient, V2 protocol) against edgepack's server.

The KServe SDK pins packages that clash with ours (protobuf, pandas, kubernetes), so it runs from
its own virtualenv (tests/peer_venv.py) as a separate process talking HTTP to the server here.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_module.scoring import OnnxScoringApp
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings
from tests.peer_venv import peer_venv
from tests.support.scorers import OnnxRuntime

KSERVE = ["kserve==0.21.0"]

CLIENT = r"""
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

url, binary = sys.argv[1], sys.argv[2] == "binary"
x = np.array(json.loads(sys.stdin.read()), dtype=np.float32)

async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=10))
    out = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, "mlp"),
    }
    inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    req = InferRequest(model_name="mlp", infer_inputs=[inp], request_id="req-7")
    res = await client.infer(url, req, model_name="mlp")
    out["id"] = res.id
    out["model_name"] = res.model_name
    out["outputs"] = {o.name: o.as_numpy().tolist() for o in res.outputs}
    try:
        await client.infer(url, InferRequest(model_name="nope", infer_inputs=[inp]), model_name="nope")
        out["unknown_model"] = "no error"
    except Exception as exc:
        out["unknown_model"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    return peer_venv("kserve", KSERVE)


@pytest.fixture(scope="module")
def server(mlp_path: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(OnnxScoringApp(mlp_path.parent, intra_op_threads=1), Settings(port=0)) as srv:
        assert srv.wait_ready()
        yield srv


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_kserve_rest_client_health_and_infer(
    kserve_python: Path, server: BackgroundServer, mlp_path: Path, encoding: str
):
    x = np.random.default_rng(5).random((3, 64)).astype(np.float32)
    run = subprocess.run(
        [str(kserve_python), "-c", CLIENT, server.url, encoding],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["live"] is True and out["ready"] is True and out["model_ready"] is True
    assert out["id"] == "req-7" and out["model_name"] == "mlp"
    ref = OnnxRuntime(mlp_path)
    ref.load()
    expected = ref.predict({"input": x})["output"]
    np.testing.assert_allclose(np.array(out["outputs"]["output"]), expected, rtol=1e-5, atol=1e-6)
    assert "404" in out["unknown_model"] or "not found" in out["unknown_model"].lower(), out["unknown_model"]
