"""HLS export with hls4ml: prepare an ONNX model, write and compile the project, estimate resources.

``export_hls(model, out_dir, ...)`` -> ``HlsProject`` (``compile()`` g++ C simulation, ``predict(x)``,
``write()``, ``files``, ``report()``). Estimates are estimates (``kind: "estimate"``), never synthesis.
"""

from .estimates import estimate, format_estimates
from .frontend import HlsError, annotate_initializers, layer_name_map, prepare_onnx
from .precision import SOFTMAX_INPUT, hls_precision
from .project import HlsProject, export_hls

__all__ = [
    "SOFTMAX_INPUT",
    "HlsError",
    "HlsProject",
    "annotate_initializers",
    "estimate",
    "export_hls",
    "format_estimates",
    "hls_precision",
    "layer_name_map",
    "prepare_onnx",
]
