"""FP32 vs INT8 on a 64-512-512-10 MLP trained on scikit-learn's digits: size, accuracy, latency.

    python benchmarks/quantize.py [--json] [--repeats N] [--threads T] [--epochs E]

The three variants ``edgepack quantize`` makes (QDQ per-tensor, QDQ per-channel, dynamic) go
through ``packager.quantize.quantize_model`` on a temporary workspace, calibrated on 256 training
rows. For comparison, made directly with onnxruntime: the QOperator format, QDQ without
``quant_pre_process``, and QDQ/FP32 under lower session graph-optimisation levels.

Latency: best of N ``run`` calls, ``intra_op_num_threads`` fixed, the same feeds (test rows) for
every variant; the variants take turns within each round, so load on a shared machine hits all alike.
Issue targets: INT8 file <= 30 % of FP32, accuracy drop <= 1 point, batch-64 latency >= 1.5x faster.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from packager import Model, Workspace  # noqa: E402
from packager.quantize import quantize_model  # noqa: E402
from packager.quantize.measure import best_latency, session  # noqa: E402

TARGET_SIZE, TARGET_DROP, TARGET_SPEEDUP = 0.30, 0.01, 1.5


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def train_mlp(x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        clf = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=epochs, random_state=0).fit(x, y)
    return clf.coefs_, clf.intercepts_


def mlp_onnx(weights: list[np.ndarray], biases: list[np.ndarray], path: Path) -> Path:
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"b{i}"))
        out = "logits" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [out if last else f"{out}_pre"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"{out}_pre"], [out]))
        prev = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, weights[0].shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


@dataclass
class Variant:
    name: str
    path: Path
    optimization: str = "all"
    note: str = ""
    size: int = 0
    accuracy: float = 0.0
    latency_ms: dict[int, float] = field(default_factory=dict)


class _Reader:
    def __init__(self, x: np.ndarray, batch: int = 32):
        self.batches = [{"input": x[i : i + batch]} for i in range(0, len(x), batch)]

    def get_next(self) -> dict | None:
        return self.batches.pop(0) if self.batches else None


def comparison_variants(fp32: Path, x_cal: np.ndarray, work: Path) -> list[Variant]:
    """Made directly with onnxruntime, outside what ``edgepack quantize`` offers."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    opts = {
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "extra_options": {"WeightSymmetric": True},
    }
    quantize_static(str(pre), str(work / "qop.onnx"), _Reader(x_cal), quant_format=QuantFormat.QOperator, **opts)
    quantize_static(
        str(pre),
        str(work / "qop-u8.onnx"),
        _Reader(x_cal),
        quant_format=QuantFormat.QOperator,
        **{**opts, "activation_type": QuantType.QUInt8},
    )
    quantize_static(str(fp32), str(work / "qdq-nopre.onnx"), _Reader(x_cal), quant_format=QuantFormat.QDQ, **opts)
    quantize_static(
        str(pre),
        str(work / "qdq-u8.onnx"),
        _Reader(x_cal),
        quant_format=QuantFormat.QDQ,
        **{**opts, "activation_type": QuantType.QUInt8},
    )
    return [
        Variant("QOperator S8S8", work / "qop.onnx", note="QLinearMatMul etc. (onnxruntime warns S8S8 is slow on x64)"),
        Variant("QOperator U8S8", work / "qop-u8.onnx", note="uint8 activations"),
        Variant("QDQ U8S8", work / "qdq-u8.onnx", note="uint8 activations"),
        Variant("QDQ no pre-process", work / "qdq-nopre.onnx", note="without quant_pre_process"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--repeats", type=int, default=300, help="latency: best of N runs (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="intra_op_num_threads (default 1)")
    parser.add_argument("--epochs", type=int, default=40, help="MLPClassifier max_iter (default 40)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # onnxruntime.quantization's advice; the notes column says what matters

    x_tr, x_te, y_tr, y_te = digits()
    x_cal = x_tr[:256]
    t0 = time.perf_counter()
    weights, biases = train_mlp(x_tr, y_tr, args.epochs)
    train_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="edgepack-bench-quantize-") as tmp:
        work = Path(tmp)
        fp32_path = mlp_onnx(weights, biases, work / "mlp.onnx")
        ws = Workspace.from_path(work / "ws")
        Model.register(ws, fp32_path, "mlp", sample_input=x_cal)
        variants = [Variant("FP32", fp32_path)]
        quant_s = {}
        for label, kwargs in (
            ("QDQ per-tensor", {"format": "qdq"}),
            ("QDQ per-channel", {"format": "qdq", "per_channel": True}),
            ("dynamic", {"format": "dynamic"}),
        ):
            t0 = time.perf_counter()
            result = quantize_model(ws, "mlp", output_name="mlp-int8", repeats=0, **kwargs)
            quant_s[label] = time.perf_counter() - t0
            path = Path(Model.get_model_path(result.model.name, result.model.version, _workspace=ws))
            variants.append(Variant(label, path, note="edgepack quantize"))
        variants += comparison_variants(fp32_path, x_cal, work)
        # Graph optimisation level: QDQ relies on onnxruntime fusing Q/DQ pairs into int8 kernels.
        qdq_path = variants[1].path
        for level in ("extended", "basic", "disable"):
            variants.append(Variant(f"FP32 opt={level}", fp32_path, level, "session graph optimisation level"))
            variants.append(Variant(f"QDQ per-tensor opt={level}", qdq_path, level, "session graph optimisation level"))

        sessions = [session(v.path, args.threads, v.optimization) for v in variants]
        for v, s in zip(variants, sessions, strict=True):
            v.size = v.path.stat().st_size
            v.accuracy = float(np.mean(s.run(None, {"input": x_te})[0].argmax(1) == y_te))
        for batch in (1, 64):
            feeds = {"input": x_te[:batch]}
            for v, ms in zip(variants, best_latency(sessions, feeds, repeats=args.repeats, budget_s=1e9), strict=True):
                v.latency_ms[batch] = ms

    base = variants[0]
    rows = []
    for v in variants:
        ref = (
            next((b for b in variants if b.name == f"FP32 opt={v.optimization}"), base)
            if v.optimization != "all"
            else base
        )
        row = {
            "variant": v.name,
            "optimization": v.optimization,
            "note": v.note,
            "size_bytes": v.size,
            "size_ratio": v.size / base.size,
            "accuracy": v.accuracy,
            "accuracy_drop_points": 100 * (base.accuracy - v.accuracy),
            "latency_b1_ms": v.latency_ms[1],
            "latency_b64_ms": v.latency_ms[64],
            "speedup_b1": ref.latency_ms[1] / v.latency_ms[1],
            "speedup_b64": ref.latency_ms[64] / v.latency_ms[64],
            "speedup_vs": ref.name,
        }
        if v is not base and not v.name.startswith("FP32"):
            row["meets_targets"] = {
                "size<=30%": row["size_ratio"] <= TARGET_SIZE,
                "drop<=1pt": row["accuracy_drop_points"] <= 100 * TARGET_DROP,
                "b64>=1.5x": row["speedup_b64"] >= TARGET_SPEEDUP,
            }
        rows.append(row)
    env = {
        "cpu": _cpu(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "epochs": args.epochs,
        "train_seconds": round(train_s, 2),
        "quantize_seconds": {k: round(v, 2) for k, v in quant_s.items()},
        "test_rows": len(y_te),
        "calibration_rows": len(x_cal),
        "parameters": int(sum(w.size + b.size for w, b in zip(weights, biases, strict=True))),
    }
    if args.json:
        print(json.dumps({"environment": env, "results": rows}, indent=2))
    else:
        _print(env, rows)
    return 0


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


def _print(env: dict, rows: list[dict]) -> None:
    print(
        f"MLP 64-512-512-10 ({env['parameters']:,} parameters) on digits: {env['test_rows']} test rows, "
        f"calibration {env['calibration_rows']} training rows"
    )
    print(
        f"CPU {env['cpu']}; onnxruntime {env['onnxruntime']}; intra_op_num_threads={env['threads']}; "
        f"latency = best of {env['repeats']}"
    )
    head = (
        f"{'variant':<28} {'size':>9} {'ratio':>6} {'acc %':>6} {'drop pt':>7} "
        f"{'b1 ms':>7} {'b1 x':>5} {'b64 ms':>7} {'b64 x':>6}  targets (size/drop/b64)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        targets = ""
        if "meets_targets" in r:
            targets = " ".join("ok" if ok else "MISS" for ok in r["meets_targets"].values())
        print(
            f"{r['variant']:<28} {r['size_bytes'] / 1000:>7.1f}kB {100 * r['size_ratio']:>5.1f}% "
            f"{100 * r['accuracy']:>6.2f} {r['accuracy_drop_points']:>7.2f} {r['latency_b1_ms']:>7.4f} "
            f"{r['speedup_b1']:>5.2f} {r['latency_b64_ms']:>7.4f} {r['speedup_b64']:>6.2f}  {targets}"
        )
    print("Speedups are against FP32 at the same graph optimisation level (default: all).")


if __name__ == "__main__":
    raise SystemExit(main())
