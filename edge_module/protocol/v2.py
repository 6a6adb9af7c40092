"""The V2 Open Inference Protocol's infer message: JSON tensors and Triton's binary-tensor extension.

A request body is a JSON document, optionally followed by raw tensor bytes: then the
``Inference-Header-Content-Length`` header gives the JSON part's length and each binary input
carries ``"parameters": {"binary_data_size": N}`` (tensors follow in input order). Outputs are sent
as binary when the request asks (``"parameters": {"binary_data_output": true}`` or
``{"binary_data": true}`` on a requested output); the reply then carries the same header.
``BYTES`` tensors in binary form are 4-byte little-endian lengths, each followed by the bytes.

A declared shape is a claim of the client's: it is checked against the bytes present before anything
is allocated for it (every element takes at least a byte of the body, a binary ``BYTES`` element at
least 4), so a small body cannot make the server allocate for a huge shape.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from edge_module.runtime import NUMPY_TO_V2, V2_TO_NUMPY, BadInputError, ModelRuntime, TensorSpec

_LEN = struct.Struct("<I")
_MAX_EMPTY_EXTENT = 2**32  # a shape with a zero dimension holds nothing; its other dimensions stay sane
_OPTS = orjson.OPT_SERIALIZE_NUMPY


class InferRequest:
    """A decoded infer request: named input arrays plus what the client wants back."""

    __slots__ = ("binary_output", "id", "inputs", "outputs")

    def __init__(
        self,
        inputs: dict[str, np.ndarray],
        request_id: Any,
        outputs: dict[str, bool] | None,
        binary_output: bool,
    ):
        self.inputs = inputs
        self.id = request_id
        self.outputs = outputs  # requested output name -> binary?; None = all
        self.binary_output = binary_output

    @property
    def rows(self) -> int:
        """The batch size (first dimension of the first input)."""
        first = next(iter(self.inputs.values()), None)
        return int(first.shape[0]) if first is not None and first.ndim else 1


def _bytes_tensor(raw: memoryview, count: int, name: str) -> np.ndarray:
    if count * _LEN.size > len(raw):  # before allocating for the declared count
        raise BadInputError(
            f"input '{name}': {len(raw)} bytes of binary BYTES data cannot hold {count} elements "
            f"({_LEN.size}-byte length each)"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise BadInputError(f"input '{name}': binary BYTES data ends after {i} of {count} elements")
        (n,) = _LEN.unpack_from(raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise BadInputError(f"input '{name}': binary BYTES element {i} runs past the data")
        out[i] = bytes(raw[offset : offset + n])
        offset += n
    if offset != len(raw):
        raise BadInputError(f"input '{name}': {len(raw) - offset} bytes left after {count} BYTES elements")
    return out


def serialize_bytes_tensor(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.ravel():
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


class InputSpec:
    """What decoding checks per input, precomputed once per model."""

    __slots__ = ("datatype", "dtype", "fixed", "name", "rank", "shape_text")

    def __init__(self, spec: TensorSpec):
        self.name = spec.name
        self.datatype = spec.datatype
        self.dtype = V2_TO_NUMPY.get(spec.datatype)
        self.rank = len(spec.shape)
        self.fixed = tuple((axis, size) for axis, size in enumerate(spec.shape) if size >= 0)
        self.shape_text = "[" + ", ".join(str(d) for d in spec.shape) + "]"


def input_table(specs: Iterable[TensorSpec]) -> dict[str, InputSpec]:
    return {spec.name: InputSpec(spec) for spec in specs}


def _bad_shape(name: str, value: Any) -> BadInputError:
    return BadInputError(f"input '{name}': 'shape' must be a list of non-negative integers, got {value!r}")


def decode_request(body: bytes, header_length: int | None, table: Mapping[str, InputSpec]) -> InferRequest:
    """Parse an infer body against the model's inputs (from :func:`input_table`).

    Raise :class:`BadInputError` (400) naming the problem and the input: unknown or missing names,
    a datatype other than the model's, a shape that does not fit, data that does not fill the shape.
    """
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadInputError(
                f"Inference-Header-Content-Length {header_length} does not fit the {len(body)}-byte body"
            )
        view = memoryview(body)
        head, binary = view[:header_length], view[header_length:]
    else:
        head, binary = body, b""
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise BadInputError(f"malformed JSON: {exc}") from None
    if type(doc) is not dict:
        raise BadInputError("the infer request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise BadInputError("the infer request needs a non-empty 'inputs' list")
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise BadInputError("'parameters' must be an object")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in raw_inputs:
        if type(item) is not dict:
            raise BadInputError("each input must be an object with name, shape, datatype and data")
        name = item.get("name")
        spec = table.get(name) if type(name) is str else None
        if spec is None:
            if type(name) is not str:
                raise BadInputError("each input needs a string 'name'")
            raise BadInputError(f"unknown input '{name}'; the model takes {sorted(table)}")
        if name in inputs:
            raise BadInputError(f"input '{name}' is given twice")
        shape = item.get("shape")
        if type(shape) is not list:
            raise _bad_shape(name, shape)
        for d in shape:
            if type(d) is not int or d < 0:
                raise _bad_shape(name, shape)
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
                raise BadInputError(f"input '{name}': unknown datatype {datatype!r}; use one of {sorted(V2_TO_NUMPY)}")
            raise BadInputError(f"input '{name}': expected datatype {spec.datatype}, got {datatype}")
        if len(shape) != spec.rank:
            raise BadInputError(f"input '{name}': expected shape {spec.shape_text}, got {shape}")
        for axis, size in spec.fixed:
            if shape[axis] != size:
                raise BadInputError(f"input '{name}': expected shape {spec.shape_text}, got {shape}")
        count = math.prod(shape)
        if count > len(body) or (count == 0 and math.prod(d for d in shape if d) > _MAX_EMPTY_EXTENT):
            raise BadInputError(
                f"input '{name}': shape {shape} declares {count} elements, more than the {len(body)}-byte body holds"
                if count
                else f"input '{name}': shape {shape} is empty but its other dimensions are out of range"
            )
        dtype = spec.dtype
        iparams = item.get("parameters")
        size = iparams.get("binary_data_size") if type(iparams) is dict else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise BadInputError(f"input '{name}': binary_data_size {size!r} does not fit the binary part")
            raw = binary[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                arr = _bytes_tensor(raw, count, name)  # type: ignore[arg-type]
            else:
                if size != count * dtype.itemsize:  # type: ignore[union-attr]
                    raise BadInputError(
                        f"input '{name}': {size} bytes of binary data do not fill shape {shape} of {datatype}"
                    )
                arr = np.frombuffer(raw, dtype=dtype)
        else:
            data = item.get("data")
            if data is None:
                raise BadInputError(f"input '{name}' has no 'data'")
            try:
                if datatype == "BYTES":
                    flat = data if type(data) is list else [data]
                    arr = np.empty(len(flat), dtype=object)
                    for i, v in enumerate(flat):
                        arr[i] = v.encode("utf-8") if isinstance(v, str) else v
                else:
                    arr = np.asarray(data, dtype=dtype)
            except (ValueError, TypeError, OverflowError) as exc:
                raise BadInputError(f"input '{name}': data does not convert to {datatype}: {exc}") from None
            if arr.size != count:
                raise BadInputError(f"input '{name}': {arr.size} values do not fill shape {shape}")
        inputs[name] = arr.reshape(shape)
    if offset != len(binary):
        raise BadInputError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    if len(inputs) != len(table):
        missing = [n for n in table if n not in inputs]
        raise BadInputError(f"missing input(s) {missing}; the model takes {sorted(table)}")

    binary_output = bool(params.get("binary_data_output", False)) if params else False
    outputs: dict[str, bool] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if type(raw_outputs) is not list:
            raise BadInputError("'outputs' must be a list")
        outputs = {}
        for out in raw_outputs:
            if type(out) is not dict or type(out.get("name")) is not str:
                raise BadInputError("each requested output needs a string 'name'")
            oparams = out.get("parameters") or {}
            outputs[out["name"]] = bool(oparams.get("binary_data", binary_output)) if type(oparams) is dict else False
    return InferRequest(inputs, doc.get("id"), outputs, binary_output)


def encode_response(
    model: str, version: str | None, request: InferRequest, results: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The reply body and, when it carries binary tensors, the JSON part's length."""
    if request.outputs is None and not request.binary_output:  # the common case: every output, as JSON
        outs = []
        for name, arr in results.items():
            datatype = NUMPY_TO_V2.get(arr.dtype) if type(arr) is np.ndarray else None
            if datatype is None or datatype == "BYTES" or datatype == "FP16":
                break  # the general path below knows what to do
            outs.append({"name": name, "datatype": datatype, "shape": arr.shape, "data": arr.ravel()})
        else:
            doc = {"model_name": model, "model_version": version or "", "outputs": outs}
            if request.id is not None:
                doc["id"] = request.id
            return orjson.dumps(doc, option=_OPTS), None
    wanted: Sequence[str]
    if request.outputs is None:
        wanted = list(results)
    else:
        unknown = [n for n in request.outputs if n not in results]
        if unknown:
            raise BadInputError(f"unknown output(s) {unknown}; the model gives {sorted(results)}")
        wanted = list(request.outputs)
    outs = []
    blobs: list[bytes] = []
    for name in wanted:
        arr = np.asarray(results[name])
        datatype = NUMPY_TO_V2.get(arr.dtype)
        if datatype is None:
            if arr.dtype.kind in "USO":
                datatype = "BYTES"
            else:
                raise BadInputError(f"output '{name}' has dtype {arr.dtype}, which V2 cannot carry")
        binary = request.outputs[name] if request.outputs is not None else request.binary_output
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            blob = serialize_bytes_tensor(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.ravel()]
        elif datatype == "FP16":
            entry["data"] = arr.astype(np.float32).ravel()
        else:
            entry["data"] = np.ascontiguousarray(arr).ravel()
        outs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version or "", "outputs": outs}
    if request.id is not None:
        doc["id"] = request.id
    head = orjson.dumps(doc, option=_OPTS)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def model_metadata(runtime: ModelRuntime) -> dict[str, Any]:
    return {
        "name": runtime.name,
        "versions": [runtime.version] if runtime.version else [],
        "platform": runtime.platform,
        "inputs": [spec.to_dict() for spec in runtime.inputs],
        "outputs": [spec.to_dict() for spec in runtime.outputs],
    }
