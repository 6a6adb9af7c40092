"""In CI every optional dependency is installed, so no test is skipped for want of one."""

from __future__ import annotations

import importlib
import os

import pytest

HEAVY = ["sklearn", "skl2onnx", "joblib", "tensorflow", "tf2onnx", "ai_edge_litert", "torch", "onnxscript"]


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI must have every extra installed")
@pytest.mark.parametrize("module", HEAVY)
def test_extras_installed_in_ci(module: str) -> None:
    importlib.import_module(module)


def test_onnx_pins_agree() -> None:
    """onnx 1.23 writes IR 14, which onnxruntime 1.31 refuses: the pins must hold together."""
    import onnx
    import onnxruntime

    assert onnx.__version__ == "1.22.0"
    assert onnxruntime.__version__.startswith("1.31.")
