"""onnxruntime as the emulator's engine for large exact float32 products (``dot.MatmulBackend``).

The emulator's integer and block-floating-point dot products run as float32 matrix products whose
every partial sum is exact, so any summation order gives the same bits; onnxruntime's MLAS kernels do
them about twice as fast as numpy's BLAS on one thread (measured on a CIFAR-sized CNN at batch 64: the
18 block products of a 32->64-channel 3x3 convolution 10.1 -> 7.2 ms in msfp16, the int8 product
6.3 -> 3.3 ms). Three tiny graphs with dynamic shapes serve every layer (``MATMUL``: ``y = a @ b``;
``BLOCK_PRODUCTS``: ``y = transpose(x, (1, 0, 2)) @ w``; ``ORDERED_BLOCK_SUM``: a ``Scan`` over the blocks
with ``acc = Gemm(x[b], w[b], acc, beta=1)``), kept as serialized ONNX in hex (opset 13, IR 7) since images
carry onnxruntime but not the onnx package; graph optimizations are off.

``ordered_block_sum`` sums exact block products in block order in float32 without writing them out: each
Gemm step is ``fl(acc + P_b)`` with ``P_b`` the block's exact product, because MLAS's SGEMM kernels sum
a K-slice of at most ``MLAS_SGEMM_STRIDEK`` (128; the stride only grows or shrinks to at least K) in
registers from zero (every partial sum exact, so any order or FMA gives ``P_b``) and add it to C once;
``0 + P_0 = P_0`` (a zero block product is +0 on either engine: both sum from +0). That is
``dot.sum_in_order`` of the products bit for bit. It rests on MLAS internals: its single-row path
(``M == 1``, a GEMV kernel that accumulates into C term by term) is avoided by padding one row to two,
blocks wider than the stride are summed on numpy, and the tests
(``tests/edge_module/scoring/test_ort_matmul.py``) are the guard for the rest.
"""

from __future__ import annotations

import numpy as np

MATMUL = bytes.fromhex(
    "08071208656467657061636b3a680a110a01610a016212017922064d61744d756c120e65786163745f70726f64756374735a"
    "150a016112100a0e0801120a0a031201720a0312016b5a150a016212100a0e0801120a0a0312016b0a0312016d62150a0179"
    "12100a0e0801120a0a031201720a0312016d42040a00100d"
)
BLOCK_PRODUCTS = bytes.fromhex(
    "08071208656467657061636b3a9d010a230a01781202787422095472616e73706f73652a0f0a047065726d400140004002a0"
    "01070a120a0278740a017712017922064d61744d756c120e65786163745f70726f64756374735a1a0a017812150a13080112"
    "0f0a031201720a0312016e0a0312016b5a1a0a017712150a130801120f0a0312016e0a0312016b0a0312016d621a0a017912"
    "150a130801120f0a0312016e0a031201720a0312016d42040a00100d"
)
ORDERED_BLOCK_SUM = bytes.fromhex(
    "08071208656467657061636b3ade020ade010a057a65726f730a01780a017712017922045363616e2aad010a04626f647932"
    "a1010a2f0a0278620a0277620a066163635f696e12076163635f6f7574220447656d6d2a0e0a0462657461150000803fa001"
    "011205626c6f636b5a1a0a066163635f696e12100a0e0801120a0a031201720a0312016d5a160a02786212100a0e0801120a"
    "0a031201720a0312016b5a160a02776212100a0e0801120a0a0312016b0a0312016d621b0a076163635f6f757412100a0e08"
    "01120a0a031201720a0312016da001052a160a0f6e756d5f7363616e5f696e707574731802a0010212116f7264657265645f"
    "626c6f636b5f73756d5a190a057a65726f7312100a0e0801120a0a031201720a0312016d5a1a0a017812150a130801120f0a"
    "0312016e0a031201720a0312016b5a1a0a017712150a130801120f0a0312016e0a0312016b0a0312016d62150a017912100a"
    "0e0801120a0a031201720a0312016d42040a00100d"
)
MLAS_STRIDE_K = 128  # MLAS_SGEMM_STRIDEK: blocks up to this long are summed in registers and added to C once
ZEROS_KEPT = 8  # zero initial sums kept per (rows, M) shape: a few chunk sizes


class OrtMatmul:
    """``dot.MatmulBackend`` on onnxruntime's CPU provider (thread-safe: sessions are)."""

    def __init__(self, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.threads = threads
        self._matmul = ort.InferenceSession(MATMUL, options, providers=providers)
        self._blocks = ort.InferenceSession(BLOCK_PRODUCTS, options, providers=providers)
        self._ordered = ort.InferenceSession(ORDERED_BLOCK_SUM, options, providers=providers)
        self._zeros: dict[tuple[int, int], np.ndarray] = {}

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._matmul.run(None, {"a": a, "b": b})[0]

    def block_products(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._blocks.run(None, {"x": x, "w": w})[0]

    def ordered_block_sum(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``(R, M)``: the products of ``x (n_blocks, R, k)`` block by block with ``w (n_blocks, k, M)``
        (each exact) summed in block order in float32, as ``dot.sum_in_order`` sums them (see the module
        docstring); C-contiguous float32 in and out."""
        from edge_module.numerics import dot

        n_blocks, rows, k = x.shape
        if n_blocks == 0 or rows == 0:
            return np.zeros((rows, w.shape[2]), np.float32)
        if k > MLAS_STRIDE_K:  # numpy's products and sum
            return dot.sum_in_order(np.matmul(x, w))
        if rows == 1:  # MLAS's M == 1 kernel adds term by term into C: two rows take the SGEMM kernels
            return self.ordered_block_sum(np.concatenate([x, np.zeros_like(x)], axis=1), w)[:1]
        zeros = self._zeros.get((rows, w.shape[2]))
        if zeros is None:
            zeros = np.zeros((rows, w.shape[2]), np.float32)
            zeros.flags.writeable = False
            if len(self._zeros) < ZEROS_KEPT:
                self._zeros[(rows, w.shape[2])] = zeros
        return self._ordered.run(None, {"zeros": zeros, "x": x, "w": w})[0]


def install(threads: int | None = None) -> OrtMatmul:
    """Make onnxruntime the emulator's engine for large exact products (``threads``: its intra-op
    threads, None for onnxruntime's default); returns it."""
    from edge_module.numerics import dot

    backend = OrtMatmul(threads)
    dot.set_backend(backend)
    return backend


def uninstall() -> None:
    """Back to numpy alone."""
    from edge_module.numerics import dot

    dot.set_backend(None)
