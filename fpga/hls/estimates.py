"""Resource and latency ESTIMATES for an hls4ml project: a simple documented model, not synthesis.

No synthesis tools exist here, and hls4ml 1.3 has no pre-synthesis resource or latency model of its own
for the Vivado/Vitis backends (``hls4ml.report`` only parses reports that Vivado/Vitis HLS wrote), so
every number below comes from this model and is labelled ``kind: "estimate"``:

- multipliers per layer = multiplications per output ÷ reuse factor (Dense: n_in·n_out; Conv:
  k_h·k_w·c_in·c_out), rounded up; one DSP per multiplier when both operands fit a DSP48E2 (27×18
  bits), more otherwise (narrow products often go to LUTs instead, so DSPs are an upper bound);
- weight memory = weights·weight width + biases·bias width bits, and BRAM18 blocks = bits ÷ 18 432 when
  held in BRAM (hls4ml's Latency strategy at reuse 1 keeps them in registers instead);
- latency: Dense II = R, latency = R + ⌈log2 n_in⌉ (adder tree) + 1; Conv io_parallel computes output
  positions one after another (ParallelizationFactor 1): II = positions·R, io_stream one input pixel per
  R cycles; activations 1 cycle; pooling ⌈log2 pool⌉ + 1 (io_stream: one per input pixel); softmax
  ⌈log2 n⌉ + 4 (table lookups, sum, inverse); reshapes 0. Layers add up; the design's II is the largest.
"""

from __future__ import annotations

import math

import numpy as np

from .precision import width_of

KIND = "estimate"
BRAM18_BITS = 18 * 1024
DSP_A, DSP_B = 27, 18
MODEL = "simple analytic model (no synthesis): multipliers = multiplications / reuse factor, adder-tree latency"


def _dsps_per_multiplier(a: int, b: int) -> int:
    hi, lo = max(a, b), min(a, b)
    return math.ceil(hi / DSP_A) * math.ceil(lo / DSP_B)


def _shape(model: object, name: str) -> list[int]:
    shape = model.get_tensor_shape(name)
    return [int(d) for d in shape] if shape else []


def estimate(
    model: object,
    precisions: dict[str, dict[str, str]] | None = None,
    reuse_factor: int = 1,
    io_type: str = "io_parallel",
    clock_period: float = 5.0,
    default_width: int = 16,
) -> dict:
    """Estimates per layer and in total for a prepared (channels-last, MatMul) qonnx ``ModelWrapper``."""
    precisions = precisions or {}
    r = int(reuse_factor)
    producer = {n.output[0]: n.name for n in model.graph.node}
    layers = []
    kinds = {n.name: n.op_type for n in model.graph.node}
    for node in model.graph.node:
        after_matmul = kinds.get(producer.get(node.input[0], "")) == "MatMul"
        if node.op_type == "Add" and after_matmul and any(model.get_initializer(t) is not None for t in node.input):
            continue  # a bias: hls4ml fuses it into the Dense
        spec = precisions.get(node.name, {})
        w_bits = width_of(spec.get("weight", "")) or default_width
        b_bits = width_of(spec.get("bias", "")) or default_width
        src = precisions.get(producer.get(node.input[0], model.graph.input[0].name), {})
        in_bits = width_of(src.get("result", "")) or default_width
        out_shape = _shape(model, node.output[0])
        in_shape = _shape(model, node.input[0])
        row = {"name": node.name, "op": node.op_type, "multiplications": 0, "multipliers": 0, "dsp": 0}
        row.update({"weight_bits": 0, "bram18": 0, "latency_cycles": 0, "ii_cycles": 1})
        init = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "MatMul" and init is not None:
            n_in, n_out = int(init.shape[0]), int(init.shape[-1])
            row["multiplications"] = n_in * n_out
            n_bias = n_out
            row["latency_cycles"] = r + math.ceil(math.log2(max(n_in, 2))) + 1
            row["ii_cycles"] = r
        elif node.op_type == "Conv" and init is not None:
            c_out, k = int(init.shape[0]), int(np.prod(init.shape[1:]))  # channels-last: [c_out, kh, kw, c_in]
            row["multiplications"] = k * c_out
            n_bias = c_out
            positions = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
            pixels = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
            steps = positions if io_type == "io_parallel" else pixels
            row["ii_cycles"] = steps * r
            row["latency_cycles"] = steps * r + math.ceil(math.log2(max(k, 2))) + 1
        else:
            n_bias = 0
            if node.op_type in ("MaxPool", "AveragePool"):
                kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [2, 2])
                pixels = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
                row["latency_cycles"] = (
                    pixels if io_type == "io_stream" else math.ceil(math.log2(max(int(np.prod(kernel)), 2))) + 1
                )
            elif node.op_type == "Softmax":
                row["latency_cycles"] = math.ceil(math.log2(max(out_shape[-1] if out_shape else 2, 2))) + 4
            elif node.op_type in ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Add", "Mul"):
                row["latency_cycles"] = 1
        if row["multiplications"]:
            row["multipliers"] = math.ceil(row["multiplications"] / r)
            row["dsp"] = row["multipliers"] * _dsps_per_multiplier(w_bits, in_bits)
            row["weight_bits"] = row["multiplications"] * w_bits + n_bias * b_bits
            row["bram18"] = math.ceil(row["weight_bits"] / BRAM18_BITS)
        layers.append(row)
    cycles = sum(row["latency_cycles"] for row in layers)
    total = {
        "multipliers": sum(row["multipliers"] for row in layers),
        "dsp": sum(row["dsp"] for row in layers),
        "weight_bits": sum(row["weight_bits"] for row in layers),
        "bram18": sum(row["bram18"] for row in layers),
        "latency_cycles": cycles,
        "latency_ns": cycles * float(clock_period),
        "ii_cycles": max((row["ii_cycles"] for row in layers), default=1),
    }
    return {
        "kind": KIND,
        "model": MODEL,
        "reuse_factor": r,
        "io_type": io_type,
        "clock_period_ns": float(clock_period),
        "weights_in": "registers" if r == 1 and io_type == "io_parallel" else "BRAM",
        "layers": layers,
        "total": total,
    }


def format_estimates(est: dict) -> str:
    """A text table that says ESTIMATE on every line that carries a number."""
    t = est["total"]
    lines = [
        f"ESTIMATES ({est['model']}; not synthesis results), reuse factor {est['reuse_factor']}, {est['io_type']}:",
    ]
    for row in est["layers"]:
        if row["multiplications"] or row["latency_cycles"]:
            lines.append(
                f"  {row['name']:<12} {row['op']:<9} est. {row['multipliers']} multipliers, {row['dsp']} DSPs, "
                f"{row['weight_bits']} weight bits ({row['bram18']} BRAM18 if in BRAM), "
                f"{row['latency_cycles']} cycles"
            )
    lines.append(
        f"  total (estimate): {t['dsp']} DSPs, {t['weight_bits']} weight bits (~{t['bram18']} BRAM18, weights in "
        f"{est['weights_in']}), latency ~{t['latency_cycles']} cycles = ~{t['latency_ns']:.0f} ns at "
        f"{est['clock_period_ns']} ns clock, II ~{t['ii_cycles']} cycles"
    )
    return "\n".join(lines)
