"""Bit-exact number-format kernels (numpy only): fixed point, INT8 and block floating point.

The FPGA runtime in images emulates quantized graphs with these; ``fpga.formats`` builds on them at
compile time, so there is one implementation. Import the sub-modules (``edge_module.numerics.fixed``,
``.int8``, ``.bfp``) where needed: nothing here is imported by the server at startup.
"""
