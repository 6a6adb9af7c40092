"""The tree is ruff-clean (lint and format), as configured in pyproject.toml; CI runs this with the rest."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, unavailable


def _ruff() -> list[str]:
    if shutil.which("ruff"):
        return ["ruff"]
    try:
        import ruff  # noqa: F401  (installed with the test extra)
    except ImportError:
        unavailable("ruff is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", "ruff"]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff(args: list[str]) -> None:
    r = subprocess.run([*_ruff(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"ruff {' '.join(args)} found problems (run it and fix them):\n{r.stdout}{r.stderr}"
