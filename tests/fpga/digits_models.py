"""Small digits models for the FPGA tests: an sklearn MLP written as ONNX by hand (no torch), and torch
MLP/CNN exports (slow tests only). Trained in the test process, cached per session. The torch digits
CNN/MLP trainer (:func:`train_torch_digits`) also serves benchmarks/fpga_emulation.py."""

from __future__ import annotations

import functools
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), pixels scaled to [0, 1] as float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split((x / 16).astype(np.float32), y, test_size=0.3, random_state=0)
    return x_tr, y_tr, x_te, y_te


def _mlp_graph(weights: list[np.ndarray], biases: list[np.ndarray], softmax: bool) -> onnx.ModelProto:
    nodes, inits, prev = [], [], "x"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"dense{i}"], name=f"dense{i}"))
        prev = f"dense{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [prev], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
    if softmax:
        nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], name="softmax", axis=1))
        prev = "probabilities"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@functools.cache
def _sklearn_mlp() -> tuple:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_tr, y_tr, _, _ = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x_tr, y_tr)
    return tuple(clf.coefs_), tuple(clf.intercepts_)


def sklearn_mlp_onnx(softmax: bool = True) -> onnx.ModelProto:
    """64 -> 32 ReLU -> 10 (-> softmax), nodes dense0, relu0, dense1, softmax; input ``x`` [N, 64]."""
    weights, biases = _sklearn_mlp()
    return _mlp_graph(list(weights), list(biases), softmax)


def _train_torch(net: object, x: np.ndarray, y: np.ndarray, epochs: int = 200) -> object:
    import torch

    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return net.eval()


def _export_torch(net: object, example: np.ndarray) -> onnx.ModelProto:
    import io

    import torch

    buffer = io.BytesIO()
    model = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    torch.onnx.export(
        model,
        torch.tensor(example),
        buffer,
        input_names=["x"],
        output_names=["probabilities"],
        dynamic_axes={"x": {0: "N"}, "probabilities": {0: "N"}},
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


@functools.cache
def torch_mlp_onnx() -> onnx.ModelProto:
    """torch.onnx.export of Linear(64,32) -> ReLU -> Linear(32,10) -> Softmax."""
    import torch.nn as nn

    x_tr, y_tr, x_te, _ = digits()
    torch_net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return _export_torch(_train_torch(torch_net, x_tr, y_tr), x_te[:1])


@functools.cache
def torch_cnn_onnx() -> onnx.ModelProto:
    """8x8x1 NCHW: Conv 3x3 (8) -> ReLU -> MaxPool 2 -> Flatten -> Linear(72, 10) -> Softmax."""
    import torch.nn as nn

    x_tr, y_tr, x_te, _ = digits()
    torch_net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(72, 10))
    return _export_torch(_train_torch(torch_net, x_tr.reshape(-1, 1, 8, 8), y_tr), x_te[:1].reshape(1, 1, 8, 8))


def _digits_net(kind: str, mlp_widths: tuple[int, ...]) -> Any:
    """The digits CNN (input N x 1 x 8 x 8) or an MLP of ``mlp_widths`` (ReLU between), no softmax."""
    import torch.nn as nn

    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )
    layers = [layer for n_in, n_out in pairwise(mlp_widths) for layer in (nn.Linear(n_in, n_out), nn.ReLU())]
    return nn.Sequential(*layers[:-1])


def _fit_in_batches(net: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch: int = 64) -> None:
    """Adam (lr 0.01) on cross entropy over the batches of ``x`` in order, ``epochs`` times; then eval mode."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        for i in range(0, len(xt), batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[i : i + batch]), yt[i : i + batch]).backward()
            optimizer.step()
    net.eval()


def torch_to_onnx(net: Any, example: np.ndarray, path: Path) -> None:
    """Export ``net`` to ``path`` at opset 13: input ``x``, output ``y``, both with a dynamic batch axis ``n``."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.tensor(example),
            str(path),
            opset_version=13,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )


def train_torch_digits(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    path: Path,
    mlp_widths: tuple[int, ...] = (64, 32, 10),
    softmax: bool = True,
) -> None:
    """Train the digits ``cnn`` (15 epochs) or ``mlp`` (40) with torch from seed 0, in batches of 64, and
    export it to ``path`` (:func:`torch_to_onnx`), with a softmax after the logits if ``softmax``."""
    import torch

    torch.manual_seed(0)
    net = _digits_net(kind, mlp_widths)
    _fit_in_batches(net, x, y, epochs=15 if kind == "cnn" else 40)
    torch_to_onnx(torch.nn.Sequential(net, torch.nn.Softmax(1)) if softmax else net, x[:1], path)


def run_float(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]
