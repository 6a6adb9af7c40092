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


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's bundled digits scaled to [0, 1] (float32): x_train, x_test, y_train, y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split((x / 16).astype(np.float32), y, test_size=0.3, random_state=0)
    return x_train, x_test, y_train, y_test


def digits_mlp(x_train: np.ndarray, y_train: np.ndarray, hidden: int = 32) -> onnx.ModelProto:
    """An sklearn MLPClassifier trained on digits, as ONNX (skl2onnx, no ZipMap: label and probabilities)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((hidden,), max_iter=200, random_state=0).fit(x_train, y_train)
    return to_onnx(clf, x_train[:1], options={id(clf): {"zipmap": False}}, target_opset=13)


def sin_mlp() -> onnx.ModelProto:
    """Gemm -> Relu -> Gemm -> Sin -> Softmax on 64 inputs: Sin is no accelerator op, so it and what
    follows run on the host."""
    b = Builder(5)
    h = b.node("Relu", [b.node("Gemm", ["x", b.rand(16, 64), b.rand(16)], name="fc1", transB=1)], name="relu1")
    logits = b.node("Gemm", [h, b.rand(10, 16), b.rand(10)], name="fc2", transB=1)
    probs = b.node("Softmax", [b.node("Sin", [logits], name="wave")], name="softmax", axis=1)
    return b.model({"x": [64]}, [probs])
