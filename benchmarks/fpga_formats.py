"""Throughput of ``fake_quantize`` per number format (edge_module.numerics through fpga.formats).

    python benchmarks/fpga_formats.py [--json] [--repeats N]

For each format: a 256x256 weight (per-channel / blocked along the dot-product axis 1) and 64x256
activations (per tensor / blocked along axis 1), float32, best of N calls; reported as milliseconds and
millions of values per second. A plain float32 copy (``x * 1.0``) gives the memory-bound floor.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fpga.formats import get_format  # noqa: E402

FORMATS = ["fixed<16,6>", "ap_fixed<8,3,AP_RND_CONV,AP_SAT>", "int8", "msfp12", "msfp16", "bfp<k=32,m=4,e=8>"]


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--repeats", type=int, default=20, help="calls per measurement (best is kept)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (256, 256)).astype(np.float32)
    x = rng.normal(0, 1, (64, 256)).astype(np.float32)
    rows = [
        {
            "format": "float32 copy",
            "weight_ms": best_ms(lambda: w * np.float32(1), args.repeats),
            "activation_ms": best_ms(lambda: x * np.float32(1), args.repeats),
        }
    ]
    for name in FORMATS:
        fmt = get_format(name)
        rows.append(
            {
                "format": str(fmt),
                "bits_per_value": fmt.bits_per_value,
                "weight_ms": best_ms(lambda fmt=fmt: fmt.fake_quantize_weights(w), args.repeats),
                "activation_ms": best_ms(lambda fmt=fmt: fmt.fake_quantize_activations(x), args.repeats),
            }
        )
    for row in rows:
        row["weight_mvalues_s"] = w.size / row["weight_ms"] / 1000
        row["activation_mvalues_s"] = x.size / row["activation_ms"] / 1000
    if args.json:
        print(json.dumps({"machine": platform.machine(), "numpy": np.__version__, "results": rows}, indent=2))
        return 0
    print(f"fake_quantize, best of {args.repeats} ({platform.machine()}, numpy {np.__version__})")
    print(f"{'format':34} {'bits':>5} {'256x256 W ms':>13} {'Mval/s':>8} {'64x256 A ms':>12} {'Mval/s':>8}")
    for row in rows:
        bits = f"{row['bits_per_value']:.2f}" if "bits_per_value" in row else "32"
        print(
            f"{row['format']:34} {bits:>5} {row['weight_ms']:13.3f} {row['weight_mvalues_s']:8.1f}"
            f" {row['activation_ms']:12.3f} {row['activation_mvalues_s']:8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
