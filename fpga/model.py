"""``compile_onnx``: partition, calibrate and compile an ONNX model; ``CompiledModel`` runs the emulated
accelerator part then the host part in onnxruntime (through the serving runtime's
:class:`~edge_module.scoring.fpga_runtime.FpgaPipeline`: one implementation), and saves/loads itself as
the package folder that runtime serves."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edge_module.numerics.emulate import Program
from edge_module.runtime import NUMPY_TO_V2
from edge_module.scoring.fpga_runtime import ACCEL_ONNX, HOST_ONNX, MANIFEST, FpgaPipeline, read_manifest

from .calibrate import collect_ranges, describe, plan_formats
from .compiled import build_program, float_plan
from .formats import NumberFormat, get_format
from .graph import load_graph
from .partition import partition

__all__ = ["ACCEL_ONNX", "HOST_ONNX", "MANIFEST", "CompiledModel", "compile_onnx", "signature"]


def signature(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """The model's inputs and outputs as V2 tensor specs (``{"name", "datatype", "shape"}``, -1 for a
    free dimension), from its (shape-inferred) value infos: what the serving runtime checks requests with."""

    def spec(info: onnx.ValueInfoProto) -> dict:
        tensor = info.type.tensor_type
        try:
            datatype = NUMPY_TO_V2.get(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), "BYTES")
        except (KeyError, TypeError, ValueError):
            datatype = "BYTES"
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return {"name": info.name, "datatype": datatype, "shape": shape}

    constants = {init.name for init in model.graph.initializer}
    return {
        "inputs": [spec(i) for i in model.graph.input if i.name not in constants],
        "outputs": [spec(o) for o in model.graph.output],
    }


class CompiledModel:
    """An accelerator program (emulated) plus an optional host ONNX part, and the compile report."""

    def __init__(
        self,
        program: Program,
        host: onnx.ModelProto | bytes | None,
        report: dict,
        inputs: list[str],
        outputs: list[str],
        accelerator: onnx.ModelProto | bytes | None = None,
        signature: Mapping[str, list] | None = None,
    ) -> None:
        self.program = program
        self.host_bytes = host.SerializeToString() if isinstance(host, onnx.ModelProto) else host
        self.accelerator_bytes = (
            accelerator.SerializeToString() if isinstance(accelerator, onnx.ModelProto) else accelerator
        )
        self.report = report
        self.inputs, self.outputs = inputs, outputs
        self.signature = dict(signature) if signature else None
        self.pipeline = FpgaPipeline(program, self.host_bytes, inputs, outputs)

    def run(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Every model output: the accelerator part emulated, then the host part in onnxruntime."""
        return self.pipeline.run(feeds)

    def predict(self, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """The first model output."""
        return self.run(x)[self.outputs[0]]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.program.save(directory)
        if self.host_bytes is not None:
            (directory / HOST_ONNX).write_bytes(self.host_bytes)
        if self.accelerator_bytes is not None:
            (directory / ACCEL_ONNX).write_bytes(self.accelerator_bytes)
        manifest = {
            "inputs": self.inputs,
            "outputs": self.outputs,
            "host": HOST_ONNX if self.host_bytes else None,
            "signature": self.signature,
            "report": self.report,
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CompiledModel:
        directory = Path(directory)
        manifest = read_manifest(directory)
        host = (directory / manifest["host"]).read_bytes() if manifest.get("host") else None
        accel = directory / ACCEL_ONNX
        return cls(
            Program.load(directory),
            host,
            manifest["report"],
            manifest["inputs"],
            manifest["outputs"],
            accel.read_bytes() if accel.exists() else None,
            manifest.get("signature"),
        )


def compile_onnx(
    model: str | Path | onnx.ModelProto,
    format: str | NumberFormat = "fixed<16,6>",
    calibration: np.ndarray | Mapping[str, np.ndarray] | None = None,
    overrides: Mapping[str, object] | None = None,
    headroom: int = 0,
) -> CompiledModel:
    """Partition ``model``, choose per-layer formats (from ``calibration`` samples when given; see
    ``fpga.calibrate``), quantize the weights and return the compiled model.

    ``format``: ``fixed<W,I>`` (``W`` used per layer, ``I`` chosen from the ranges when calibrated),
    ``int8`` (needs calibration), ``msfp12``, ``msfp16``, ``bfp<k=..,m=..,e=..>``, or ``float``."""
    graph = load_graph(model)
    part = partition(graph)
    if not part.accelerator:
        reasons = "; ".join(f"{op.name} ({op.op}): {op.reason}" for op in part.host[:3])
        raise ValueError(f"no op of this model can run on the accelerator: {reasons}")
    reference = build_program(part, float_plan(part))
    ranges = None if calibration is None else collect_ranges(reference, calibration)
    if isinstance(format, str) and format.strip().lower() == "float":
        plan, fmt_name = float_plan(part), "float"
    else:
        fmt = get_format(format)
        plan, fmt_name = plan_formats(part, fmt, ranges, overrides, headroom), str(fmt)
    program = build_program(part, plan)
    report = part.report()
    report["format"] = fmt_name
    report["calibrated"] = calibration is not None
    report["tensors"] = {name: describe(f) for name, f in program.tensors.items()}
    report["layers"] = [
        {
            "name": lay["name"],
            "op": lay["op"],
            "scheme": lay["scheme"],
            "result": describe(program.tensors[lay["output"]]),
            **{key: describe(lay.get(key)) for key in ("weight", "bias", "accum", "bfp") if lay.get(key)},
        }
        for lay in program.spec["layers"]
    ]
    if ranges is not None:
        report["ranges"] = {name: [r.lo, r.hi] for name, r in ranges.items()}
    return CompiledModel(
        program,
        part.host_model(),
        report,
        list(graph.inputs),
        list(graph.outputs),
        part.accelerator_model(),
        signature(graph.model),
    )
