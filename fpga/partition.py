"""Split a graph into the part the accelerator runs and the part the host runs.

The rule (Brainwave's featurizer/classifier split): walk the layers in topological order; a layer goes
to the accelerator when its op has an accelerator kernel with the attributes it uses **and** every
activation it reads is a model input or comes from an accelerator layer. Everything else runs on the
host: unsupported ops (Softmax, pre/post-processing...), supported ops with unsupported attributes, and
every layer after a host layer. The accelerator part is thus the largest region reachable from the
inputs through supported layers; it runs first, then the host part reads its outputs (and any model
input it needs). Both parts are also written as ONNX models (cut from the original model, so the host
part runs in onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
import onnx.utils

from .graph import Graph, Layer

ACCELERATOR_OPS = (
    "Conv",
    "Dense",
    "Relu",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Add",
    "Concat",
    "Flatten",
    "Reshape",
)


def _ints(layer: Layer, key: str, default: list[int]) -> list[int]:
    return [int(v) for v in layer.attrs.get(key, default)]


def _rank(graph: Graph, tensor: str) -> int | None:
    shape = graph.shapes.get(tensor)
    return None if shape is None else len(shape)


def _check_2d_window(layer: Layer, graph: Graph, kernel: list[int]) -> str | None:
    if len(kernel) != 2 or _rank(graph, layer.inputs[0]) not in (4, None):
        return "only 2-D windows on NCHW tensors are supported"
    if layer.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return f"auto_pad={layer.attrs['auto_pad']} is not supported (export with explicit pads)"
    if layer.attrs.get("ceil_mode", 0):
        return "ceil_mode=1 is not supported"
    return None


def _conv(layer: Layer, graph: Graph) -> str | None:
    if "weight" not in layer.weights:
        return "its weights are not constant initializers"
    if layer.weights["weight"].ndim != 4:
        return f"only 2-D convolutions are supported (weight rank {layer.weights['weight'].ndim})"
    if int(layer.attrs.get("group", 1)) != 1:
        return f"group={layer.attrs['group']} (grouped/depthwise convolution) is not supported"
    return _check_2d_window(layer, graph, list(layer.weights["weight"].shape[2:]))


def _dense(layer: Layer, graph: Graph) -> str | None:
    if _rank(graph, layer.inputs[0]) not in (2, None):
        return f"only 2-D inputs (batch, features) are supported, got rank {_rank(graph, layer.inputs[0])}"
    return None


def _pool(layer: Layer, graph: Graph) -> str | None:
    if layer.extra_outputs:
        return "the Indices output is not supported"
    if any(d != 1 for d in _ints(layer, "dilations", [1, 1])):
        return f"dilations={_ints(layer, 'dilations', [])} are not supported"
    if int(layer.attrs.get("storage_order", 0)):
        return "storage_order=1 is not supported"
    return _check_2d_window(layer, graph, _ints(layer, "kernel_shape", []))


def _gap(layer: Layer, graph: Graph) -> str | None:
    return None if _rank(graph, layer.inputs[0]) in (4, None) else "only NCHW inputs are supported"


def _add(layer: Layer, graph: Graph) -> str | None:
    if layer.weights or len(layer.inputs) != 2:
        return "only the sum of two computed tensors is supported (not a constant operand)"
    a, b = (graph.shapes.get(name) for name in layer.inputs)
    if a is not None and b is not None and a != b:
        return f"broadcasting {a} + {b} is not supported"
    return None


def _concat(layer: Layer, graph: Graph) -> str | None:
    if layer.weights:
        return "constant operands are not supported"
    return None if int(layer.attrs.get("axis", 1)) != 0 else "concatenation along the batch axis is not supported"


def _flatten(layer: Layer, graph: Graph) -> str | None:
    return None if int(layer.attrs.get("axis", 1)) == 1 else f"axis={layer.attrs['axis']} is not supported (only 1)"


def _reshape(layer: Layer, graph: Graph) -> str | None:
    if "1" not in layer.weights:
        return "its target shape is computed, not constant (export with a constant shape, e.g. nn.Flatten)"
    shape = [int(v) for v in layer.weights["1"]]
    if int(layer.attrs.get("allowzero", 0)):
        return "allowzero=1 is not supported"
    if not shape or shape[0] not in (0, -1) or (shape[0] == -1 and -1 in shape[1:]):
        return f"shape {shape} does not keep the batch dimension (use 0 or -1 first)"
    layer.attrs["shape"] = shape
    return None


CHECKS: dict[str, Callable[[Layer, Graph], str | None]] = {
    "Conv": _conv,
    "Dense": _dense,
    "Relu": lambda layer, graph: None,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _gap,
    "Add": _add,
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
}


def unsupported_reason(layer: Layer, graph: Graph) -> str | None:
    """Why the accelerator cannot run ``layer`` by itself, or None when it can."""
    check = CHECKS.get(layer.op)
    if check is None:
        return f"op type {layer.op} has no accelerator kernel (supported: {', '.join(ACCELERATOR_OPS)})"
    if layer.extra_outputs and layer.op not in ("MaxPool", "AveragePool"):
        return "layers with more than one output are not supported"
    return check(layer, graph)


@dataclass
class HostOp:
    """A layer left to the host and why."""

    name: str
    op: str
    reason: str
    nodes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "op": self.op, "reason": self.reason, "nodes": self.nodes}


@dataclass
class Partition:
    """The split of a graph: ``accelerator`` layers (in order), ``host`` layers with reasons,
    ``boundary``: the accelerator's outputs (what the host reads, plus model outputs computed there)."""

    graph: Graph
    accelerator: list[Layer]
    host: list[HostOp]
    boundary: list[str]

    @property
    def host_inputs(self) -> list[str]:
        """What the host part reads: accelerator outputs and model inputs."""
        host_names = {op.name for op in self.host}
        read = {name for layer in self.graph.layers if layer.name in host_names for name in layer.inputs}
        return [n for n in self.boundary if n in read] + [n for n in self.graph.inputs if n in read]

    @property
    def host_outputs(self) -> list[str]:
        produced = self.graph.producer()
        host_names = {op.name for op in self.host}
        return [n for n in self.graph.outputs if n in produced and produced[n].name in host_names]

    def accelerator_model(self) -> onnx.ModelProto | None:
        """The float accelerator part as an ONNX model (model inputs -> ``boundary``), or None when empty."""
        if not self.accelerator:
            return None
        return onnx.utils.Extractor(self.graph.model).extract_model(list(self.graph.inputs), list(self.boundary))

    def host_model(self) -> onnx.ModelProto | None:
        """The host part as an ONNX model (``host_inputs`` -> its model outputs), or None when empty."""
        if not self.host:
            return None
        return onnx.utils.Extractor(self.graph.model).extract_model(self.host_inputs, self.host_outputs)

    def report(self) -> dict[str, object]:
        return {
            "rule": "accelerator: supported layers reachable from the model inputs through supported layers; "
            "host: the rest",
            "accelerator": [{"name": lay.name, "op": lay.op, "nodes": lay.source} for lay in self.accelerator],
            "host": [op.as_dict() for op in self.host],
            "boundary": list(self.boundary),
        }


def partition(graph: Graph) -> Partition:
    """Split ``graph`` by the rule in the module docstring."""
    on_accel = set(graph.inputs)
    produced = graph.producer()
    accelerator: list[Layer] = []
    host: list[HostOp] = []
    for layer in graph.layers:
        reason = unsupported_reason(layer, graph)
        if reason is None:
            late = [name for name in layer.inputs if name not in on_accel]
            if late:
                source = produced.get(late[0])
                reason = f"after a host op: its input {late[0]} is computed on the host" + (
                    f" (by {source.name}, {source.op})" if source else ""
                )
        if reason is None:
            accelerator.append(layer)
            on_accel.add(layer.output)
        else:
            host.append(HostOp(layer.name, layer.op, reason, list(layer.source)))
    host_reads = {name for layer in graph.layers if layer not in accelerator for name in layer.inputs}
    boundary = [lay.output for lay in accelerator if lay.output in host_reads or lay.output in graph.outputs]
    return Partition(graph, accelerator, host, boundary)
