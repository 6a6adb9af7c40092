"""INT8 quantization of registered ONNX models (onnxruntime.quantization): QDQ static or dynamic.

from packager.quantize import quantize_model
result = quantize_model(ws, "digits-onnx", format="qdq", per_channel=True, labels="test.npz")
result.model        # the registered INT8 model, e.g. digits-onnx-int8:1
result.report.to_dict()
"""

from packager.quantize.core import (
    FORMATS,
    METHODS,
    Latency,
    Progress,
    QuantizationError,
    QuantizeReport,
    QuantizeResult,
    QuantizeWarning,
    quantize_model,
)
from packager.quantize.measure import OutputDiff

__all__ = [
    "FORMATS",
    "METHODS",
    "Latency",
    "OutputDiff",
    "Progress",
    "QuantizationError",
    "QuantizeReport",
    "QuantizeResult",
    "QuantizeWarning",
    "quantize_model",
]
