"""Quantized FPGA graphs: formats, partitioning, calibration, bit-accurate emulation and HLS export.

``compile_onnx(model, format="fixed<16,6>", calibration=samples, overrides=None) -> CompiledModel``
(``.predict(x)``, ``.run(feeds)``, ``.report``, ``.save(dir)``, ``CompiledModel.load(dir)``). The names
below load lazily, so ``fpga.formats`` does not pull in onnx and onnxruntime.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "CompiledModel": "fpga.model",
    "compile_onnx": "fpga.model",
    "load_graph": "fpga.graph",
    "partition": "fpga.partition",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fpga' has no attribute {name!r}")
    return getattr(import_module(module), name)
