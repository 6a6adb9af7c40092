"""Quantized FPGA graphs: formats, partitioning, bit-accurate emulation and HLS export."""
