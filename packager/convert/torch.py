"""PyTorch → ONNX with ``torch.onnx.export``.

Reads full pickled modules (``torch.save(model, path)``; the model's class must be importable, as
unpickling imports it) and TorchScript archives (``torch.jit.script(model).save(path)``). The
legacy TorchScript-based exporter is the default; ``ConvertOptions.dynamo`` selects the
``torch.export``-based one (needs ``onnxscript``). Every input and output gets a dynamic batch axis
(dim 0).

Unpickling a full module runs code from the file (``weights_only=False``): only convert models you
trust, as with any pickle.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from packager.convert import base
from packager.convert.base import Conversion, Converter, ConvertOptions, Sample, register_converter
from packager.convert.files import find_model_file
from packager.errors import EdgepackError, InvalidInputError

DEFAULT_OPSET = 17
DEFAULT_DYNAMO_OPSET = 18  # the dynamo exporter's lowest
# onnxruntime 1.31 refuses the IR versions newer onnx writes; IR 10 (onnx 1.16) is the newest we emit.
MAX_IR_VERSION = 10
MODEL_SUFFIXES = (".pt", ".pth", ".ptl")
_SAVE_HINT = (
    "save the full module with torch.save(model, path) (its class must be importable when converting) "
    "or, better, TorchScript with torch.jit.script(model).save(path)"
)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder (``torch.save`` zips have none)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.endswith("/constants.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load(torch: Any, path: Path) -> Any:
    """Load a TorchScript archive or a pickled module, with errors that say how to fix the file."""
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "torch.jit.load is deprecated" (2.10+)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise InvalidInputError(f"cannot load TorchScript model {path.name!r}: {_first_line(exc)}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise InvalidInputError(
            f"cannot unpickle PyTorch model {path.name!r}: its class cannot be imported here ({_first_line(exc)}). "
            "A pickled module needs the module that defines its class: install it or put it on PYTHONPATH, "
            "or save the model as TorchScript (torch.jit.script(model).save(path)), which needs no Python class"
        ) from None
    except Exception as exc:
        raise InvalidInputError(
            f"cannot read {path.name!r} as a PyTorch model ({type(exc).__name__}: {_first_line(exc)}); {_SAVE_HINT}"
        ) from None
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, Mapping):
        keys = ", ".join(map(str, list(obj)[:5])) + (", ..." if len(obj) > 5 else "")
        raise InvalidInputError(
            f"{path.name!r} holds a state_dict or checkpoint dict (keys: {keys}), not a model: weights alone cannot "
            f"be converted without the code that builds the network; {_SAVE_HINT}"
        )
    raise InvalidInputError(f"{path.name!r} holds a {type(obj).__name__}, not a torch.nn.Module; {_SAVE_HINT}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporters' progress prints, warnings and log lines off stdout/stderr (stdout may carry --json)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _float_dtype(torch: Any, model: Any) -> Any:
    """The dtype floating-point inputs are cast to: the model's first floating parameter's, else float32."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _ordered_inputs(model: Any, sample: Sample) -> list[np.ndarray]:
    """The sample's arrays in ``forward`` order (by parameter name when the keys match, else as given)."""
    if isinstance(sample, np.ndarray):
        return [sample]
    arrays = {k: np.asarray(v) for k, v in sample.items()}
    if not arrays:
        raise InvalidInputError("the sample holds no arrays")
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    if set(arrays) <= set(params):
        return [arrays[p] for p in params if p in arrays]
    return list(arrays.values())


def _input_names(n: int) -> list[str]:
    return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]


def _output_names(n: int) -> list[str]:
    return ["output"] if n == 1 else [f"output_{i}" for i in range(n)]


def _flatten(torch: Any, out: Any) -> list[Any]:
    """Output tensors in the order the exporters flatten them (tuples/lists in order, dicts by value)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in _flatten(torch, o)]
    if isinstance(out, Mapping):
        return [t for o in out.values() for t in _flatten(torch, o)]
    raise EdgepackError(f"the model returned a {type(out).__name__}; only tensors (or tuples/dicts of them) export")


def _fit_ir_version(onnx: Any, path: Path) -> None:
    """Lower the IR version to MAX_IR_VERSION when the exporter wrote newer but the opsets allow it."""
    model = onnx.load(str(path), load_external_data=False)
    if model.ir_version <= MAX_IR_VERSION:
        return
    max_opset = max(op for _, ir, op, *_ in onnx.helper.VERSION_TABLE if ir <= MAX_IR_VERSION)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > max_opset:
        raise EdgepackError(
            f"the exported model uses opset {opset}, which needs ONNX IR version {model.ir_version}; onnxruntime "
            f"1.31 reads IR ≤ {MAX_IR_VERSION} (opset ≤ {max_opset}): pass --opset {max_opset} or lower"
        )
    model.ir_version = MAX_IR_VERSION
    onnx.save(model, str(path))


@register_converter
class TorchToOnnx(Converter):
    framework = "pytorch"
    target = "onnx"

    def convert(self, src: Path, sample: Sample | None, options: ConvertOptions, workdir: Path) -> Conversion:
        torch = base.require("torch", "torch", "PyTorch conversion")
        onnx = base.require("onnx", "torch", "PyTorch conversion")
        if options.dynamo:
            base.require("onnxscript", "torch", "The dynamo ONNX exporter (--dynamo)")

        if sample is None:
            if options.input_shape is None:
                raise InvalidInputError(
                    "converting a PyTorch model needs a sample input to trace it: register the model with "
                    "sample_input= (--sample-input) or pass --input-shape or --sample"
                )
            sample = base.random_sample(tuple(options.input_shape))

        model = _load(torch, find_model_file(Path(src), MODEL_SUFFIXES, "PyTorch model"))
        model.eval()
        is_script = isinstance(model, torch.jit.ScriptModule)
        if options.dynamo and is_script:
            raise InvalidInputError(
                "the dynamo exporter cannot export TorchScript models; convert without --dynamo (the default "
                "exporter handles TorchScript), or register the eager module saved with torch.save(model, path)"
            )

        # Floating inputs take the model's dtype (a float64 sample, e.g. from sklearn, would not run).
        float_dtype = _float_dtype(torch, model)
        tensors = []
        for a in _ordered_inputs(model, sample):
            t = torch.from_numpy(np.ascontiguousarray(a))
            tensors.append(t.to(float_dtype) if t.is_floating_point() else t)
        names_in = _input_names(len(tensors))
        feeds = {n: t.numpy() for n, t in zip(names_in, tensors, strict=True)}

        try:
            with torch.no_grad():
                outputs = _flatten(torch, model(*tensors))
        except EdgepackError:
            raise
        except Exception as exc:
            shapes = ", ".join(f"{n} {list(a.shape)} {a.dtype}" for n, a in feeds.items())
            raise InvalidInputError(
                f"the PyTorch model fails on the sample ({shapes}): {type(exc).__name__}: {_first_line(exc)}; "
                "give a sample (or --input-shape) of the shape the model's forward() expects"
            ) from None
        names_out = _output_names(len(outputs))
        expected = [o.detach().cpu().numpy() for o in outputs]

        opset = options.opset or (DEFAULT_DYNAMO_OPSET if options.dynamo else DEFAULT_OPSET)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "model.onnx"
        kwargs: dict[str, Any] = {
            "input_names": names_in,
            "output_names": names_out,
            "opset_version": opset,
        }
        if options.dynamo:
            batch = torch.export.Dim("batch")
            kwargs.update(dynamo=True, dynamic_shapes=tuple({0: batch} for _ in tensors), external_data=False)
            converter = "torch.onnx.dynamo"
        else:
            axes = {n: {0: "batch"} for n in (*names_in, *names_out)}
            kwargs.update(dynamo=False, dynamic_axes=axes, do_constant_folding=True)
            converter = "torch.onnx"
        try:
            with torch.no_grad(), _quiet_exporter():
                torch.onnx.export(model, tuple(tensors), str(path), verbose=False, **kwargs)
        except Exception as exc:
            how = "" if options.dynamo or is_script else "; the dynamo exporter (--dynamo) may handle it"
            raise EdgepackError(
                f"{converter} could not export the model (opset {opset}): {type(exc).__name__}: {_first_line(exc)}{how}"
            ) from exc
        if not path.is_file():
            raise EdgepackError(f"{converter} wrote no ONNX file")

        _fit_ir_version(onnx, path)
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            raise EdgepackError(f"{converter} wrote an invalid ONNX model: {_first_line(exc)}") from None
        written = onnx.load(str(path), load_external_data=False)
        graph_outputs = [o.name for o in written.graph.output]
        if len(graph_outputs) != len(expected):
            raise EdgepackError(
                f"the exported model has {len(graph_outputs)} outputs, the PyTorch model returned {len(expected)}"
            )
        actual_opset = next((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), opset)
        return Conversion(
            path=path,
            converter=converter,
            converter_version=torch.__version__,
            feeds=feeds,
            expected=expected,
            opset=actual_opset,
        )
