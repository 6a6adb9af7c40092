"""PyTorch → ONNX on the bundled digits data: pickled modules and TorchScript, legacy and dynamo exporters,
parity, same predictions, dynamic batch, clear errors."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    # torch 2.10+ deprecates TorchScript; it still saves and loads, and users still ship it.
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

import onnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from packager import EdgepackError, InvalidInputError, Model, Workspace  # noqa: E402
from packager.convert import convert_model, get_converter, parity  # noqa: E402
from packager.convert.base import Conversion, ConvertOptions, MissingDependencyError  # noqa: E402
from packager.convert.torch import TorchToOnnx, _fit_ir_version  # noqa: E402


class DigitsCNN(torch.nn.Module):
    """At module level so ``torch.save(model)`` pickles a class the converter can import."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained(digits) -> DigitsCNN:
    x_train, x_test, y_train, y_test = digits
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    assert acc >= 0.9, f"the test CNN trained to only {acc:.3f} accuracy"
    return model


@pytest.fixture(scope="module")
def files(trained: DigitsCNN, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("torch-models")
    paths = {"pickle": d / "cnn.pt", "script": d / "cnn-script.pt", "state_dict": d / "cnn-weights.pth"}
    torch.save(trained, paths["pickle"])
    torch.jit.script(trained).save(str(paths["script"]))
    torch.save(trained.state_dict(), paths["state_dict"])
    return paths


def _convert(src: Path, sample, tmp_path: Path, **options) -> Conversion:
    return TorchToOnnx().convert(src, sample, ConvertOptions(**options), tmp_path / "out")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_logits(model: DigitsCNN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_registered_as_the_pytorch_onnx_converter() -> None:
    assert isinstance(get_converter("pytorch", "onnx"), TorchToOnnx)


@pytest.mark.parametrize("kind", ["pickle", "script"])
def test_converts_with_parity_same_predictions_and_dynamic_batch(
    kind: str, files, trained: DigitsCNN, digits, tmp_path: Path
) -> None:
    _, x_test, _, y_test = digits
    conv = _convert(files[kind], x_test[:16], tmp_path)
    assert conv.converter == "torch.onnx" and conv.converter_version == torch.__version__
    assert conv.opset == 17 and conv.path.suffix == ".onnx" and conv.path.parent == tmp_path / "out"
    model = onnx.load(str(conv.path))
    assert model.ir_version <= 10
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch dim

    # Parity on the sample, as the pipeline checks it.
    assert list(conv.feeds) == ["input"] and conv.feeds["input"].shape == (16, 1, 8, 8)
    names, actual = parity.run_artifact(conv.path, conv.feeds)
    diffs = parity.compare(names, conv.expected, actual, atol=1e-4, rtol=1e-4)
    assert [d.name for d in diffs] == ["output"] and all(d.within_tolerance for d in diffs), diffs
    assert diffs[0].max_abs_diff < 1e-4

    # Same classes on the whole test split, same accuracy.
    session = _session(conv.path)
    onnx_pred = session.run(None, {"input": x_test})[0].argmax(1)
    torch_pred = _torch_logits(trained, x_test).argmax(1)
    assert (onnx_pred == torch_pred).mean() >= 0.995
    assert abs((onnx_pred == y_test).mean() - (torch_pred == y_test).mean()) <= 0.005

    # Batch sizes other than the sample's run (dynamic axis).
    for n in (1, 64):
        out = session.run(None, {"input": x_test[:n]})[0]
        assert out.shape == (n, 10)
        np.testing.assert_allclose(out, _torch_logits(trained, x_test[:n]), atol=1e-4, rtol=1e-4)


def test_dynamo_exporter(files, trained: DigitsCNN, digits, tmp_path: Path, capfd) -> None:
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'edgepack[torch]')")
    _, x_test, _, _ = digits
    conv = _convert(files["pickle"], x_test[:1], tmp_path, dynamo=True)  # a batch-1 sample still gives a dynamic axis
    assert conv.converter == "torch.onnx.dynamo"
    assert capfd.readouterr().out == ""  # the exporter's progress lines would corrupt `edgepack convert --json`
    model = onnx.load(str(conv.path))
    assert model.ir_version <= 10
    assert conv.opset == next(o.version for o in model.opset_import if o.domain == "")
    names, actual = parity.run_artifact(conv.path, conv.feeds)
    diffs = parity.compare(names, conv.expected, actual, atol=1e-4, rtol=1e-4)
    assert all(d.within_tolerance for d in diffs), diffs
    session = _session(conv.path)
    for n in (1, 64):
        np.testing.assert_allclose(
            session.run(None, {"input": x_test[:n]})[0], _torch_logits(trained, x_test[:n]), atol=1e-4, rtol=1e-4
        )
    onnx_pred = session.run(None, {"input": x_test})[0].argmax(1)
    assert (onnx_pred == _torch_logits(trained, x_test).argmax(1)).mean() >= 0.995


def test_dynamo_refuses_torchscript(files, digits, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="TorchScript"):
        _convert(files["script"], digits[1][:4], tmp_path, dynamo=True)


def test_input_shape_without_sample_and_float64_sample(files, digits, tmp_path: Path) -> None:
    conv = _convert(files["pickle"], None, tmp_path, input_shape=(None, 1, 8, 8), opset=13)
    assert conv.feeds["input"].shape == (4, 1, 8, 8) and conv.opset == 13
    # A float64 sample (sklearn's dtype) is cast to the model's float32.
    conv = _convert(files["script"], digits[1][:4].astype(np.float64), tmp_path / "f64")
    assert conv.feeds["input"].dtype == np.float32
    names, actual = parity.run_artifact(conv.path, conv.feeds)
    assert all(d.within_tolerance for d in parity.compare(names, conv.expected, actual, 1e-4, 1e-4))


def test_folder_with_one_model_file(files, digits, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "cnn.pt").write_bytes(files["pickle"].read_bytes())
    (folder / "README.txt").write_text("a CNN for digits\n")
    assert _convert(folder, digits[1][:4], tmp_path).path.is_file()
    (folder / "other.pth").write_bytes(files["script"].read_bytes())
    with pytest.raises(InvalidInputError, match="several PyTorch model files"):
        _convert(folder, digits[1][:4], tmp_path)


def test_no_sample_and_no_input_shape(files, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="sample input") as err:
        _convert(files["pickle"], None, tmp_path)
    assert "--input-shape" in str(err.value) and "sample_input=" in str(err.value)


def test_state_dict_is_refused_with_how_to_fix(files, digits, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="state_dict") as err:
        _convert(files["state_dict"], digits[1][:4], tmp_path)
    assert "torch.save(model, path)" in str(err.value) and "torch.jit.script" in str(err.value)


@pytest.mark.parametrize("kind", ["pickle", "script"])
def test_wrong_sample_shape(kind: str, files, tmp_path: Path) -> None:
    flat = np.zeros((4, 64), dtype=np.float32)  # rank 2: the CNN needs [N, 1, 8, 8]
    with pytest.raises(InvalidInputError, match=r"fails on the sample \(input \[4, 64\]"):
        _convert(files[kind], flat, tmp_path)
    with pytest.raises(InvalidInputError, match="fails on the sample"):
        _convert(files[kind], None, tmp_path, input_shape=(None, 3, 8, 8))


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(InvalidInputError, match=r"cannot read 'bad\.pt' as a PyTorch model"):
        _convert(bad, np.zeros((1, 1, 8, 8), np.float32), tmp_path)


def test_pickled_class_that_cannot_be_imported(tmp_path: Path) -> None:
    module_name = "edgepack_test_vanishing_net"
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / f"{module_name}.py").write_text(
        textwrap.dedent(
            """
            import torch

            class VanishingNet(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Linear(64, 10)

                def forward(self, x):
                    return self.fc(torch.flatten(x, 1))
            """
        )
    )
    sys.path.insert(0, str(src_dir))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
        torch.save(module.VanishingNet(), tmp_path / "net.pt")
    finally:
        sys.path.remove(str(src_dir))
        sys.modules.pop(module_name, None)
    with pytest.raises(InvalidInputError, match="cannot be imported") as err:
        _convert(tmp_path / "net.pt", np.zeros((2, 1, 8, 8), np.float32), tmp_path)
    assert module_name in str(err.value) and "TorchScript" in str(err.value)


def test_through_the_pipeline(workspace: Workspace, files, trained: DigitsCNN, digits) -> None:
    _, x_test, _, _ = digits
    x64 = x_test.astype(np.float64)  # registered as float64: the converter casts to the model's dtype
    source = Model.register(workspace, files["pickle"], "cnn", sample_input=x64[:8])
    assert source.model_framework == "pytorch"
    result = convert_model(workspace, "cnn")
    m = result.model
    assert m.id == "cnn-onnx:1" and m.model_framework == "onnx"
    assert m.properties["derived_from"] == "cnn:1"
    assert m.properties["converter"] == "torch.onnx"
    assert m.properties["converter_version"] == torch.__version__
    assert m.properties["opset"] == "17"
    assert float(m.properties["max_abs_diff"]) < 1e-4
    assert m.load_sample_input().dtype == np.float32
    onnx_path = Path(Model.get_model_path("cnn-onnx", _workspace=workspace))
    onnx_pred = _session(onnx_path).run(None, {"input": x_test})[0].argmax(1)
    assert (onnx_pred == _torch_logits(trained, x_test).argmax(1)).mean() >= 0.995


@pytest.mark.parametrize(("module", "options"), [("torch", {}), ("onnxscript", {"dynamo": True})])
def test_missing_dependency_names_the_extra(module: str, options: dict, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgepack\[torch\]'"):
        _convert(tmp_path / "any.pt", np.zeros((1, 1, 8, 8), np.float32), tmp_path, **options)


def test_ir_version_lowered_for_onnxruntime(files, digits, tmp_path: Path) -> None:
    conv = _convert(files["pickle"], digits[1][:2], tmp_path)
    model = onnx.load(str(conv.path))
    model.ir_version = 11  # as a newer exporter might write
    onnx.save(model, str(conv.path))
    _fit_ir_version(onnx, conv.path)
    assert onnx.load(str(conv.path)).ir_version == 10
    next(o for o in model.opset_import if o.domain == "").version = 23  # opset 23 really needs IR 11
    onnx.save(model, str(conv.path))
    with pytest.raises(EdgepackError, match=r"--opset \d+ or lower"):
        _fit_ir_version(onnx, conv.path)


def test_converted_cnn_quantizes_to_int8_within_one_point(workspace: Workspace, files, digits) -> None:
    """Convert → quantize (QDQ, calibrated on training rows): INT8 keeps accuracy within 1 point."""
    from packager.quantize import quantize_model

    x_train, x_test, _, y_test = digits
    Model.register(workspace, files["pickle"], "cnn", sample_input=x_test[:8])
    converted = convert_model(workspace, "cnn").model
    result = quantize_model(workspace, converted.name, calibration=x_train[:256], repeats=0)
    assert result.model.properties["derived_from"] == converted.id
    fp32 = _session(Path(Model.get_model_path(converted.name, _workspace=workspace)))
    int8 = _session(Path(Model.get_model_path(result.model.name, _workspace=workspace)))
    acc_fp32 = float((fp32.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())
    acc_int8 = float((int8.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())
    assert acc_fp32 - acc_int8 <= 0.01, (acc_fp32, acc_int8)
