"""Small ONNX models built by hand for the graph tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    """Nodes and random initializers; ``model()`` makes a checked opset-13 model with a dynamic batch."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def rand(self, *shape: int, scale: float = 0.3) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs: object) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or f"{op.lower()}{self.count}", **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, **attrs: object) -> str:
        return self.node("Conv", [x, self.rand(c_out, c_in, k, k), self.rand(c_out)], **attrs)

    def batchnorm(self, x: str, channels: int) -> str:
        gamma = self.const(self.rng.uniform(0.5, 1.5, channels).astype(np.float32))
        beta = self.rand(channels)
        mean = self.rand(channels)
        var = self.const(self.rng.uniform(0.2, 2.0, channels).astype(np.float32))
        return self.node("BatchNormalization", [x, gamma, beta, mean, var], epsilon=1e-3)

    def model(self, inputs: dict[str, list[int]], outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", *shape]) for name, shape in inputs.items()],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model).graph
        known = {v.name: v for v in (*inferred.value_info, *inferred.output)}
        for output in model.graph.output:  # the outputs' inferred types (the checker wants a shape)
            output.CopyFrom(known[output.name])
        onnx.checker.check_model(model)
        return model


def run_onnx(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
