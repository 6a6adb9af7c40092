"""glibc malloc thresholds for the emulator: keep freed temporaries in the heap instead of unmapping them.

By default glibc serves allocations above 128 KiB with ``mmap`` (raising the threshold only as such
blocks are freed) and returns freed heap above 128 KiB to the system, so the emulator's per-batch
temporaries (patch matrices, block products) are page-faulted again on every batch: measured on a
2-core machine, a fresh process emulating the digits CNN at batch 64 took 500-1000 us per batch in
int8 against ~225 us with the thresholds raised (a CIFAR-sized CNN: 18.5 ms against 14.6 ms).
``keep_freed_memory`` raises them in the running process (``mallopt``), as the environment variables
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would at start; those variables, when set,
win (nothing is changed). The cost: up to ``trim`` bytes of freed memory stay with the process.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # the ceiling of glibc's own dynamic threshold on 64-bit
TRIM_THRESHOLD = 64 << 20
ENV_NAMES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_done: bool | None = None


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they were set (now or before),
    False when the environment sets them itself or the C library is not glibc (musl has no ``mallopt``)."""
    global _done
    if _done is not None:
        return _done
    if any(os.environ.get(name) for name in ENV_NAMES):
        _done = False
        return _done
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _done = False
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(M_TRIM_THRESHOLD, int(trim_threshold))
    )
    return _done
