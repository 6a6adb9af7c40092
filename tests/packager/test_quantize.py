"""INT8 quantization (onnxruntime.quantization): QDQ per-tensor and per-channel, dynamic; lineage,
accuracy on the digits test split, the report, the CLI, and clear errors that register nothing.

Fast tests use a small hand-built ONNX MLP with random weights; tests marked slow train real models
on scikit-learn's bundled digits (a StandardScaler + LogisticRegression pipeline converted with
skl2onnx, and a 64-512-512-10 MLP whose weights come from sklearn's MLPClassifier).
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager import EdgepackError, InvalidInputError, Model, NotFoundError, Workspace
from packager.cli import cli, main
from packager.cli.quantize import quantize
from packager.quantize import QuantizationError, QuantizeWarning, quantize_model
from packager.quantize.data import InputSpec, batches, to_dataset

# -- models ---------------------------------------------------------------------------------------------


def mlp_onnx(weights: list[np.ndarray], biases: list[np.ndarray], path: Path, batch: int | None = None) -> Path:
    """An ONNX MLP: Gemm + Relu per hidden layer, Gemm + Softmax out; float32 input ``input``."""
    nodes, inits, prev = [], [], "input"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        out = "logits" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [out if last else f"{out}_pre"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"{out}_pre"], [out]))
        prev = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 reads IR <= 11
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def random_mlp(path: Path, sizes: tuple[int, ...] = (64, 32, 10), batch: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((a, b)).astype(np.float32) / np.sqrt(a) for a, b in itertools.pairwise(sizes)]
    bs = [rng.standard_normal(b).astype(np.float32) * 0.1 for b in sizes[1:]]
    return mlp_onnx(ws, bs, path, batch)


def two_input_model(path: Path) -> Path:
    """out = softmax(a @ Wa + b @ Wb): inputs ``a`` [N, 8] and ``b`` [N, 4].

    Its unnamed dynamic dimensions make onnxruntime's symbolic shape inference fail; Wa is over 1 kB
    so the failure writes external data too.
    """
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 64)).astype(np.float32), "Wa"),
        numpy_helper.from_array(rng.standard_normal((4, 64)).astype(np.float32), "Wb"),
    ]
    nodes = [
        helper.make_node("MatMul", ["a", "Wa"], ["ya"]),
        helper.make_node("MatMul", ["b", "Wb"], ["yb"]),
        helper.make_node("Add", ["ya", "yb"], ["y"]),
        helper.make_node("Softmax", ["y"], ["out"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 64])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def ml_ops_model(path: Path) -> Path:
    """Only an ai.onnx.ml Scaler: nothing onnxruntime can quantize."""
    node = helper.make_node("Scaler", ["input"], ["out"], domain="ai.onnx.ml", offset=[0.5] * 4, scale=[2.0] * 4)
    graph = helper.make_graph(
        [node],
        "ml",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def run_registered(model: Model, x: np.ndarray) -> list[np.ndarray]:
    path = Path(Model.get_model_path(model.name, model.version, _workspace=model.workspace))
    onnx_file = path if path.is_file() else next(path.rglob("*.onnx"))
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def names(ws: Workspace) -> list[str]:
    return sorted(m.id for m in Model.list(ws))


LINEAGE = ("derived_from", "quantization", "per_channel", "calibration_method", "quantizer", "quantizer_version")


# -- fast tests: a small random MLP ----------------------------------------------------------------------


@pytest.fixture
def small(workspace: Workspace, tmp_path: Path) -> Model:
    rng = np.random.default_rng(2)
    return Model.register(
        workspace,
        random_mlp(tmp_path / "small.onnx"),
        "small",
        tags={"stage": "dev"},
        sample_input=rng.random((40, 64), dtype=np.float32),
    )


@pytest.mark.parametrize("fmt,per_channel", [("qdq", False), ("qdq", True), ("dynamic", False), ("dynamic", True)])
def test_quantize_registers_int8_with_lineage(workspace: Workspace, small: Model, fmt: str, per_channel: bool) -> None:
    result = quantize_model(workspace, "small", format=fmt, per_channel=per_channel, repeats=2)
    m = result.model
    assert (m.name, m.version, m.model_framework) == ("small-int8", 1, "onnx")
    assert all(k in m.properties for k in LINEAGE)
    assert m.properties["derived_from"] == "small:1"
    assert m.properties["quantization"] == fmt
    assert m.properties["per_channel"] == str(per_channel).lower()
    assert m.properties["calibration_method"] == ("minmax" if fmt == "qdq" else "none")
    assert m.properties["quantizer"] == "onnxruntime"
    assert m.properties["quantizer_version"] == ort.__version__
    assert float(m.properties["size_ratio"]) == pytest.approx(result.report.size_ratio, abs=1e-4)
    assert m.tags == {"stage": "dev"}
    np.testing.assert_array_equal(m.load_sample_input(), small.load_sample_input())
    r = result.report
    assert r.source == "small:1" and r.target == "small-int8:1"
    assert r.size_after == m.size < r.size_before
    assert r.quantized_nodes > 0
    assert [lat.batch for lat in r.latency] == [1, 64] and all(lat.int8_ms > 0 for lat in r.latency)
    assert [d.name for d in r.outputs] == ["probabilities"]
    assert r.max_abs_diff is not None and r.max_abs_diff < 0.2
    assert r.accuracy_before is None and r.eval_rows == 40
    d = r.to_dict()
    json.dumps(d)
    assert {"size_before", "size_after", "size_ratio", "latency", "outputs", "max_abs_diff", "threads"} <= set(d)
    (probs,) = run_registered(m, small.load_sample_input())
    assert probs.shape == (40, 10)


def test_progress_reports_calibration_steps(workspace: Workspace, small: Model) -> None:
    seen: list[tuple[str, int, int | None]] = []
    quantize_model(workspace, "small", repeats=1, batch_size=8, progress=lambda *a: seen.append(a))
    calibrate = [s for s in seen if s[0] == "calibrate"]
    assert calibrate[-1] == ("calibrate", 5, 5)  # 40 rows in batches of 8
    assert [s for s in seen if s[0] == "register"][-1] == ("register", 1, 1)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_with_a_short_last_batch(workspace: Workspace, small: Model, method: str) -> None:
    # 40 rows in batches of 32: onnxruntime's histogram calibrators need equal batches, so the last is topped up.
    r = quantize_model(workspace, "small", method=method, repeats=0).report
    assert r.calibration_method == method and r.latency == []
    assert Model(workspace, "small-int8").properties["calibration_method"] == method


def test_calibration_from_npz_and_folder(workspace: Workspace, small: Model, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "cal.npz", rng.random((20, 64)))  # arr_0, float64: cast to float32
    r = quantize_model(workspace, "small", calibration=tmp_path / "cal.npz", repeats=0).report
    assert r.calibration_rows == 20
    folder = tmp_path / "cal"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"{i}.npy", rng.random((7, 64), dtype=np.float32))
    np.savez(folder / "3.npz", input=rng.random(64, dtype=np.float32))  # one example without batch axis
    (folder / "README.txt").write_text("ignored")
    r = quantize_model(workspace, "small", calibration=folder, output_name="small-q", repeats=0).report
    assert r.calibration_rows == 22 and r.target == "small-q:1"


def test_labels_npy_and_npz(workspace: Workspace, small: Model, tmp_path: Path) -> None:
    x = small.load_sample_input()
    probs = ort.InferenceSession(str(Model.get_model_path("small", _workspace=workspace))).run(None, {"input": x})[0]
    y = probs.argmax(1)
    np.save(tmp_path / "y.npy", y)
    r = quantize_model(workspace, "small", labels=tmp_path / "y.npy", repeats=0).report
    assert r.accuracy_before == 1.0 and r.accuracy_output == "probabilities"
    assert r.accuracy_after is not None and r.accuracy_drop is not None
    np.savez(tmp_path / "eval.npz", x=x[:30], y=y[:30])
    r = quantize_model(workspace, "small", labels=tmp_path / "eval.npz", repeats=0).report
    assert r.eval_rows == 30 and r.calibration_rows == 40 and r.accuracy_before == 1.0
    props = Model(workspace, "small-int8").properties
    assert float(props["accuracy_before"]) == 1.0 and "accuracy_after" in props


def test_multi_input_model(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    Model.register(workspace, two_input_model(tmp_path / "two.onnx"), "two")
    np.savez(tmp_path / "cal.npz", b=rng.random((16, 4), dtype=np.float32), a=rng.random((16, 8), dtype=np.float32))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.warns(QuantizeWarning, match="symbolic shape inference failed"):
        r = quantize_model(workspace, "two", calibration=tmp_path / "cal.npz", repeats=1).report
    assert r.calibration_rows == 16 and r.quantized_nodes >= 2 and r.preprocessed
    assert list(cwd.iterdir()) == []  # onnxruntime's sym_shape_infer_temp.onnx (+ .data) cleaned up
    np.savez(tmp_path / "half.npz", a=rng.random((16, 8), dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"lacks input\(s\) b.*b \[N, 4\]"):
        quantize_model(workspace, "two", calibration=tmp_path / "half.npz")
    np.save(tmp_path / "one.npy", rng.random((16, 8), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="one array but the model has 2 inputs"):
        quantize_model(workspace, "two", calibration=tmp_path / "one.npy")


def test_fixed_batch_model_times_its_own_batch(workspace: Workspace, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    Model.register(workspace, random_mlp(tmp_path / "b1.onnx", batch=1), "b1", sample_input=rng.random((6, 64)))
    r = quantize_model(workspace, "b1", repeats=1).report
    assert [lat.batch for lat in r.latency] == [1] and r.eval_rows == 6


def test_folder_model_keeps_its_other_files(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "outputs"
    folder.mkdir()
    random_mlp(folder / "model.onnx")
    (folder / "labels.txt").write_text("0\n1\n")
    Model.register(workspace, folder, "folder", sample_input=np.ones((4, 64), np.float32))
    m = quantize_model(workspace, "folder", repeats=0).model
    assert m.is_folder and [f.path for f in m.files] == ["outputs/labels.txt", "outputs/model.onnx"]
    assert m.files[1].size < Model(workspace, "folder").files[1].size


@pytest.mark.filterwarnings("ignore:onnxruntime")
def test_preprocess_failure_falls_back_with_a_warning(
    workspace: Workspace, small: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization.shape_inference as shape_inference

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shape inference exploded")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    with pytest.warns(QuantizeWarning, match="pre-processing .* failed .*exploded"):
        r = quantize_model(workspace, "small", repeats=0).report
    assert not r.preprocessed and any("exploded" in w for w in r.warnings)
    assert names(workspace) == ["small-int8:1", "small:1"]


# -- errors: one clear message, nothing registered ------------------------------------------------------


def test_errors_register_nothing(workspace: Workspace, small: Model, tmp_path: Path) -> None:
    before = names(workspace)
    rng = np.random.default_rng(6)
    np.savez(tmp_path / "wide.npz", input=rng.random((8, 32), dtype=np.float32))
    np.savez(tmp_path / "other.npz", pixels=rng.random((8, 64)), extra=rng.random((8, 64)))
    np.save(tmp_path / "y.npy", np.zeros(39, np.int64))
    np.savez(tmp_path / "noy.npz", x=rng.random((8, 64)))
    np.savez(tmp_path / "xy.npz", x=rng.random((8, 64)), y=np.zeros(9, np.int64))
    cases = [
        (dict(name="nope"), NotFoundError, "no model named 'nope'"),
        (dict(version=3), NotFoundError, "has no version 3"),
        (dict(calibration=tmp_path / "missing.npz"), InvalidInputError, "missing.npz' does not exist"),
        (dict(calibration=tmp_path / "wide.npz"), InvalidInputError, r"input 'input' has shape \[8, 32\].*\[N, 64\]"),
        (dict(calibration=tmp_path / "other.npz"), InvalidInputError, r"lacks input\(s\) input.*input \[N, 64\]"),
        (
            dict(labels=tmp_path / "y.npy"),
            InvalidInputError,
            "labels have 39 rows but the registered sample input has 40",
        ),
        (dict(labels=tmp_path / "noy.npz"), InvalidInputError, "no 'y' array"),
        (dict(labels=tmp_path / "xy.npz"), InvalidInputError, "labels have 9 rows but the inputs"),
        (dict(labels=tmp_path / "nolabels.npy"), InvalidInputError, "labels file .* does not exist"),
        (dict(format="int4"), InvalidInputError, "unknown quantization format"),
        (dict(method="mse"), InvalidInputError, "unknown calibration method"),
        (dict(format="dynamic", method="entropy"), InvalidInputError, "qdq only"),
        (dict(output_name="bad name!"), InvalidInputError, "name"),
    ]
    for kwargs, exc, pattern in cases:
        kwargs = {"name": "small", **kwargs}
        with pytest.raises(exc, match=pattern):
            quantize_model(workspace, kwargs.pop("name"), repeats=0, **kwargs)
    assert names(workspace) == before


def test_non_onnx_and_unquantizable_models(workspace: Workspace, tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"not really a pickle")
    Model.register(workspace, tmp_path / "model.pkl", "skl", model_framework="scikitlearn")
    with pytest.raises(InvalidInputError, match=r"skl:1 is a scikitlearn model.*edgepack convert skl:1 --to onnx"):
        quantize_model(workspace, "skl")
    Model.register(workspace, ml_ops_model(tmp_path / "ml.onnx"), "ml", sample_input=np.ones((2, 4), np.float32))
    with pytest.raises(InvalidInputError, match=r"nothing onnxruntime can quantize.*Scaler \(ai.onnx.ml\)"):
        quantize_model(workspace, "ml")
    Model.register(workspace, random_mlp(tmp_path / "nosample.onnx"), "nosample")
    with pytest.raises(InvalidInputError, match=r"no registered sample input.*--calibration.*input \[N, 64\]"):
        quantize_model(workspace, "nosample")
    two = tmp_path / "two"
    two.mkdir()
    random_mlp(two / "a.onnx")
    random_mlp(two / "b.onnx")
    Model.register(workspace, two, "two", model_framework="onnx")
    with pytest.raises(InvalidInputError, match=r"has 2 .onnx files \(two/a.onnx, two/b.onnx\)"):
        quantize_model(workspace, "two", calibration=np.ones((2, 64), np.float32))
    assert names(workspace) == ["ml:1", "nosample:1", "skl:1", "two:1"]


def test_quantizer_failure_registers_nothing(
    workspace: Workspace, small: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime.quantization as oq

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("The truth value of an array with more than one element is ambiguous")

    monkeypatch.setattr(oq, "quantize_static", broken)
    with pytest.raises(
        QuantizationError, match=r"could not quantize model small:1 .*truth value.*nothing was registered"
    ):
        quantize_model(workspace, "small", per_channel=True)
    assert names(workspace) == ["small:1"]


def test_data_helpers() -> None:
    spec = [InputSpec("input", (None, 3), np.dtype(np.float32))]
    data = to_dataset(np.arange(21, dtype=np.float64).reshape(7, 3), spec, "calibration")
    assert data["input"].dtype == np.float32
    padded = batches(data, spec, 3, pad=True)
    assert [len(b["input"]) for b in padded] == [3, 3, 3]
    np.testing.assert_array_equal(padded[-1]["input"][1:], data["input"][:2])
    assert [len(b["input"]) for b in batches(data, spec, 3)] == [3, 3, 1]
    fixed = [InputSpec("input", (2, 3), np.dtype(np.float32))]
    with pytest.raises(InvalidInputError, match=r"expects \[2, 3\] \(a multiple of 2 rows\)"):
        to_dataset(np.zeros((3, 3)), fixed, "calibration")


# -- CLI -------------------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``edgepack`` in-process with ``quantize`` wired in, against a fresh workspace."""
    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)
    monkeypatch.setitem(cli.commands, "quantize", quantize)

    def _run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        captured = capsys.readouterr()
        return Result(int(exc.value.code or 0), captured.out, captured.err)

    return _run


def test_cli_json_table_and_errors(run, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    np.save(tmp_path / "cal.npy", rng.random((24, 64), dtype=np.float32))
    model_path = random_mlp(tmp_path / "m.onnx")
    assert (
        run("model", "register", "-n", "m", "-p", str(model_path), "--sample-input", str(tmp_path / "cal.npy")).code
        == 0
    )
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 24))

    r = run("quantize", "m", "--labels", str(tmp_path / "y.npy"), "--repeats", "2", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["model"]["id"] == "m-int8:1" and data["model"]["properties"]["derived_from"] == "m:1"
    report = data["report"]
    for key in ("size_before", "size_after", "size_ratio", "accuracy_before", "accuracy_after", "latency", "outputs"):
        assert key in report
    assert [lat["batch"] for lat in report["latency"]] == [1, 64]
    assert report["outputs"][0]["name"] == "probabilities"

    r = run("quantize", "m:1", "--format", "dynamic", "--per-channel", "--output-name", "m-dyn", "--repeats", "1")
    assert r.code == 0, r.err
    assert "Registered m-dyn:1 from m:1" in r.out
    for row in ("file size", "latency batch 1 (1 thread)", "latency batch 64", "probabilities"):
        assert row in r.out

    errors = [
        (("quantize", "nope"), 1, "no model named 'nope'"),
        (("quantize", "m:9"), 1, "has no version 9"),
        (("quantize", "m", "--calibration", str(tmp_path / "none.npz")), 2, "does not exist"),
        (("quantize", "m", "--labels", str(tmp_path / "cal.npy")), 2, "labels must be one class label per row"),
        (("quantize", "m", "--format", "int4"), 2, "Invalid value for '--format'"),
    ]
    for args, code, message in errors:
        r = run(*args)
        assert r.code == code, (args, r.err)
        assert r.err.startswith("error:") and message in r.err and r.err.count("\n") == 1
    models = json.loads(run("model", "list", "--json").out)
    assert sorted(m["id"] for m in models) == ["m-dyn:1", "m-int8:1", "m:1"]


# -- slow: real models trained on digits -----------------------------------------------------------------


@dataclass
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def x_cal(self) -> np.ndarray:
        return self.x_train[:256]


@pytest.fixture(scope="module")
def digits() -> Digits:
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Digits(x_tr, y_tr, x_te, y_te)


@pytest.fixture(scope="module")
def trained(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two source models, as .onnx files: ``pipeline`` (skl2onnx) and ``mlp`` (64-512-512-10)."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folder = tmp_path_factory.mktemp("models")
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(digits.x_train, digits.y_train)
    # Linear layers as MatMul/Add rather than ai.onnx.ml LinearClassifier/Scaler, which onnxruntime cannot
    # quantize (see test_skl2onnx_default_ops_have_nothing_to_quantize).
    onx = convert_sklearn(
        pipe,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(pipe): {"zipmap": False}},
        target_opset=17,
        black_op={"LinearClassifier", "Scaler", "Normalizer"},
    )
    onnx.save(onx, str(folder / "pipeline.onnx"))
    onx_ml = convert_sklearn(
        pipe, initial_types=[("input", FloatTensorType([None, 64]))], options={id(pipe): {"zipmap": False}}
    )
    onnx.save(onx_ml, str(folder / "pipeline-ml.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: trained briefly on purpose
        mlp = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=20, random_state=0).fit(
            digits.x_train, digits.y_train
        )
    mlp_onnx(mlp.coefs_, mlp.intercepts_, folder / "mlp.onnx")
    return {
        "pipeline": folder / "pipeline.onnx",
        "pipeline-ml": folder / "pipeline-ml.onnx",
        "mlp": folder / "mlp.onnx",
    }


def _accuracy(outputs: list[np.ndarray], y: np.ndarray) -> float:
    probs = next(o for o in outputs if o.dtype == np.float32 and o.ndim == 2)
    return float(np.mean(probs.argmax(1) == y))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["pipeline", "mlp"])
@pytest.mark.parametrize("fmt,per_channel", [("qdq", False), ("qdq", True), ("dynamic", False)])
def test_real_models_keep_accuracy(
    workspace: Workspace,
    digits: Digits,
    trained: dict[str, Path],
    tmp_path: Path,
    source: str,
    fmt: str,
    per_channel: bool,
) -> None:
    src = Model.register(workspace, trained[source], source, sample_input=digits.x_cal)
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    result = quantize_model(
        workspace, source, format=fmt, per_channel=per_channel, labels=tmp_path / "test.npz", repeats=3
    )
    m, r = result.model, result.report
    assert m.id == f"{source}-int8:1" and m.model_framework == "onnx"
    assert {k: m.properties[k] for k in LINEAGE} == {
        "derived_from": f"{source}:1",
        "quantization": fmt,
        "per_channel": str(per_channel).lower(),
        "calibration_method": "minmax" if fmt == "qdq" else "none",
        "quantizer": "onnxruntime",
        "quantizer_version": ort.__version__,
    }
    np.testing.assert_array_equal(m.load_sample_input(), digits.x_cal)

    # The registered INT8 model runs and keeps accuracy on the test split within 1 point of FP32.
    acc_fp32 = _accuracy(run_registered(src, digits.x_test), digits.y_test)
    acc_int8 = _accuracy(run_registered(m, digits.x_test), digits.y_test)
    assert acc_fp32 > 0.9
    assert acc_int8 >= acc_fp32 - 0.01, (acc_fp32, acc_int8)
    assert r.accuracy_before == pytest.approx(acc_fp32) and r.eval_rows == len(digits.y_test)
    assert r.accuracy_drop is not None and r.accuracy_drop <= 0.01
    assert m.properties["accuracy_after"] == f"{r.accuracy_after:.4f}"
    if fmt == "qdq":  # dynamic quantization scales activations per run, so it depends on the batch: the
        assert r.accuracy_after == pytest.approx(acc_int8)  # report evaluates in batches of 64, this all at once

    # Weights are stored as int8.
    q = onnx.load(Model.get_model_path(m.name, m.version, _workspace=workspace))
    int8_weights = [t for t in q.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 2]
    assert int8_weights and all(t.data_type != TensorProto.FLOAT or len(t.dims) < 2 for t in q.graph.initializer)
    assert r.size_after == m.size
    if source == "mlp":
        assert r.size_ratio <= 0.30, r.size_ratio
    elif fmt == "dynamic":
        assert r.size_ratio < 1
    else:
        # A 64x10 logistic regression: the QDQ nodes outweigh the 1.9 kB its int8 weights save.
        assert r.size_ratio < 1.25
    assert r.max_abs_diff is not None and r.max_abs_diff < 0.5


@pytest.mark.slow
def test_skl2onnx_default_ops_have_nothing_to_quantize(
    workspace: Workspace, digits: Digits, trained: dict[str, Path]
) -> None:
    Model.register(workspace, trained["pipeline-ml"], "lr", sample_input=digits.x_cal)
    with pytest.raises(EdgepackError, match=r"nothing onnxruntime can quantize.*LinearClassifier \(ai.onnx.ml\)"):
        quantize_model(workspace, "lr")
    assert names(workspace) == ["lr:1"]


@pytest.mark.slow
def test_cli_on_trained_mlp(run, digits: Digits, trained: dict[str, Path], tmp_path: Path) -> None:
    np.save(tmp_path / "cal.npy", digits.x_cal)
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    assert (
        run(
            "model", "register", "-n", "mlp", "-p", str(trained["mlp"]), "--sample-input", str(tmp_path / "cal.npy")
        ).code
        == 0
    )
    r = run(
        "quantize", "mlp", "--per-channel", "--method", "percentile", "--labels", str(tmp_path / "test.npz"), "--json"
    )
    assert r.code == 0, r.err
    report = json.loads(r.out)["report"]
    assert report["per_channel"] is True and report["calibration_method"] == "percentile"
    assert report["size_ratio"] <= 0.30 and report["accuracy_drop"] <= 0.01
    assert {lat["batch"] for lat in report["latency"]} == {1, 64}
