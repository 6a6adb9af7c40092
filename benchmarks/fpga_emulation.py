"""Emulation throughput per number format against onnxruntime float, on the same digits models, in one run.

    python benchmarks/fpga_emulation.py [--json] [--repeats N] [--batch 64]

Trains a small CNN and an MLP on sklearn's digits with torch (about 5 s), exports them to ONNX, compiles
each with ``fpga.compile_onnx`` (calibrated on the training set) and measures samples/s at the batch
size: the whole compiled model (emulated accelerator part + host part in onnxruntime) against the float
model in onnxruntime (one thread, as an emulating scoring module gets). Reports the slowdown factor
(goal in issue 15: msfp/int8 within 5x of float onnxruntime) and the test accuracy of each. A third,
untrained CIFAR-sized CNN on random inputs ("wide"; accuracy = agreement with float) shows the ratio
once arithmetic, not per-layer Python overhead, dominates: the digits models take onnxruntime only
10-70 us per batch of 64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ["float", "fixed<16,6>", "fixed<8,3>", "int8", "msfp16", "msfp12"]


def samples_per_second(fn: Callable[[np.ndarray], object], x: np.ndarray, batch: int, repeats: int) -> float:
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)]
    fn(batches[0])  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in batches:
            fn(chunk)
        best = min(best, time.perf_counter() - start)
    return len(batches) * batch / best


def wide_cnn(path: Path) -> None:
    """An untrained CIFAR-sized CNN (3x32x32, 32 and 64 channels): throughput only."""
    import torch

    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
        nn.Softmax(1),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.zeros(1, 3, 32, 32),
            str(path),
            opset_version=13,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )


def train(kind: str, x: np.ndarray, y: np.ndarray, path: Path) -> None:
    import torch

    nn = torch.nn
    torch.manual_seed(0)
    if kind == "cnn":
        net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 10),
        )
    else:
        net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(15 if kind == "cnn" else 40):
        for i in range(0, len(xt), 64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(xt[i : i + 64]), yt[i : i + 64]).backward()
            optimizer.step()
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            nn.Sequential(net, nn.Softmax(1)),
            xt[:1],
            str(path),
            opset_version=13,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    import onnxruntime as ort
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from fpga import compile_onnx

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split((x / 16).astype(np.float32), y, test_size=0.3, random_state=0)
    results = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, shape in (("cnn", (-1, 1, 8, 8)), ("mlp", (-1, 64)), ("wide", (-1, 3, 32, 32))):
            path = Path(tmp) / f"{kind}.onnx"
            if kind == "wide":
                wide_cnn(path)
                xtr, xte = (rng.random((n, 3, 32, 32), np.float32) for n in (128, 640))
            else:
                train(kind, x_train.reshape(shape), y_train, path)
                xtr, xte = x_train.reshape(shape), x_test.reshape(shape)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            float_rate = samples_per_second(lambda b, s=session: s.run(None, {"x": b}), xte, args.batch, args.repeats)
            labels = session.run(None, {"x": xte})[0].argmax(1) if kind == "wide" else y_test
            float_acc = float((session.run(None, {"x": xte})[0].argmax(1) == labels).mean())
            results.append(
                {
                    "model": kind,
                    "format": "onnxruntime float",
                    "samples_per_s": float_rate,
                    "slowdown": 1.0,
                    "accuracy": float_acc,
                }
            )
            for fmt in FORMATS:
                compiled = compile_onnx(path, fmt, calibration=xtr)
                rate = samples_per_second(compiled.predict, xte, args.batch, args.repeats)
                acc = float((compiled.predict(xte).argmax(1) == labels).mean())
                results.append(
                    {
                        "model": kind,
                        "format": fmt,
                        "samples_per_s": rate,
                        "slowdown": float_rate / rate,
                        "accuracy": acc,
                    }
                )
    if args.json:
        print(
            json.dumps(
                {"machine": platform.processor() or platform.machine(), "batch": args.batch, "results": results},
                indent=1,
            )
        )
        return 0
    print(f"batch {args.batch}, best of {args.repeats}, one thread ({platform.machine()})")
    print(f"{'model':5} {'format':18} {'samples/s':>11} {'slowdown':>9} {'accuracy':>9}")
    for r in results:
        print(f"{r['model']:5} {r['format']:18} {r['samples_per_s']:11.0f} {r['slowdown']:8.1f}x {r['accuracy']:9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
