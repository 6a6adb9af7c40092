"""Export quantized graphs: QONNX (``Quant`` nodes, for FINN/hls4ml) and ONNX QDQ int8 (for everything else)."""

from ._graph import ExportError
from .qdq import QdqExport, export_qdq
from .qonnx import QonnxExport, export_qonnx, run_qonnx

__all__ = ["ExportError", "QdqExport", "QonnxExport", "export_qdq", "export_qonnx", "run_qonnx"]
