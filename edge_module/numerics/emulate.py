"""Run a compiled accelerator graph bit-accurately on the CPU (numpy only; ``fpga.compiled`` writes it).

A program is ``program.json`` plus ``program.npz``::

    {"format_version": 1,
     "inputs": ["x"], "outputs": ["logits"],
     "tensors": {"x": FORMAT, "t1": FORMAT, ...},        # the format every tensor is held in
     "layers": [{"name", "op", "inputs", "output", "attrs", "scheme",
                 "weight": FORMAT, "bias": FORMAT, "accum": FORMAT|null, "bfp": BFP, "arrays": {role: key}}]}

``FORMAT`` is ``{"kind": "float"}``, ``{"kind": "fixed", "width", "integer", "rounding", "overflow",
"signed"}`` or ``{"kind": "int8", "scale", "zero_point"}``; ``BFP`` is ``{"block_size", "mantissa_bits",
"exponent_bits", "rounding"}``. Ops: ``dense``, ``conv`` (weights ``(M, K)``, ``K`` in ``(kh, kw, C)``
order), ``relu``, ``maxpool``, ``avgpool``, ``gap``, ``add``, ``concat``, ``flatten``, ``reshape``.
A layer's ``scheme`` (``fixed``, ``int8``, ``bfp``, ``float``) says how its dot products run
(``edge_module.numerics.dot``); arrays hold weight codes (fixed codes, int8 codes with per-channel
``weight_scale``, BFP mantissas with ``weight_exponent``, or float32) and bias codes.

Tensors are carried as the values their codes stand for (float64 for fixed, exact; float32 otherwise),
except int8 tensors, carried as float32 codes minus the zero point (exact integers) that relu, max
pooling, reshapes and int8 dot products read directly; the other ops get their values. Every layer's
result is converted to its output tensor's format: a no-op for exact ops (relu, max pooling, reshapes)
whose output keeps the input's format. Element-wise arithmetic other than the dot products (average
pooling, Add) is computed in float64 (fixed, int8) or float32 and then converted once, so those layers
are exact only up to that one rounding.

This module holds the program format, ``Program`` and the per-op functions; convolution geometry and
im2col copies are in ``patches``, the BFP convolution paths in ``bfp_conv``, the dot products in ``dot``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import bfp_conv, dense_chain, dot, fixed, int8, patches
from .patches import windows

FORMAT_VERSION = 1
_FLOAT32 = np.dtype(np.float32)  # dtype identity: a cheap test, and a different instance only takes the general path
PROGRAM_JSON, PROGRAM_NPZ = "program.json", "program.npz"


def to_format(values: np.ndarray, fmt: Mapping) -> np.ndarray:
    """``values`` converted to a tensor format, as the values of the codes (float64 or float32)."""
    kind = fmt["kind"]
    if kind == "fixed":
        return fixed.fake_quantize(
            values,
            fmt["width"],
            fmt["integer"],
            fmt["rounding"],
            fmt["overflow"],
            fmt.get("signed", True),
            dtype=np.float64,
        )
    if kind == "int8":
        codes = int8.quantize(values, fmt["scale"], fmt["zero_point"])
        return from_int8(codes, fmt)
    if kind == "float":
        return np.asarray(values, np.float32)
    raise ValueError(f"unknown tensor format kind {kind!r} in the program: recompile it with this version")


def from_int8(codes: np.ndarray, fmt: Mapping) -> np.ndarray:
    return (codes.astype(np.float64) - int(fmt["zero_point"])) * float(np.float32(fmt["scale"]))


def _hold(values: np.ndarray, fmt: Mapping) -> np.ndarray:
    """``values`` converted to ``fmt`` as the emulator holds the tensor between layers: int8 as float32
    codes minus the zero point (exact integers; relu, max pooling and reshapes act on them as on the
    values, and zero padding is the value 0); the other formats as ``to_format`` gives them."""
    if fmt["kind"] == "int8":
        zero = int(fmt["zero_point"])
        if values.dtype == np.float32 and np.isfinite(values).all():
            # int8.quantize's float32 arithmetic: rint(x / scale) saturated, less the zero point (exact)
            with np.errstate(over="ignore"):
                codes = np.divide(values, np.float32(fmt["scale"]))
            np.rint(codes, out=codes)
            return np.clip(codes, np.float32(-128 - zero), np.float32(127 - zero), out=codes)  # one fast pass
        codes = int8.quantize(values, fmt["scale"], fmt["zero_point"])
        return codes.astype(np.float32) - np.float32(zero)
    return to_format(values, fmt)


def _value(held: np.ndarray, fmt: Mapping) -> np.ndarray:
    """The values of a tensor held as ``_hold`` holds it (as ``to_format`` gives them)."""
    if fmt["kind"] == "int8":
        return held.astype(np.float64) * float(np.float32(fmt["scale"]))
    return held


def codes_of(values: np.ndarray, fmt: Mapping) -> np.ndarray:
    """Integer codes of values already in the tensor format ``fmt`` (exact)."""
    if fmt["kind"] == "fixed":
        return np.ldexp(values, dot.frac_bits(fmt)).astype(np.int64)
    if fmt["kind"] == "int8":
        return (np.rint(values / float(np.float32(fmt["scale"]))) + int(fmt["zero_point"])).astype(np.int64)
    raise ValueError(f"a {fmt['kind']} tensor has no integer codes")


def _tile_max(x: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """Max pooling of ``kh x kw`` tiles of an NCHW tensor: one ``maximum`` per tile element."""
    out = np.maximum(x[:, :, 0::kh, 0::kw], x[:, :, 0::kh, 1::kw] if kw > 1 else x[:, :, 1::kh, 0::kw])
    for i in range(kh):
        for j in range(kw):
            if (i, j) not in ((0, 0), (0, 1) if kw > 1 else (1, 0)):
                np.maximum(out, x[:, :, i::kh, j::kw], out=out)
    return out


class Program:
    """A compiled accelerator graph; ``run`` executes it layer by layer."""

    def __init__(self, spec: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
        version = spec.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"program format version {version!r} is not {FORMAT_VERSION}: recompile the model")
        self.spec = spec
        self.arrays = {key: np.asarray(arrays[key]) for key in arrays}
        self.tensors: dict[str, Mapping] = spec["tensors"]
        self.inputs: list[str] = list(spec["inputs"])
        self.outputs: list[str] = list(spec["outputs"])
        self._prepared = [self._prepare(layer) for layer in spec["layers"]]
        self._fused = self._fuse_relus(self._prepared)
        self._chained = self._chain_dense(self._fused)
        self._plan_steps()

    @classmethod
    def load(cls, directory: str | Path) -> Program:
        directory = Path(directory)
        spec = json.loads((directory / PROGRAM_JSON).read_text())
        with np.load(directory / PROGRAM_NPZ) as data:
            arrays = {key: data[key] for key in data.files}
        return cls(spec, arrays)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PROGRAM_JSON).write_text(json.dumps(self.spec, indent=1))
        np.savez(directory / PROGRAM_NPZ, **self.arrays)

    def _prepare(self, layer: Mapping) -> dict:
        prepared = dict(layer)
        prepared["data"] = {role: self.arrays[key] for role, key in layer.get("arrays", {}).items()}
        data = prepared["data"]
        out_fmt = self.tensors[layer["output"]]
        in_fmt = self.tensors[layer["inputs"][0]] if layer["inputs"] else None
        # exact ops whose output keeps the input's format need no conversion
        prepared["keep"] = layer["op"] in ("relu", "maxpool", "flatten", "reshape") and dict(out_fmt) == dict(in_fmt)
        if layer["scheme"] == "float" and "weight" in data:
            data["weight"] = data["weight"].astype(np.float32)
        elif layer["scheme"] == "bfp":
            data["prepared"] = dot.bfp_weights(data["weight"], data["weight_exponent"], layer["bfp"])
            data["folded"] = dot.bfp_fold_weights(data["weight"], data["weight_exponent"], layer["bfp"])
            if data["folded"] is not None and layer["op"] == "conv":
                data["folded_t"] = dot.transposed_weights(data["folded"])
                data["conv_plan"] = dot.bfp_dense_plan(data["folded_t"], data["bias"], layer["bfp"])
            elif data["folded"] is not None and _whole_blocks(data, layer):
                data["dense_plan"] = dot.bfp_dense_plan(
                    dot.transposed_weights(data["folded"]), data["bias"], layer["bfp"]
                )
        elif layer["scheme"] == "fixed" and "weight" in data and in_fmt is not None and in_fmt["kind"] == "fixed":
            fast = _fixed_fast(data, in_fmt, layer)
            if fast is not None and out_fmt["kind"] == "fixed":
                fast = (*fast[:5], _fixed_scaled(fast, in_fmt, out_fmt))
            data["fast"] = fast
        elif layer["scheme"] == "int8" and "weight" in data and in_fmt is not None and in_fmt["kind"] == "int8":
            data["fast"] = _int8_fast(data, in_fmt, out_fmt)
        # ops that read their inputs as held (int8 tensors as codes); the others get the values
        prepared["native"] = prepared["keep"] or (data.get("fast") is not None and layer["scheme"] == "int8")
        return prepared

    def _fuse_relus(self, prepared: list[dict]) -> list[dict]:
        """The layers with each ReLU that keeps its format folded into the dense or BFP convolution layer
        before it when that layer computes its result in few calls (int8 dense: the clip's lower bound;
        BFP with a float result: in place, or the ReLU after the other convolution paths) and nothing else
        reads the pre-ReLU tensor. The same bits: ``run`` uses this list unless asked for every tensor."""
        readers = _readers(prepared)
        fused: list[dict] = []
        for layer in prepared:
            before = fused[-1] if fused else None
            if (
                layer["op"] == "relu"
                and layer["keep"]
                and before is not None
                and before["op"] in ("dense", "conv")
                and not before.get("relu")
                and before["output"] == layer["inputs"][0]
                and readers.get(before["output"]) == 1
                and before["output"] not in self.outputs
                and (
                    (before["op"] == "dense" and before["scheme"] == "int8" and before["data"].get("fast") is not None)
                    or (
                        before["data"].get("dense_plan" if before["op"] == "dense" else "conv_plan") is not None
                        and self.tensors[before["output"]]["kind"] == "float"
                    )
                )
            ):
                fused[-1] = {**before, "relu": True, "output": layer["output"]}
                continue
            fused.append(layer)
        return fused

    def _chain_dense(self, fused: list[dict]) -> list[dict]:
        """``fused`` with each maximal run of at least two BFP dense layers that ``dense_chain`` can link
        (each reading only the previous one's float32 result, which nothing else reads) replaced by one
        ``chain`` layer: ``run`` uses this list unless asked for every tensor (the same bits)."""
        readers = _readers(fused)

        def link(layer: dict) -> bool:
            return layer["op"] == "dense" and dense_chain.applies(layer["data"].get("dense_plan"))

        def joins(before: dict, layer: dict) -> bool:
            plan, prev = layer["data"]["dense_plan"].integer_weights, before["data"]["dense_plan"].integer_weights
            return (
                layer["inputs"] == [before["output"]]
                and readers.get(before["output"]) == 1
                and before["output"] not in self.outputs
                and self.tensors[before["output"]]["kind"] == "float"
                and prev.shape[1] == plan.shape[0] * plan.shape[2]
            )

        runs: list[list[dict]] = []
        for layer in fused:
            if link(layer) and runs and link(runs[-1][-1]) and joins(runs[-1][-1], layer):
                runs[-1].append(layer)
            else:
                runs.append([layer])
        return [run[0] if len(run) == 1 else _chain_layer(run, self.tensors) for run in runs]

    def run(self, feeds: Mapping[str, np.ndarray] | np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
        """Outputs (float32) for the inputs (a dict by name, or one array for a one-input program);
        ``keep_all``: every tensor."""
        if type(feeds) is not dict and not isinstance(feeds, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"the program has inputs {self.inputs}: pass a dict of arrays")
            feeds = {self.inputs[0]: feeds}
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise ValueError(f"missing program input(s) {missing}; it takes {self.inputs}")
        if not keep_all:
            return self._run_steps(feeds)
        held = {name: _hold(np.asarray(feeds[name]), self.tensors[name]) for name in self.inputs}
        tensors = self.tensors
        for layer in self._prepared:
            if layer["native"]:
                inputs = [held[name] for name in layer["inputs"]]
            else:
                inputs = [_value(held[name], tensors[name]) for name in layer["inputs"]]
            held[layer["output"]] = _OPS[layer["op"]](self, layer, inputs)
        return {name: np.ascontiguousarray(_value(v, tensors[name]), np.float32) for name, v in held.items()}

    def _plan_steps(self) -> None:
        """What ``_run_steps`` reads, resolved once: each input's format, each layer's function, input
        names and whether any input needs ``_value`` (int8 tensors read as values), each output's format."""
        tensors = self.tensors
        self._input_steps = [(name, tensors[name], tensors[name]["kind"] == "float") for name in self.inputs]
        self._layer_steps = [
            (
                _OPS[layer["op"]],
                layer,
                tuple(layer["inputs"]),
                not layer["native"] and any(tensors[name]["kind"] == "int8" for name in layer["inputs"]),
                layer["output"],
            )
            for layer in self._chained
        ]
        self._output_steps = [(name, tensors[name], tensors[name]["kind"] == "int8") for name in self.outputs]

    def _run_steps(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` without ``keep_all`` on the layers of ``_chained`` (inputs checked by ``run``)."""
        held = {}
        for name, fmt, plain in self._input_steps:
            x = feeds[name]
            if not plain:
                x = _hold(np.asarray(x), fmt)
            elif type(x) is not np.ndarray or x.dtype is not _FLOAT32:  # else a no-op
                x = np.asarray(np.asarray(x), np.float32)  # to_format's conversion
            held[name] = x
        tensors = self.tensors
        for op, layer, names, values, output in self._layer_steps:
            inputs = [_value(held[name], tensors[name]) for name in names] if values else [held[name] for name in names]
            held[output] = op(self, layer, inputs)
        outputs = {}
        for name, fmt, coded in self._output_steps:
            v = _value(held[name], fmt) if coded else held[name]
            if v.dtype is not _FLOAT32 or not v.flags.c_contiguous or v.ndim == 0:  # else a no-op
                v = np.ascontiguousarray(v, np.float32)
            outputs[name] = v
        return outputs

    def _out(self, layer: Mapping, values: np.ndarray) -> np.ndarray:
        """The layer's result values converted to its output tensor's format, as that tensor is held."""
        if layer.get("keep"):
            return values
        return _hold(values, self.tensors[layer["output"]])

    def _pre(self, layer: Mapping, x: np.ndarray) -> np.ndarray:
        """The input tensor as the fast dot products read it (before im2col, so once per value): fixed
        codes in the float type, or int8 codes minus the zero point in float32 (exact integers; zero
        padding stays the value 0). Unchanged for the other paths."""
        fast = layer["data"].get("fast")
        if fast is None:
            return x
        if layer["scheme"] == "fixed":
            if fast[5] is not None:  # the weights read the values
                return x.astype(fast[0], copy=False)
            return np.ldexp(x, fast[3]).astype(fast[0])
        return x.astype(fast[-1], copy=False)  # int8 tensors are held as codes minus the zero point

    def _matmul(self, layer: Mapping, x: np.ndarray) -> np.ndarray:
        """The layer's dot products for rows ``x (R, K)`` (as ``_pre`` left them), in its output format."""
        data, scheme = layer["data"], layer["scheme"]
        in_fmt, out_fmt = self.tensors[layer["inputs"][0]], self.tensors[layer["output"]]
        if scheme == "float":
            return self._out(layer, x.astype(np.float32) @ data["weight"].T + data["bias"])
        if scheme == "bfp":
            y = _bfp_folded(layer, x if x.dtype == np.float32 else None)
            if y is not None:
                return self._out(layer, y)
            y = dot.bfp_dot(x, data["weight"], data["weight_exponent"], data["bias"], layer["bfp"], data["prepared"])
            return self._out(layer, y)
        if scheme == "fixed":
            if in_fmt["kind"] != "fixed" or out_fmt["kind"] != "fixed":
                raise ValueError(f"layer {layer['name']}: a fixed-point layer needs fixed-point input and output")
            fast = data.get("fast")
            if fast is not None:  # exact accumulator, every partial sum exact in the float type
                _, wt, bias, _, a_frac, scaled = fast
                out_frac = dot.frac_bits(out_fmt)
                if scaled is not None:  # x values against rescaled weights: the sums times 2**F_out, exact
                    t = dot.exact_float_matmul(x, scaled[0])
                    t += scaled[1]
                    codes = dot.fixed_codes_of_scaled(t.astype(np.float64, copy=False), out_fmt)
                    return np.ldexp(codes, -out_frac, out=codes)
                acc = dot.exact_float_matmul(x, wt)
                acc += bias
                codes = dot.fixed_codes_of_scaled(np.ldexp(acc.astype(np.float64), out_frac - a_frac), out_fmt)
                return np.ldexp(codes, -out_frac, out=codes)
            acc, frac = dot.fixed_dot(
                codes_of(x, in_fmt),
                dot.frac_bits(in_fmt),
                data["weight"],
                dot.frac_bits(layer["weight"]),
                data["bias"],
                dot.frac_bits(layer["bias"]),
                layer.get("accum"),
            )
            return fixed.dequantize(dot.cast_fixed(acc, frac, out_fmt), out_fmt["width"], out_fmt["integer"])
        if scheme == "int8":
            if in_fmt["kind"] != "int8" or out_fmt["kind"] != "int8":
                raise ValueError(f"layer {layer['name']}: an int8 layer needs int8 input and output")
            fast = data.get("fast")
            if fast is not None:  # the int32 accumulator never wraps; every partial sum is exact
                wt, bias, scale, low, high, _ = fast
                acc = dot.exact_float_matmul(x, wt)
                if acc.size <= dot.TILE_MAX_ELEMENTS and acc.ndim == 2 and acc.flags.c_contiguous:
                    tiles = data.setdefault("tiles", {})
                    acc += dot.tiled(tiles, "bias", bias, acc.shape)
                    acc = acc.astype(np.float32, copy=False)  # exact integers below 2**31: as int32 -> float32
                    acc *= dot.tiled(tiles, "scale", scale, acc.shape)
                else:
                    dot.rows_op(np.add, acc, bias)
                    acc = acc.astype(np.float32, copy=False)
                    dot.rows_op(np.multiply, acc, scale)
                np.rint(acc, out=acc)
                if layer.get("relu"):  # a ReLU folded in (_fuse_relus): held codes are signed as the values
                    low = max(low, np.float32(0))
                return np.clip(acc, low, high, out=acc)  # codes minus the zero point, as int8 tensors are held
            y = dot.int8_dot(
                codes_of(x, in_fmt),
                in_fmt["scale"],
                in_fmt["zero_point"],
                data["weight"],
                data["weight_scale"],
                data.get("bias"),
                out_fmt["scale"],
                out_fmt["zero_point"],
            )
            return y.astype(np.float32) - np.float32(out_fmt["zero_point"])
        raise ValueError(f"layer {layer['name']}: unknown scheme {scheme!r}")


def _readers(layers: list[dict]) -> dict[str, int]:
    """How many of ``layers`` read each tensor."""
    readers: dict[str, int] = {}
    for layer in layers:
        for name in layer["inputs"]:
            readers[name] = readers.get(name, 0) + 1
    return readers


def _fixed_fast(data: Mapping, in_fmt: Mapping, layer: Mapping) -> tuple | None:
    """Pre-scaled float weights and bias when the accumulator is exact and every partial sum fits a
    float mantissa (float32 below ``2**24``, float64 below ``2**53``): the float matrix product is then
    exact, and equal to ``dot.fixed_dot``."""
    if layer.get("accum") is not None:
        return None
    w, b = np.asarray(data["weight"], np.int64), np.asarray(data["bias"], np.int64)
    x_frac, p_frac = dot.frac_bits(in_fmt), dot.frac_bits(in_fmt) + dot.frac_bits(layer["weight"])
    b_frac = dot.frac_bits(layer["bias"])
    a_frac = max(p_frac, b_frac)
    bound = 2.0 ** (int(in_fmt["width"]) - 1) * float(np.abs(w).max(initial=0)) * w.shape[1] * 2.0 ** (a_frac - p_frac)
    bound += float(np.abs(b).max(initial=0)) * 2.0 ** (a_frac - b_frac)
    if bound >= 2.0**51:  # dot.fixed_codes_of_scaled's range
        return None
    dtype = np.float32 if bound < 2.0**24 else np.float64
    wt = np.ascontiguousarray(np.ldexp(w.T.astype(np.float64), a_frac - p_frac).astype(dtype))
    return dtype, wt, np.ldexp(b.astype(np.float64), a_frac - b_frac).astype(dtype), x_frac, a_frac, None


def _fixed_scaled(fast: tuple, in_fmt: Mapping, out_fmt: Mapping) -> tuple | None:
    """``_fixed_fast``'s weights and bias rescaled to read the input values and give the accumulator as
    ``value * 2**F_out`` directly: ``W * 2**(F_x + F_out - F_a)``, ``b * 2**(F_out - F_a)``. Scaling by
    powers of two keeps every product and partial sum exact while the smallest step
    ``2**(F_out - F_p)`` is a normal number of the float type and the largest sum stays far below its
    overflow; None otherwise."""
    dtype, wt, bias, x_frac, a_frac, _ = fast
    if dtype is np.float32 and int(in_fmt["width"]) > 24:
        return None  # the input values must be exact float32 numbers
    e_min, e_max = (-126, 127) if dtype is np.float32 else (-1022, 1023)
    shift = dot.frac_bits(out_fmt) - a_frac
    width = int(in_fmt["width"])
    # every product and partial sum is an integer below 2**53 times 2**shift; the operands integers times
    # 2**-F_x and 2**(shift + F_x): all normal and exact while these exponents stay well inside the range
    for low in (shift, shift + x_frac, -x_frac):
        if low < e_min or low + 53 + width > e_max:
            return None
    w_scaled = np.ldexp(wt.astype(np.float64), shift + x_frac)
    b_scaled = np.ldexp(bias.astype(np.float64), shift)
    w_cast, b_cast = w_scaled.astype(dtype), b_scaled.astype(dtype)
    if not (np.array_equal(w_cast, w_scaled) and np.array_equal(b_cast, b_scaled)):
        return None
    return np.ascontiguousarray(w_cast), b_cast


def _int8_fast(data: Mapping, in_fmt: Mapping, out_fmt: Mapping) -> tuple | None:
    """Float weights, bias and the requantization scale when every partial sum is below ``2**31`` (the
    int32 accumulator never wraps): float32 below ``2**24``, else float64, where the sums are exact and
    equal ``dot.int8_dot``'s; the sum then goes to float32 as onnxruntime converts its int32."""
    w, b = np.asarray(data["weight"], np.int64), data.get("bias")
    b = np.zeros(w.shape[0], np.int64) if b is None else np.asarray(b, np.int64)
    reach = (128 + abs(int(in_fmt["zero_point"]))) * float(np.abs(w).max(initial=0)) * w.shape[1]
    reach += float(np.abs(b).max(initial=0))
    if reach >= 2.0**31:
        return None
    dtype = np.float32 if reach < 2.0**24 else np.float64
    scale = (np.float32(in_fmt["scale"]) * np.asarray(data["weight_scale"], np.float32)) / np.float32(out_fmt["scale"])
    zero = int(out_fmt["zero_point"])
    wt = np.ascontiguousarray(w.T.astype(dtype))
    return wt, b.astype(dtype), scale.astype(np.float32), np.float32(-128 - zero), np.float32(127 - zero), dtype


def _whole_blocks(data: Mapping, layer: Mapping) -> bool:
    """Whether a dense layer's dot products are whole BFP blocks (``K % k == 0``)."""
    return np.shape(data["weight"])[-1] % int(layer["bfp"]["block_size"]) == 0


def _dense(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    plan = layer["data"].get("dense_plan")
    if plan is not None and x.dtype == np.float32 and x.ndim == 2 and (x.flags.f_contiguous or x.size <= DENSE_COPY):
        # the inputs as columns: free when the previous dense layer left its result transposed, else a copy
        y = dot.bfp_dense_run(np.ascontiguousarray(x.T), plan)
        if y is not None:
            if layer.get("relu"):  # a ReLU folded in (_fuse_relus), as _relu computes it
                dot.relu_in_place(y)
            return program._out(layer, y.T)
    y = program._matmul(layer, program._pre(layer, x))
    if layer.get("relu") and layer["scheme"] == "bfp":  # folded in; the other BFP paths: a fresh float32 result
        dot.relu_in_place(y)  # (int8 layers fold it into their clip)
    return y


def _chain_layer(layers: list[dict], tensors: Mapping[str, Mapping]) -> dict:
    """A ``chain`` layer: BFP dense layers run by one ``dense_chain.DenseChain`` (``_dense_chain``);
    ``float_out``: its output tensor is float (the chain's float32 result is held as it is)."""
    plans = [layer["data"]["dense_plan"] for layer in layers]
    chain = dense_chain.DenseChain(plans, [bool(layer.get("relu")) for layer in layers])
    return {
        "name": "+".join(layer["name"] for layer in layers),
        "op": "chain",
        "inputs": layers[0]["inputs"],
        "output": layers[-1]["output"],
        "native": False,
        "layers": layers,
        "chain": chain,
        "float_out": tensors[layers[-1]["output"]]["kind"] == "float",
    }


def _dense_chain(program: Program, chain: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    """The chain's layers in one ``DenseChain.run`` when ``_dense`` would take the column path for the
    first, else (or when some layer declines) one by one from the chain's input: the same bits."""
    x = inputs[0]
    if x.dtype == np.float32 and x.ndim == 2 and (x.flags.f_contiguous or x.size <= DENSE_COPY):
        y = chain["chain"].run(x)
        if y is not None:
            return y if chain["float_out"] else program._out(chain["layers"][-1], y)
    for layer in chain["layers"]:  # float32 tensors in between: held as their values
        x = _dense(program, layer, [x])
    return x


def _conv(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    """A convolution; with a ReLU folded in (``_fuse_relus``), the ReLU's arithmetic on its result."""
    relu = layer.get("relu", False)
    if layer["scheme"] == "bfp":  # its input as held: _pre leaves BFP layers' inputs as they are
        result = bfp_conv.run(inputs[0], patches.geometry(layer["attrs"]), layer, relu)
        if result is not None:
            y = program._out(layer, result.values)
            if result.grid is not None:
                y = y.reshape(*result.grid, -1).transpose(0, 3, 1, 2)
            return dot.relu_values(y) if relu and not result.relu_applied else y
    y = _conv_values(program, layer, inputs)
    return dot.relu_values(y) if relu else y


def _conv_values(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x = program._pre(layer, inputs[0])
    geometry = patches.geometry(layer["attrs"])
    n, c = x.shape[:2]
    if c <= patches.COLUMN_CHANNELS and layer["data"].get("fast") is not None:  # exact sums: any layout
        cols = patches.columns(x, geometry, int(np.prod(geometry[0])) * c)
        y = program._matmul(layer, cols.T)  # BLAS reads the transposed rows as they are
        return y.reshape(n, *patches.out_hw(*x.shape[2:], geometry), -1).transpose(0, 3, 1, 2)
    rows = windows(x, *geometry, 0.0)
    n, oh, ow = rows.shape[:3]
    y = program._matmul(layer, rows.reshape(n * oh * ow, -1))
    return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


DENSE_COPY = 8192  # BFP dense layers transpose inputs of up to this many values to take the column path


def _bfp_folded(layer: Mapping, x: np.ndarray | None) -> np.ndarray | None:
    """``dot.bfp_dot_folded`` for float32 rows ``x``, None where it does not apply."""
    data = layer["data"]
    if data.get("folded") is None:
        return None
    folded_x = dot.bfp_folded_inputs(x, layer["bfp"]) if x is not None else None
    if folded_x is None:
        return None
    return dot.bfp_dot_folded(folded_x, data["folded"], data["bias"], layer["bfp"])


def _pool_windows(x: np.ndarray, attrs: Mapping, pad_value: float) -> np.ndarray:
    kernel, pads = tuple(attrs["kernel_shape"]), patches.pads(attrs)
    pooled = windows(x, kernel, pads, tuple(attrs["strides"]), (1, 1), pad_value)
    n, oh, ow, kh, kw, c = pooled.shape
    return pooled.reshape(n, oh, ow, kh * kw, c)


def _maxpool(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x, attrs = inputs[0], layer["attrs"]
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs["strides"]
    n, c, h, w = x.shape
    if (kh, kw) == (sh, sw) and not any(patches.pads(attrs)) and h % kh == 0 and w % kw == 0:  # tiles
        if kh * kw > 1:
            return program._out(layer, _tile_max(x, kh, kw))
        return program._out(layer, x.reshape(n, c, h // kh, kh, w // kw, kw).max(axis=(3, 5)))
    y = _pool_windows(inputs[0], layer["attrs"], -np.inf).max(axis=3).transpose(0, 3, 1, 2)
    return program._out(layer, y)


def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if x.dtype == np.float64 else x.astype(np.float32)


def _avgpool(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x, attrs = _wide(inputs[0]), layer["attrs"]
    total = _pool_windows(x, attrs, 0.0).sum(axis=3)
    if attrs.get("count_include_pad", 0):
        count = float(np.prod(attrs["kernel_shape"]))
    else:
        ones = np.ones((1, 1, *x.shape[2:]), x.dtype)
        count = _pool_windows(ones, attrs, 0.0).sum(axis=3)
    return program._out(layer, (total / count).transpose(0, 3, 1, 2))


def _gap(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x = _wide(inputs[0])
    return program._out(layer, x.mean(axis=(2, 3), keepdims=True))


def _relu(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    return program._out(layer, dot.relu_values(inputs[0]))


def _add(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    return program._out(layer, _wide(inputs[0]) + _wide(inputs[1]))


def _concat(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    return program._out(layer, np.concatenate(inputs, axis=int(layer["attrs"].get("axis", 1))))


FLATTEN_COLUMNS = 1 << 15  # measured: 16k values 5 -> 7 us in Fortran order; 262k values 66 -> 685 us


def _flatten(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    """``x.reshape(N, -1)``: a view of a C-contiguous ``x``, else one copy; of up to ``FLATTEN_COLUMNS``
    values in Fortran order (its transpose is C-contiguous: the columns a following BFP dense layer
    reads with no second copy; a transposing copy of larger tensors costs more than it saves)."""
    x = inputs[0]
    if x.ndim < 2 or x.flags.c_contiguous or x.size > FLATTEN_COLUMNS:
        return program._out(layer, x.reshape(x.shape[0], -1))
    n = x.shape[0]
    out = np.empty((n, x[0].size), x.dtype, order="F")
    np.copyto(out.T.reshape(*x.shape[1:], n), x.transpose(*range(1, x.ndim), 0))
    return program._out(layer, out)


def _reshape(program: Program, layer: Mapping, inputs: list[np.ndarray]) -> np.ndarray:
    x = inputs[0]
    shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(layer["attrs"]["shape"])]
    return program._out(layer, x.reshape(shape))


_OPS = {
    "dense": _dense,
    "chain": _dense_chain,
    "conv": _conv,
    "relu": _relu,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "gap": _gap,
    "add": _add,
    "concat": _concat,
    "flatten": _flatten,
    "reshape": _reshape,
}
