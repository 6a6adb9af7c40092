"""A v1-style app for the Local target tests: an ONNX MLP, a score.py with inference-schema, inferenceconfig.json."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from packager import Workspace
from packager.registry import Model
from tests.support.scorers import make_mlp

SCORE_PY = """
import numpy as np
import onnxruntime as ort
from azureml.core.model import Model
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

TAG = "v1"


def init():
    global session
    {init_extra}
    session = ort.InferenceSession(Model.get_model_path("mlp"), providers=["CPUExecutionProvider"])


@input_schema("data", NumpyParameterType(np.zeros((1, 64), dtype=np.float32)))
@output_schema(NumpyParameterType(np.zeros((1, 10), dtype=np.float32)))
def run(data):
    return {{"tag": TAG, "output": session.run(None, {{"input": data.astype(np.float32)}})[0].tolist()}}
"""

CONDA = """
name: project_environment
dependencies:
  - python=3.11
  - pip:
    - azureml-defaults
    - inference-schema[numpy-support]
"""

SAMPLE = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)


def write_app(root: Path, init_extra: str = "pass", tag: str = "v1") -> Path:
    """``root/app/score.py``, ``root/app/env.yml`` and ``root/inferenceconfig.json`` (v1's keys); returns the last."""
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "score.py").write_text(SCORE_PY.format(init_extra=init_extra).replace('TAG = "v1"', f"TAG = {tag!r}"))
    (app / "env.yml").write_text(textwrap.dedent(CONDA))
    ic = root / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "app", "condaFile": "env.yml"}))
    return ic


def register(ws: Workspace, tmp: Path, seed: int) -> Model:
    """Register the MLP (weights from ``seed``) as a new version of ``mlp``."""
    path = tmp / f"mlp-{seed}" / "mlp.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_mlp(seed=seed))
    return Model.register(ws, model_path=str(path), model_name="mlp")


def expected(model: Model, data: np.ndarray = SAMPLE) -> np.ndarray:
    """The model's own answer, from onnxruntime in this process."""
    import onnxruntime as ort

    path = model.download(Path(model.workspace.path) / "expect" / str(model.version), exist_ok=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": data})[0]


def body(data: np.ndarray = SAMPLE) -> str:
    return json.dumps({"data": data.tolist()})
