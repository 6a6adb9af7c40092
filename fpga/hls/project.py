"""Write an hls4ml project from an ONNX model, compile its bit-accurate C simulation, predict with it."""

from __future__ import annotations

import contextlib
import copy
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .frontend import HlsError, layer_name_map, prepare_onnx
from .precision import SOFTMAX_INPUT, SOFTMAX_MAX_INPUT_WIDTH, SOFTMAX_TABLE, hls_precision, layer_spec, width_of

BACKENDS = ("Vivado", "Vitis")
IO_TYPES = ("io_parallel", "io_stream")


@dataclass
class HlsProject:
    """An hls4ml project (``files``) for one model; ``compile()`` builds its C simulation with g++."""

    hls_model: object
    files: Path
    backend: str
    io_type: str
    reuse_factor: int
    clock_period: float
    prepared: object  # the qonnx ModelWrapper hls4ml converted
    precisions: dict[str, dict[str, str]]
    notes: list[str] = field(default_factory=list)
    compile_seconds: float | None = None
    channels_last_input: bool = False

    def write(self) -> Path:
        """Write the HLS sources (firmware/, the testbench, build scripts) to ``files``."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.hls_model.write()
        return self.files

    def compile(self) -> float:
        """Write the project and compile its C simulation with g++; returns the seconds it took."""
        start = time.perf_counter()
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                self.hls_model.compile()
        except Exception as exc:
            tail = log.getvalue()[-2000:]
            raise HlsError(f"g++ could not compile the hls4ml C simulation in {self.files}: {exc}\n{tail}") from exc
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the bit-accurate C simulation on a batch laid out as the original model takes it (NCHW for
        a torch CNN: transposed to the NHWC the project takes). Compiles first if needed."""
        if self.compile_seconds is None:
            self.compile()
        x = np.asarray(x, dtype=np.float32)
        if self.channels_last_input and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        with contextlib.redirect_stdout(io.StringIO()):
            y = np.asarray(self.hls_model.predict(np.ascontiguousarray(x)))
        return y.reshape(len(x), -1)

    def estimates(self, clock_period: float | None = None) -> dict:
        """Resource and latency *estimates* (no synthesis): see ``fpga.hls.estimates``."""
        from .estimates import estimate

        return estimate(
            self.prepared,
            self.precisions,
            reuse_factor=self.reuse_factor,
            io_type=self.io_type,
            clock_period=clock_period or self.clock_period,
        )

    def report(self) -> dict:
        """What was written and how: backend, io type, reuse, per-layer precision, notes, compile time and
        the estimates (``kind: "estimate"``)."""
        return {
            "kind": "hls4ml project",
            "files": str(self.files),
            "backend": self.backend,
            "io_type": self.io_type,
            "reuse_factor": self.reuse_factor,
            "clock_period_ns": self.clock_period,
            "precisions": self.precisions,
            "notes": list(self.notes),
            "compile_seconds": self.compile_seconds,
            "estimates": self.estimates(),
        }

    def text_report(self) -> str:
        from .estimates import format_estimates

        lines = [f"hls4ml project {self.files} ({self.backend}, {self.io_type}, reuse factor {self.reuse_factor})"]
        for name, spec in self.precisions.items():
            lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in spec.items()))
        lines += [f"  note: {n}" for n in self.notes]
        if self.compile_seconds is not None:
            lines.append(f"  C simulation compiled with g++ in {self.compile_seconds:.1f} s")
        return "\n".join(lines) + "\n" + format_estimates(self.estimates())


def _layers(graph: object) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(node -> output tensor of its hls4ml layer, bias-Add -> its MatMul, names of weight initializers)."""
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    outputs, bias_of = {}, {}
    for node in graph.node:
        outputs.setdefault(node.name, node.output[0])
        users = consumers.get(node.output[0], [])
        if node.op_type == "MatMul" and node.input[1] in inits and len(users) == 1:
            add = users[0]
            if add.op_type == "Add" and any(t in inits for t in add.input):
                bias_of[add.name] = node.name
                outputs[node.name] = add.output[0]
    return outputs, bias_of, inits


def export_hls(
    model: object,
    out_dir: str | Path,
    backend: str = "Vitis",
    io_type: str = "io_parallel",
    reuse_factor: int = 1,
    default_precision: str = "fixed<16,6>",
    layer_precision: Mapping[str, str | Mapping[str, str]] | None = None,
    part: str | None = None,
    clock_period: float = 5,
    strategy: str | None = None,
    fix_softmax: bool = True,
) -> HlsProject:
    """An ONNX model (float or QONNX) -> an hls4ml project in ``out_dir`` (written, not yet compiled).

    ``layer_precision`` maps layer names (the original model's node names, or the prepared graph's
    ``MatMul_0``/``Conv_0``/``Relu_0``..., or the graph input's name) to a format name (weight, bias and
    result; hls4ml's exact ``auto`` accumulator) or a dict of ``weight``/``bias``/``result``/``accum``;
    other layers get ``default_precision``. With ``fix_softmax`` (default) the layer feeding a softmax
    gets ``ap_fixed<16,6,AP_RND,AP_SAT>`` unless given a precision of at most 18 bits, and the softmax
    tables a sane config; ``notes`` says so.
    """
    import hls4ml

    if backend.capitalize() not in BACKENDS:
        raise HlsError(f"backend {backend!r} is not supported: use {' or '.join(BACKENDS)}")
    backend = backend.capitalize()
    if io_type not in IO_TYPES:
        raise HlsError(f"io_type {io_type!r} is not supported: use {' or '.join(IO_TYPES)}")
    if int(reuse_factor) < 1:
        raise HlsError(f"reuse_factor must be a positive integer, got {reuse_factor}")
    default = hls_precision(default_precision)
    prepared = prepare_onnx(model)
    graph = prepared.graph
    outputs, bias_of, inits = _layers(graph)
    names = layer_name_map(model, prepared)
    input_name = graph.input[0].name
    known = set(outputs) | {input_name}
    specs: dict[str, dict[str, str]] = {}
    for key, value in (layer_precision or {}).items():
        name = key if key in known else names.get(key)
        if name is None or name in bias_of:
            raise HlsError(
                f"layer {key!r} is not in the model; name one of {sorted(set(names) | known - set(bias_of))}"
            )
        specs[name] = layer_spec(value, key)

    with contextlib.redirect_stdout(io.StringIO()):
        cfg = hls4ml.utils.config_from_onnx_model(
            prepared,
            granularity="name",
            backend=backend,
            default_precision=default,
            default_reuse_factor=int(reuse_factor),
        )
    if strategy:
        cfg["Model"]["Strategy"] = strategy
    elif int(reuse_factor) > 1:
        cfg["Model"]["Strategy"] = "Resource"  # hls4ml's Latency strategy ignores the reuse factor
    layers = cfg["LayerName"]
    notes: list[str] = []
    precisions: dict[str, dict[str, str]] = {}
    post_results: dict[str, str] = {}  # MatMul node -> Dense result precision, set after conversion

    # A QONNX model carries its precisions in Quant nodes: hls4ml derives the rest ("auto": exact sums).
    has_quant = any(n.op_type in ("Quant", "BipolarQuant") for n in graph.node)
    fill = "auto" if has_quant else default
    if has_quant:
        notes.append("QONNX model: precisions come from its Quant nodes; other layers are hls4ml's exact 'auto'")
    for node in graph.node:
        if node.name in bias_of or node.name not in layers or node.op_type in ("Quant", "BipolarQuant"):
            continue
        spec = specs.get(node.name, {})
        prec = layers[node.name].setdefault("Precision", {})
        chosen: dict[str, str] = {}
        if node.op_type in ("MatMul", "Conv") and any(t in inits for t in node.input[1:]):
            for k in ("weight", "bias"):
                chosen[k] = prec[k] = spec.get(k, fill)
            if "accum" in spec:
                chosen["accum"] = prec["accum"] = spec["accum"]
            chosen["result"] = spec.get("result", fill)
            if node.op_type == "MatMul":  # the bias Add fuses into the Dense only while its result is "auto"
                if chosen["result"] != "auto":
                    post_results[node.name] = chosen["result"]
                prec["result"] = "auto"
            else:
                prec["result"] = chosen["result"]
        else:
            prec["result"] = chosen["result"] = spec.get("result", fill)
            if "accum" in spec and "accum" in prec:
                chosen["accum"] = prec["accum"] = spec["accum"]
        precisions[node.name] = chosen
    if input_name in layers:
        layers[input_name].setdefault("Precision", {})["result"] = specs.get(input_name, {}).get("result", default)
        precisions = {input_name: {"result": layers[input_name]["Precision"]["result"]}, **precisions}

    if fix_softmax:
        _fix_softmax(graph, outputs, bias_of, specs, precisions, post_results, layers, notes)

    files = Path(out_dir)
    files.mkdir(parents=True, exist_ok=True)
    kwargs = {"part": part} if part else {}
    with contextlib.redirect_stdout(io.StringIO()):
        hls_model = hls4ml.converters.convert_from_onnx_model(
            prepared,
            output_dir=str(files),
            backend=backend,
            io_type=io_type,
            hls_config=cfg,
            clock_period=clock_period,
            **kwargs,
        )
    convert = hls4ml.backends.get_backend(backend).convert_precision_string
    for layer in hls_model.get_layers():  # hls4ml names the Dense it makes of MatMul_0 "Dense_MatMul_0"
        name = layer.name.removeprefix("Dense_")
        if name in post_results:
            var_type = layer.get_output_variable().type
            var_type.precision = _with_precision(var_type.precision, convert(post_results.pop(name)))
    if post_results:
        raise HlsError(f"hls4ml did not turn {sorted(post_results)} into Dense layers; cannot set their precision")
    # hls4ml renders the C++ configs (softmax's x_max - x type among them) during conversion: again, with ours
    hls_model.apply_flow(f"{backend.lower()}:apply_templates", reapply="single")
    return HlsProject(
        hls_model=hls_model,
        files=files,
        backend=backend,
        io_type=io_type,
        reuse_factor=int(reuse_factor),
        clock_period=float(clock_period),
        prepared=prepared,
        precisions=precisions,
        notes=notes,
        channels_last_input=_was_nchw(model, prepared),
    )


def _with_precision(target: object, source: object) -> object:
    """A copy of the backend's type object (it carries the C++ printer; the accumulator may share the
    original) with ``source``'s fixed-point parameters."""
    target = copy.deepcopy(target)
    for attr in ("width", "integer", "signed", "rounding_mode", "saturation_mode", "saturation_bits"):
        if not hasattr(source, attr):
            raise HlsError(f"result precision {source} is not fixed point")
        setattr(target, attr, getattr(source, attr))
    return target


def _was_nchw(model: object, prepared: object) -> bool:
    """True when prepare_onnx turned a 4D NCHW input into NHWC (predict then transposes for the user)."""
    from .frontend import _load

    def dims(proto: object) -> list[int]:
        return [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]

    before, after = dims(_load(model)), dims(prepared)
    return len(before) == 4 and before[1:] != after[1:]


def _fix_softmax(graph, outputs, bias_of, specs, precisions, post_results, layers, notes) -> None:
    producer = {out: name for name, out in outputs.items() if name not in bias_of}
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        src = producer.get(node.input[0])
        if src is None or src not in precisions:
            notes.append(f"softmax {node.name}: its input comes from outside any layer; check its precision")
            continue
        given = specs.get(src, {}).get("result")
        width = width_of(given) if given else None
        if given and width is not None and width <= SOFTMAX_MAX_INPUT_WIDTH:
            notes.append(f"softmax {node.name}: the layer feeding it ({src}) keeps the given result {given}")
        else:
            precisions[src]["result"] = SOFTMAX_INPUT
            if src in post_results or src in bias_of.values():  # a Dense with its bias fused: set after
                post_results[src] = SOFTMAX_INPUT
            else:
                layers[src]["Precision"]["result"] = SOFTMAX_INPUT
            if not given:
                why = "none was given"
            elif width is None:
                why = f"the given {given} lets hls4ml pick a full-width type"
            else:
                why = f"the given {given} is wider than {SOFTMAX_MAX_INPUT_WIDTH} bits"
            notes.append(
                f"softmax fix: the layer feeding softmax {node.name} ({src}) outputs {SOFTMAX_INPUT} ({why}); "
                "hls4ml's fixed-point softmax silently gives ~10 % accuracy on a wider input"
            )
        sm = layers[node.name]
        sm["Implementation"] = "stable"
        sm["TableSize"] = 1024
        sm.setdefault("Precision", {}).update(SOFTMAX_TABLE)
