"""Number formats for FPGA graphs: fixed point, INT8 and block floating point (MSFP).

The arithmetic lives in ``edge_module.numerics`` (images carry only edge_module); these are the format
objects users name, e.g. ``get_format("ap_fixed<16,6,AP_RND,AP_SAT>")``.
"""

from .base import FormatError, NumberFormat, QuantizedTensor
from .bfp import BlockFloatingPoint
from .fixed import FixedPoint
from .int8 import Int8
from .registry import available_formats, get_format, register_format

__all__ = [
    "BlockFloatingPoint",
    "FixedPoint",
    "FormatError",
    "Int8",
    "NumberFormat",
    "QuantizedTensor",
    "available_formats",
    "get_format",
    "register_format",
]
