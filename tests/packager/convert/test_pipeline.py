"""The convert pipeline with ONNX in: parity, lineage, errors, nothing registered on failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from packager import InvalidInputError, Model, Workspace
from packager.cli import main
from packager.convert import ConvertOptions, ParityError, UnsupportedConversionError, convert_model
from packager.convert.base import (
    _REGISTRY,
    Conversion,
    Converter,
    MissingDependencyError,
    register_converter,
    require,
)
from packager.convert.parity import run_artifact

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "models" / "digits-linear.onnx"


@pytest.fixture
def onnx_model(workspace: Workspace) -> Model:
    rng = np.random.default_rng(1)
    return Model.register(workspace, EXAMPLE, "linear", sample_input=rng.standard_normal((5, 64)).astype(np.float32))


def test_onnx_in_checked_and_registered_with_lineage(workspace: Workspace, onnx_model: Model) -> None:
    result = convert_model(workspace, "linear")
    m = result.model
    assert m.id == "linear-onnx:1" and m.model_framework == "onnx"
    assert m.properties["derived_from"] == "linear:1"
    assert m.properties["converter"] == "onnx" and m.properties["opset"] == "17"
    assert float(m.properties["max_abs_diff"]) == 0.0
    np.testing.assert_array_equal(m.load_sample_input(), onnx_model.load_sample_input())
    assert [d.name for d in result.diffs] == ["output"]


def test_onnx_opset_conversion(workspace: Workspace, onnx_model: Model, tmp_path: Path) -> None:
    result = convert_model(workspace, "linear", options=ConvertOptions(opset=13), output_name="linear13")
    path = Path(result.model.download(tmp_path))
    model = onnx.load(str(path))
    assert next(o.version for o in model.opset_import if o.domain == "") == 13
    assert result.model.properties["opset"] == "13"
    assert result.diffs[0].max_abs_diff < 1e-6


def test_sample_from_file_and_generated(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, EXAMPLE, "nosample")
    generated = convert_model(workspace, "nosample")
    assert generated.conversion.feeds["input"].shape == (4, 64)
    sample = tmp_path / "s.json"
    sample.write_text(json.dumps({"data": np.ones((2, 64)).tolist()}))
    from_file = convert_model(workspace, "nosample", sample=sample, output_name="from-file")
    assert from_file.conversion.feeds["input"].shape == (2, 64)
    assert from_file.conversion.feeds["input"].dtype == np.float32


def test_wrong_sample_shape_is_a_clear_error(workspace: Workspace, tmp_path: Path) -> None:
    Model.register(workspace, EXAMPLE, "linear")
    np.save(tmp_path / "bad.npy", np.ones((2, 63), np.float32))
    with pytest.raises(InvalidInputError, match=r"'input' has shape \[2, 63\], the model expects \[N, 64\]"):
        convert_model(workspace, "linear", sample=tmp_path / "bad.npy")
    assert [m.name for m in Model.list(workspace)] == ["linear"]


def test_corrupt_onnx_file(workspace: Workspace, tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    Model.register(workspace, bad, "broken")
    with pytest.raises(InvalidInputError, match=r"broken\.onnx is not a valid ONNX model"):
        convert_model(workspace, "broken")


def test_unsupported_framework(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    Model.register(workspace, f, "opaque")
    with pytest.raises(UnsupportedConversionError, match="no converter from custom to onnx; onnx can be made from"):
        convert_model(workspace, "opaque")
    with pytest.raises(InvalidInputError, match="unknown target 'coreml'"):
        convert_model(workspace, "opaque", options=ConvertOptions(target="coreml"))


def test_missing_optional_dependency_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgepack\[tensorflow\]'"):
        require("surely_not_installed_module", "tensorflow", "Keras conversion")


class _Skewed(Converter):
    """A deliberately wrong converter: the artifact adds 0.01 to the output."""

    framework, target = "fpga", "onnx"

    def convert(self, src, sample, options, workdir):  # type: ignore[no-untyped-def]
        model = onnx.load(str(src))
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0.01, np.float32), "skew"))
        model.graph.node.append(onnx.helper.make_node("Add", ["output", "skew"], ["skewed"]))
        model.graph.output[0].name = "skewed"
        out = workdir / "skewed.onnx"
        onnx.save(model, str(out))
        feeds = {"input": np.ones((3, 64), np.float32)}
        _, expected = run_artifact(src, feeds)
        return Conversion(out, "skew", "0", feeds, expected, 17)


def test_parity_failure_registers_nothing(workspace: Workspace, tmp_path: Path) -> None:
    q = tmp_path / "q.onnx"
    shutil.copy(EXAMPLE, q)
    Model.register(workspace, q, "skewed", model_framework="fpga")
    previous = _REGISTRY.get(("fpga", "onnx"))
    register_converter(_Skewed)
    try:
        with pytest.raises(ParityError, match=r"output 'skewed' max abs diff 0.01"):
            convert_model(workspace, "skewed")
        assert [m.name for m in Model.list(workspace)] == ["skewed"]
        loose = convert_model(workspace, "skewed", options=ConvertOptions(atol=0.02))
        assert float(loose.model.properties["max_abs_diff"]) == pytest.approx(0.01, rel=1e-3)
    finally:
        _REGISTRY.pop(("fpga", "onnx"))
        if previous is not None:
            _REGISTRY[("fpga", "onnx")] = previous


def test_cli_convert_json_and_errors(workspace: Workspace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    Model.register(workspace, EXAMPLE, "linear")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["--workspace", str(workspace.path), *args])
        out = capsys.readouterr()
        return int(exc.value.code or 0), out.out, out.err

    code, out, err = run("convert", "linear", "--to", "onnx", "--opset", "15", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["model"]["id"] == "linear-onnx:1" and data["opset"] == 15 and data["parity"][0]["within_tolerance"]
    code, out, err = run("convert", "linear", "--input-shape", "N,x64")
    assert code == 2 and err.startswith("error: invalid --input-shape")
    code, out, err = run("convert", "nosuch")
    assert code == 1 and "no model named 'nosuch'" in err
    code, out, err = run("convert", "linear")
    assert code == 0 and "Registered linear-onnx:2" in out
