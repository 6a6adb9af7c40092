"""The fixed-point kernel against the real thing: Xilinx's ap_types headers (shipped with hls4ml), compiled
with g++, converting the same doubles for every rounding and overflow mode."""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_module.numerics import fixed
from tests.conftest import unavailable

pytestmark = pytest.mark.slow

SHAPES = [(6, 3), (6, 0), (6, -2), (6, 8), (1, 1), (5, 5), (16, 6), (24, 10), (40, 12), (62, 31)]
CASES = [
    (w, i, q, o, signed)
    for (w, i), q, o, signed in itertools.product(SHAPES, fixed.ROUNDING_MODES, fixed.OVERFLOW_MODES, (True, False))
    if not (w == 1 and signed and o == "AP_SAT_SYM")  # ap_fixed<1,...> has no symmetric range
]


def _ap_types() -> Path:
    try:
        import hls4ml
    except ImportError:
        unavailable("hls4ml is not installed (pip install -e '.[fpga]'): it ships the ap_types headers")
    headers = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (headers / "ap_fixed.h").is_file() or shutil.which("g++") is None:
        unavailable("g++ and hls4ml's ap_types headers are needed")
    return headers


def _program() -> str:
    funcs, table = [], []
    for n, (w, i, q, o, signed) in enumerate(CASES):
        kind = "ap_fixed" if signed else "ap_ufixed"
        funcs.append(
            f"static unsigned long long f{n}(double d) {{ {kind}<{w},{i},{q},{o}> x = d; "
            f"return x.range({w - 1}, 0).to_uint64(); }}"
        )
        table.append(f"f{n}")
    return "\n".join(
        [
            "#include <cstdio>\n#include <cstring>\n#include <cstdlib>\n#include <ap_fixed.h>",
            *funcs,
            f"static unsigned long long (*table[])(double) = {{{', '.join(table)}}};",
            'int main() { unsigned long long bits; while (scanf("%llx", &bits) == 1) { double d; '
            "memcpy(&d, &bits, 8); for (unsigned k = 0; k < sizeof(table) / sizeof(*table); ++k) "
            'printf("%llx ", table[k](d)); printf("\\n"); } return 0; }',
        ]
    )


def _values() -> np.ndarray:
    rng = np.random.default_rng(15)
    grid = np.arange(-(2**7), 2**7 + 1) / 8.0  # every multiple of 1/8 in [-16, 16]: ties at every LSB down to 2**-2
    fine = np.arange(-(2**10), 2**10 + 1) / 2.0**7  # quarters and eighths of the LSB of ap_fixed<6,3>
    specials = [
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        -1e-300,
        1e300,
        -1e300,
        1.7976931348623157e308,
        2.0**61,
        -(2.0**61),
        2.0**62,
        -(2.0**62),
        2.0**70 + 2.0**20,
        -(2.0**70) - 2.0**20,
    ]
    randoms = np.concatenate(
        [
            rng.normal(0, 4, 300),
            rng.normal(0, 1e6, 100),
            rng.uniform(-1, 1, 100) * 2.0**-20,
            np.ldexp(rng.uniform(-1, 1, 100), rng.integers(-60, 80, 100)),
        ]
    )
    return np.concatenate([grid, fine, specials, randoms, -randoms])


def test_every_mode_matches_ap_types_bit_for_bit(tmp_path: Path) -> None:
    headers = _ap_types()
    source = tmp_path / "check.cpp"
    source.write_text(_program())
    binary = tmp_path / "check"
    subprocess.run(["g++", "-O1", "-std=c++14", "-w", f"-I{headers}", str(source), "-o", str(binary)], check=True)
    values = _values()
    stdin = "\n".join(struct.pack("<d", v)[::-1].hex() for v in values) + "\n"
    rows = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(rows) == len(values)
    hls = np.array([[int(cell, 16) for cell in row.split()] for row in rows], dtype=object)
    mismatches = []
    for n, (w, i, q, o, signed) in enumerate(CASES):
        ours = fixed.quantize(values, w, i, q, o, signed)
        exact = fixed._quantize_exact(values, w, i, q, o, signed)  # the path huge and underflowing values take
        assert np.array_equal(ours, exact), CASES[n]
        with np.errstate(over="ignore"):
            scaled = np.abs(np.ldexp(values, w - i))
        moderate = (scaled < 2.0**52) & ((values == 0) | (scaled > 0))
        fast = fixed._fast_codes(values[moderate], w, i, q, o, signed)  # the float64 path most tensors take
        assert w > 52 or np.array_equal(fast, exact[moderate]), CASES[n]
        theirs = [int(c) - (1 << w) if signed and c >> (w - 1) else int(c) for c in hls[:, n]]
        bad = [k for k in range(len(values)) if int(ours[k]) != theirs[k]]
        if bad:
            k = bad[0]
            mismatches.append(f"{CASES[n]}: {len(bad)} values, e.g. {values[k]!r} -> ours {ours[k]}, HLS {theirs[k]}")
    assert not mismatches, "\n".join(mismatches[:20])
