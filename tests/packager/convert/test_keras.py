"""Keras 3 (.keras, .h5) and TensorFlow SavedModel → ONNX (tf2onnx) and TFLite (float, INT8) on the bundled
digits data: parity, same predictions and accuracy, NCHW inputs, clear errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    # Keras 3.15 on NumPy 2 (keras/src/backend/tensorflow/core.py); nothing edgepack can act on.
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]

# Checked without importing: TensorFlow takes seconds to import, which `pytest -m 'not slow'` should not pay.
for _module in ("tensorflow", "keras", "tf2onnx", "ai_edge_litert", "onnxruntime", "sklearn"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed: pip install -e '.[tensorflow,sklearn]'", allow_module_level=True)

from packager import InvalidInputError, Model, Workspace  # noqa: E402
from packager.convert import convert_model, get_converter, parity  # noqa: E402
from packager.convert.base import ConvertOptions, MissingDependencyError  # noqa: E402
from packager.convert.tflite_runtime import run_tflite  # noqa: E402

FORMATS = ("keras", "h5", "savedmodel")
FRAMEWORK = {"keras": "tfkeras", "h5": "tfkeras", "savedmodel": "tensorflow"}


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def keras(tf):
    import keras

    return keras


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained(keras, digits, tmp_path_factory) -> dict:
    """A small CNN (with BatchNorm and Dropout, which must run in inference mode), trained once, saved three ways."""
    x_train, x_test, y_train, y_test = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    probs = model(x_test, training=False).numpy()
    accuracy = float(np.mean(probs.argmax(1) == y_test))
    assert accuracy > 0.93
    out = tmp_path_factory.mktemp("keras-models")
    model.save(out / "digits.keras")
    model.save(out / "digits.h5")
    model.export(str(out / "digits_savedmodel"), verbose=False)
    paths = {"keras": out / "digits.keras", "h5": out / "digits.h5", "savedmodel": out / "digits_savedmodel"}
    return {"model": model, "probs": probs, "accuracy": accuracy, "paths": paths}


def _same_predictions(probs: np.ndarray, reference: np.ndarray, y: np.ndarray) -> None:
    pred, ref = probs.argmax(1), reference.argmax(1)
    assert float(np.mean(pred == ref)) >= 0.995
    assert abs(float(np.mean(pred == y)) - float(np.mean(ref == y))) <= 0.005


def _onnx_run(path: Path, x: np.ndarray) -> tuple[list, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    return inp.shape, session.run(None, {inp.name: x})[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_onnx_parity_and_accuracy(workspace: Workspace, tmp_path: Path, digits, trained, fmt: str) -> None:
    _, x_test, _, y_test = digits
    src = trained["paths"][fmt]

    # The converter on its own, on the whole test split.
    work = tmp_path / "work"
    work.mkdir()
    conv = get_converter(FRAMEWORK[fmt], "onnx").convert(src, x_test, ConvertOptions(), work)
    assert conv.converter == "tf2onnx" and conv.opset and conv.path.parent == work
    assert list(conv.feeds) == ["pixels"] and conv.feeds["pixels"].shape == (450, 8, 8, 1)
    names, actual = parity.run_artifact(conv.path, conv.feeds)
    assert names == (["probs"] if fmt != "savedmodel" else ["output_0"])
    assert all(d.within_tolerance for d in parity.compare(names, conv.expected, actual, 1e-4, 1e-4))
    np.testing.assert_allclose(conv.expected[0], trained["probs"], atol=1e-5)

    # Through the registry: detected framework, parity, the registered ONNX file scores like Keras.
    source = Model.register(workspace, src, "digits", sample_input=x_test[:32])
    assert source.model_framework == FRAMEWORK[fmt]
    result = convert_model(workspace, "digits")
    assert result.model.id == "digits-onnx:1" and result.model.properties["converter"] == "tf2onnx"
    assert float(result.model.properties["max_abs_diff"]) <= 1e-4
    onnx_file = Path(result.model.download(tmp_path / "dl"))
    shape, probs = _onnx_run(onnx_file, x_test)
    assert shape[1:] == [8, 8, 1] and not isinstance(shape[0], int)  # dynamic batch
    np.testing.assert_allclose(probs, trained["probs"], atol=1e-4)
    _same_predictions(probs, trained["probs"], y_test)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tflite_float(workspace: Workspace, tmp_path: Path, digits, trained, fmt: str) -> None:
    _, x_test, _, y_test = digits
    Model.register(workspace, trained["paths"][fmt], "digits", sample_input=x_test[:32])
    result = convert_model(workspace, "digits", options=ConvertOptions(target="tflite"))
    assert result.model.id == "digits-tflite:1" and result.model.model_framework == "tflite"
    assert result.model.properties["converter"] == "tflite-converter"
    assert all(d.within_tolerance for d in result.diffs)
    tflite_file = Path(result.model.download(tmp_path / "dl"))
    _, (probs,) = run_tflite(tflite_file, {"pixels": x_test})  # batch 450: inputs resized
    np.testing.assert_allclose(probs, trained["probs"], atol=1e-4)
    _same_predictions(probs, trained["probs"], y_test)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_tflite_int8(workspace: Workspace, tmp_path: Path, digits, trained, fmt: str) -> None:
    x_train, x_test, _, y_test = digits
    options = ConvertOptions(target="tflite", int8=True)
    conv = get_converter(FRAMEWORK[fmt], "tflite").convert(trained["paths"][fmt], x_train[:300], options, tmp_path)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(conv.path))
    assert [d["dtype"] for d in interp.get_input_details()] == [np.int8]
    assert [d["dtype"] for d in interp.get_output_details()] == [np.int8]
    assert conv.path.stat().st_size < 0.5 * len(Path(trained["paths"]["keras"]).read_bytes())

    _, (probs,) = run_tflite(conv.path, {"pixels": x_test})  # float in, quantized and dequantized inside
    assert probs.dtype == np.float32
    assert abs(float(np.mean(probs.argmax(1) == y_test)) - trained["accuracy"]) <= 0.01
    assert float(np.mean(probs.argmax(1) == trained["probs"].argmax(1))) >= 0.97

    # Through the pipeline INT8 needs a looser tolerance than the float default (quantization error).
    Model.register(workspace, trained["paths"][fmt], "digits", sample_input=x_train[:300])
    result = convert_model(workspace, "digits", options=ConvertOptions(target="tflite", int8=True))
    assert result.model.properties["quantization"] == "int8"
    assert max(d.max_abs_diff for d in result.diffs) < 0.1


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_inputs_as_nchw(workspace: Workspace, tmp_path: Path, digits, trained, fmt: str) -> None:
    _, x_test, _, y_test = digits
    Model.register(workspace, trained["paths"][fmt], "digits", sample_input=x_test[:32])  # NHWC, as Keras takes it
    options = ConvertOptions(inputs_as_nchw=["pixels"])
    result = convert_model(workspace, "digits", options=options)
    assert result.conversion.feeds["pixels"].shape == (32, 1, 8, 8)
    assert all(d.within_tolerance for d in result.diffs)
    assert result.model.properties["inputs_as_nchw"] == "pixels"
    shape, probs = _onnx_run(Path(result.model.download(tmp_path / "dl")), x_test.transpose(0, 3, 1, 2))
    assert shape[1:] == [1, 8, 8]
    np.testing.assert_allclose(probs, trained["probs"], atol=1e-4)
    _same_predictions(probs, trained["probs"], y_test)

    with pytest.raises(InvalidInputError, match=r"--inputs-as-nchw names 'image'.*the inputs are pixels"):
        convert_model(workspace, "digits", options=ConvertOptions(inputs_as_nchw=["image"]))


def test_no_sample_generates_one(tmp_path: Path, trained) -> None:
    conv = get_converter("tensorflow", "onnx").convert(trained["paths"]["savedmodel"], None, ConvertOptions(), tmp_path)
    assert conv.feeds["pixels"].shape == (4, 8, 8, 1) and conv.feeds["pixels"].dtype == np.float32
    names, actual = parity.run_artifact(conv.path, conv.feeds)
    assert all(d.within_tolerance for d in parity.compare(names, conv.expected, actual, 1e-4, 1e-4))


def test_several_inputs_and_outputs(keras, tmp_path: Path) -> None:
    """Outputs keep their layer names and come back in the artifact's order; inputs are matched by name."""
    a, b = keras.Input((5,), name="a"), keras.Input((3,), name="b")
    both = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], [keras.layers.Dense(4, name="zeta")(both), keras.layers.Dense(2, name="alpha")(both)])
    model.save(tmp_path / "two.keras")
    rng = np.random.default_rng(1)
    sample = {"b": rng.standard_normal((6, 3), dtype=np.float32), "a": rng.standard_normal((6, 5), dtype=np.float32)}
    want = dict(zip(["zeta", "alpha"], [t.numpy() for t in model([sample["a"], sample["b"]])], strict=True))
    for target in ("onnx", "tflite"):
        work = tmp_path / target
        work.mkdir()
        conv = get_converter("tfkeras", target).convert(tmp_path / "two.keras", sample, ConvertOptions(), work)
        names, actual = parity.run_artifact(conv.path, conv.feeds)
        assert sorted(names) == ["alpha", "zeta"]
        assert all(d.within_tolerance for d in parity.compare(names, conv.expected, actual, 1e-4, 1e-4))
        for name, got in zip(names, actual, strict=True):
            np.testing.assert_allclose(got, want[name], atol=1e-5)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_keras_file(workspace: Workspace, tmp_path: Path, trained, damage: str) -> None:
    good = Path(trained["paths"]["keras"]).read_bytes()
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip" if damage == "garbage" else good[: len(good) // 2])
    Model.register(workspace, path, "broken")
    for target in ("onnx", "tflite"):
        with pytest.raises(InvalidInputError, match=r"broken\.keras is not a valid Keras \.keras file"):
            convert_model(workspace, "broken", options=ConvertOptions(target=target))
    assert [m.name for m in Model.list(workspace)] == ["broken"]


def test_corrupt_h5_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(InvalidInputError, match=r"broken\.h5 is not a valid HDF5"):
        get_converter("tfkeras", "onnx").convert(path, None, ConvertOptions(), tmp_path)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_wrong_sample_shape(workspace: Workspace, digits, trained, fmt: str) -> None:
    _, x_test, _, _ = digits
    Model.register(workspace, trained["paths"][fmt], "digits", sample_input=x_test[:4].reshape(4, 64))
    for target in ("onnx", "tflite"):
        with pytest.raises(InvalidInputError, match=r"'pixels' has shape \[4, 64\], the model expects \[N, 8, 8, 1\]"):
            convert_model(workspace, "digits", options=ConvertOptions(target=target))
    assert [m.name for m in Model.list(workspace)] == ["digits"]


def test_saved_model_errors(tmp_path: Path, trained) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("no model here")
    with pytest.raises(InvalidInputError, match=r"no SavedModel \(saved_model.pb\) in the registered folder empty"):
        get_converter("tensorflow", "onnx").convert(empty, None, ConvertOptions(), tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match=r"cannot load the SavedModel .*broken"):
        get_converter("tensorflow", "tflite").convert(broken, None, ConvertOptions(target="tflite"), tmp_path)


def test_missing_tf2onnx_names_the_extra(monkeypatch, tmp_path: Path, trained) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx → ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgepack\[tensorflow\]'"):
        get_converter("tfkeras", "onnx").convert(trained["paths"]["keras"], None, ConvertOptions(), tmp_path)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_run_tflite_falls_back_to_tf_lite(monkeypatch, tmp_path: Path, digits, trained) -> None:
    _, x_test, _, _ = digits
    conv = get_converter("tfkeras", "tflite").convert(trained["paths"]["keras"], None, ConvertOptions(), tmp_path)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    names, (probs,) = run_tflite(conv.path, {"pixels": x_test[:10]})
    assert names == ["probs"]
    np.testing.assert_allclose(probs, trained["probs"][:10], atol=1e-4)


def test_run_tflite_without_signatures(tf, tmp_path: Path) -> None:
    """Older .tflite files have no SignatureDef: tensors are matched by name and resized for the batch."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def f(x):
        return tf.nn.relu(tf.matmul(x, tf.constant(w)))

    path = tmp_path / "plain.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()]).convert())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    names, (y,) = run_tflite(path, {"x:0": x})
    assert names == ["Identity"]
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), atol=1e-5)
    with pytest.raises(InvalidInputError, match="takes input"):
        run_tflite(path, {"x": x, "y": x})


def test_importing_the_module_does_not_import_tensorflow() -> None:
    code = "import sys, packager.convert.keras, packager.convert.tflite_runtime; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_converted_cnn_quantizes_to_int8_within_one_point(workspace: Workspace, tmp_path: Path, digits, trained):
    """Keras → ONNX → INT8 QDQ (calibrated on training rows): accuracy within 1 point of the ONNX model."""
    from packager.quantize import quantize_model

    x_train, x_test, _, y_test = digits
    Model.register(workspace, trained["paths"]["keras"], "digits", sample_input=x_test[:32])
    converted = convert_model(workspace, "digits").model
    result = quantize_model(workspace, converted.name, calibration=x_train[:256], repeats=0)
    _, fp32 = _onnx_run(Path(converted.download(tmp_path / "fp32")), x_test)
    _, int8 = _onnx_run(Path(result.model.download(tmp_path / "int8")), x_test)
    acc_fp32, acc_int8 = float(np.mean(fp32.argmax(1) == y_test)), float(np.mean(int8.argmax(1) == y_test))
    assert acc_fp32 - acc_int8 <= 0.01, (acc_fp32, acc_int8)
