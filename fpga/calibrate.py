"""Per-layer precision: the format of every accelerator tensor, weight, bias and accumulator.

Uniform 8-bit fixed point collapses accuracy (0.26 on digits), so with calibration data the precision
follows each tensor's range, as hls4ml's profiling-driven precision does:

- **fixed** ``fixed<W,I>``: ``W`` is the requested width, the rounding/overflow modes the requested
  ones; the integer bits of every tensor, weight and bias are chosen from its largest magnitude ``a``:
  ``I = floor(log2 a) + 2`` (the sign bit plus enough bits that ``a < 2**(I-1)``; the same as
  ``ceil(log2 a) + 1`` except when ``a`` is a power of two), plus ``headroom`` bits for activations.
  Exact ops (Relu, MaxPool, Flatten, Reshape) keep their input's format. The layers whose outputs leave
  the accelerator (what feeds Softmax on the host) get one more integer bit, ``AP_RND`` and ``AP_SAT``
  (hls4ml's fixed-point softmax needs such a precision; here the host computes softmax in float, and
  saturating keeps an out-of-range logit from wrapping). Accumulators are exact unless overridden.
  Without calibration data everything uses the requested format as it is.
- **int8**: per-tensor activation scales from the calibrated ranges (symmetric or asymmetric as the
  format says); weights per output channel at compile time. Calibration data is required.
- **bfp** (msfp12, msfp16...): no calibration; tensors between layers stay float32.

Overrides: ``{name: format}`` where ``name`` is a layer (its result format; for bfp its block format),
or a model input; or ``{layer: {"result": ..., "weight": ..., "bias": ..., "accum": ...}}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edge_module.numerics.emulate import Program

from .formats import BlockFloatingPoint, FixedPoint, FormatError, Int8, NumberFormat, get_format
from .partition import Partition

COMPUTE_OPS = ("Conv", "Dense")
EXACT_OPS = ("Relu", "MaxPool", "Flatten", "Reshape")
FLOAT = {"kind": "float"}


@dataclass
class LayerPlan:
    """How one layer computes: ``scheme`` (fixed, int8, bfp, float) and its weight/bias/accumulator formats."""

    scheme: str
    weight: dict | None = None
    bias: dict | None = None
    accum: dict | None = None
    bfp: dict | None = None


@dataclass
class Plan:
    """Formats of every accelerator tensor and layer."""

    tensors: dict[str, dict] = field(default_factory=dict)
    layers: dict[str, LayerPlan] = field(default_factory=dict)


@dataclass
class Range:
    lo: float = math.inf
    hi: float = -math.inf

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi)) if self.hi >= self.lo else 0.0

    def update(self, values: np.ndarray) -> None:
        if values.size:
            self.lo, self.hi = min(self.lo, float(values.min())), max(self.hi, float(values.max()))


def collect_ranges(program: Program, data: np.ndarray | Mapping[str, np.ndarray], batch: int = 256) -> dict[str, Range]:
    """Min/max of every tensor of a (float) program over calibration data."""
    feeds = data if isinstance(data, Mapping) else {program.inputs[0]: data}
    n = len(next(iter(feeds.values())))
    ranges: dict[str, Range] = {}
    for start in range(0, n, batch):
        values = program.run({k: np.asarray(v[start : start + batch]) for k, v in feeds.items()}, keep_all=True)
        for name, tensor in values.items():
            ranges.setdefault(name, Range()).update(tensor)
    return ranges


def integer_bits(amax: float) -> int:
    """Integer bits (sign included) a signed fixed type needs to hold magnitudes up to ``amax``."""
    return math.floor(math.log2(amax)) + 2 if amax > 0 else 1


def format_dict(fmt: NumberFormat, scale: float | None = None, zero_point: int = 0) -> dict:
    """The emulator's description of a tensor format."""
    if isinstance(fmt, FixedPoint):
        return {
            "kind": "fixed",
            "width": fmt.width,
            "integer": fmt.integer,
            "rounding": fmt.rounding,
            "overflow": fmt.overflow,
            "signed": fmt.signed,
        }
    if isinstance(fmt, Int8):
        return {"kind": "int8", "scale": float(np.float32(scale)), "zero_point": int(zero_point)}
    raise FormatError(f"{fmt} is not a tensor format")


def bfp_dict(fmt: BlockFloatingPoint) -> dict:
    return {
        "block_size": fmt.block_size,
        "mantissa_bits": fmt.mantissa_bits,
        "exponent_bits": fmt.exponent_bits,
        "rounding": fmt.rounding,
    }


def describe(fmt: Mapping | None) -> str | None:
    """A readable name of a format dict."""
    if fmt is None:
        return None
    if fmt.get("kind") == "fixed":
        return str(FixedPoint(fmt["width"], fmt["integer"], fmt["rounding"], fmt["overflow"], fmt["signed"]))
    if fmt.get("kind") == "int8":
        return f"int8(scale={fmt['scale']:.6g}, zero_point={fmt['zero_point']})"
    if "mantissa_bits" in fmt:
        return str(BlockFloatingPoint(fmt["block_size"], fmt["mantissa_bits"], fmt["exponent_bits"], fmt["rounding"]))
    return str(fmt.get("kind"))


def _fixed(base: FixedPoint, amax: float | None, extra: int = 0, safe: bool = False) -> dict:
    integer = base.integer if amax is None else integer_bits(amax) + extra
    rounding, overflow = ("AP_RND", "AP_SAT") if safe else (base.rounding, base.overflow)
    return format_dict(FixedPoint(base.width, integer, rounding, overflow, base.signed))


def _override(value: object, what: str) -> NumberFormat:
    try:
        return get_format(value)  # type: ignore[arg-type]
    except FormatError as exc:
        raise FormatError(f"override for {what}: {exc}") from None


def plan_formats(
    part: Partition,
    fmt: str | NumberFormat,
    ranges: Mapping[str, Range] | None = None,
    overrides: Mapping[str, object] | None = None,
    headroom: int = 0,
) -> Plan:
    """The formats of every tensor and layer of the accelerator part (see the module docstring)."""
    base = get_format(fmt)
    overrides = dict(overrides or {})
    known = {lay.name for lay in part.accelerator} | set(part.graph.inputs)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise FormatError(f"overrides name unknown accelerator layers or inputs {unknown}; known: {sorted(known)}")
    if isinstance(base, Int8) and ranges is None:
        raise FormatError("int8 needs calibration data to choose the activation scales: pass calibration=samples")
    plan = Plan()
    leaving = set(part.boundary)

    def amax(name: str) -> float | None:
        return None if ranges is None else ranges[name].amax

    def tensor(name: str, extra: int = 0, safe: bool = False) -> dict:
        if isinstance(base, FixedPoint):
            return _fixed(base, amax(name) if ranges is not None else None, extra, safe)
        if isinstance(base, Int8):
            scale, zero = base.activation_params(lo=ranges[name].lo, hi=ranges[name].hi, name=name)
            return format_dict(base, float(scale), int(zero))
        return dict(FLOAT)

    for name in part.graph.inputs:
        plan.tensors[name] = tensor(name, headroom)
        if name in overrides:
            plan.tensors[name] = _tensor_override(overrides[name], base, name)
    for layer in part.accelerator:
        leaves = layer.output in leaving
        if layer.op in EXACT_OPS:
            plan.tensors[layer.output] = dict(plan.tensors[layer.inputs[0]])
        elif isinstance(base, FixedPoint) and ranges is not None:
            plan.tensors[layer.output] = tensor(layer.output, headroom + int(leaves), safe=leaves)
        else:
            plan.tensors[layer.output] = tensor(layer.output)
        plan.layers[layer.name] = _layer_plan(layer.op, layer.weights, base, ranges is not None)
        if layer.name in overrides:
            _apply_override(plan, layer, overrides[layer.name], base)
    return plan


def _layer_plan(op: str, weights: Mapping[str, np.ndarray], base: NumberFormat, calibrated: bool) -> LayerPlan:
    if isinstance(base, BlockFloatingPoint):
        return LayerPlan("bfp", bfp=bfp_dict(base)) if op in COMPUTE_OPS else LayerPlan("float")
    if isinstance(base, Int8):
        return LayerPlan("int8")
    if isinstance(base, FixedPoint):
        if op not in COMPUTE_OPS:
            return LayerPlan("fixed")
        w_max = float(np.abs(weights["weight"]).max(initial=0)) if calibrated else None
        b_max = float(np.abs(weights["bias"]).max(initial=0)) if calibrated else None
        return LayerPlan("fixed", weight=_fixed(base, w_max), bias=_fixed(base, b_max))
    raise FormatError(f"no emulation for format {base}")


def _tensor_override(value: object, base: NumberFormat, name: str) -> dict:
    fmt = _override(value, name)
    if isinstance(base, FixedPoint) and isinstance(fmt, FixedPoint):
        return format_dict(fmt)
    raise FormatError(f"override for {name}: only fixed-point tensor formats can be overridden, got {fmt}")


def _apply_override(plan: Plan, layer: object, value: object, base: NumberFormat) -> None:
    name, op = layer.name, layer.op  # type: ignore[attr-defined]
    entry = plan.layers[name]
    if isinstance(base, BlockFloatingPoint):
        fmt = _override(value, name)
        if not isinstance(fmt, BlockFloatingPoint) or op not in COMPUTE_OPS:
            raise FormatError(f"override for {name}: a bfp model takes bfp formats for Conv/Dense layers, got {value}")
        entry.bfp = bfp_dict(fmt)
        return
    if not isinstance(base, FixedPoint):
        raise FormatError(f"override for {name}: per-layer overrides are supported for fixed and bfp, not {base}")
    parts = value if isinstance(value, Mapping) else {"result": value}
    bad = sorted(set(parts) - {"result", "weight", "bias", "accum"})
    if bad:
        raise FormatError(f"override for {name}: unknown keys {bad}; use result, weight, bias, accum")
    for key, text in parts.items():
        fmt = _override(text, f"{name}.{key}")
        if not isinstance(fmt, FixedPoint):
            raise FormatError(f"override for {name}.{key}: a fixed-point model takes fixed formats, got {fmt}")
        if key == "result":
            plan.tensors[layer.output] = format_dict(fmt)  # type: ignore[attr-defined]
        elif op not in COMPUTE_OPS:
            raise FormatError(f"override for {name}.{key}: only Conv/Dense layers have weights and accumulators")
        else:
            setattr(entry, key, format_dict(fmt))
