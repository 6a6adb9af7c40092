"""What ``/score`` runs: a v1 entry script, or no-code scoring of the models (ONNX, TFLite...).

``build_app(entry_script, source_dir, model_dir)`` picks: an :class:`EntryScriptApp` when a script
is given (or ``AZUREML_ENTRY_SCRIPT`` is set), else a :class:`ModelScoringApp` over the model
directory (or ``AZUREML_MODEL_DIR``), each model on the runtime its files need
(:mod:`edge_module.scoring.registry`). Call ``load()`` on the result before serving.
"""

from __future__ import annotations

import os

from edge_module.runtime import ScoringApp
from edge_module.scoring.entry_script import ENTRY_SCRIPT_ENV, EntryScriptApp, EntryScriptError
from edge_module.scoring.model_app import ModelScoringApp, OnnxScoringApp, discover_models, discover_onnx_models
from edge_module.scoring.onnx_runtime import OnnxRuntime
from edge_module.scoring.registry import ModelDirError, RuntimeOptions, register_runtime, runtime_for


def build_app(
    entry_script: str | None = None,
    source_dir: str | None = None,
    model_dir: str | None = None,
    *,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    serialize_runs: bool = False,
    fpga_device: str | None = None,
    fpga_driver: str | None = None,
) -> ScoringApp:
    """The scoring app for a deployment (not loaded yet).

    ``intra_op_threads``/``inter_op_threads`` size onnxruntime's thread pools for the ONNX app
    (None: onnxruntime's defaults; 1 is fastest for small models under concurrent requests);
    ``serialize_runs`` makes an entry script's ``run()`` one at a time; ``fpga_device``/``fpga_driver``
    go to FPGA packages' runtime (:mod:`edge_module.scoring.fpga_runtime`)."""
    script = entry_script or os.environ.get(ENTRY_SCRIPT_ENV) or None
    if script:
        return EntryScriptApp(script, source_dir, model_dir, serialize_runs=serialize_runs)
    return ModelScoringApp(
        model_dir,
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        fpga_device=fpga_device,
        fpga_driver=fpga_driver,
    )


__all__ = [
    "EntryScriptApp",
    "EntryScriptError",
    "ModelDirError",
    "ModelScoringApp",
    "OnnxRuntime",
    "OnnxScoringApp",
    "RuntimeOptions",
    "build_app",
    "discover_models",
    "discover_onnx_models",
    "register_runtime",
    "runtime_for",
]
