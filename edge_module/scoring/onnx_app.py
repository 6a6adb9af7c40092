"""The no-code app's former home, when it served ONNX models only: the names stay importable from here.

The app is :class:`edge_module.scoring.model_app.ModelScoringApp` (``OnnxScoringApp`` is the same
class); runtimes are picked by :mod:`edge_module.scoring.registry`.
"""

from edge_module.scoring.model_app import (
    FoundModel,
    ModelScoringApp,
    OnnxScoringApp,
    discover_models,
    discover_onnx_models,
    tensor_example,
    tensor_schema,
)
from edge_module.scoring.registry import ModelDirError

__all__ = [
    "FoundModel",
    "ModelDirError",
    "ModelScoringApp",
    "OnnxScoringApp",
    "discover_models",
    "discover_onnx_models",
    "tensor_example",
    "tensor_schema",
]
