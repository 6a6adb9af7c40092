"""scikit-learn → ONNX on the bundled digits data: parity, same predictions, clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

sklearn = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from packager import InvalidInputError, Model, Workspace  # noqa: E402
from packager.convert import convert_model  # noqa: E402
from packager.convert.parity import run_artifact  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0))  # type: ignore[return-value]


def _estimators():
    return {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "forest": RandomForestClassifier(n_estimators=30, random_state=0),
    }


@pytest.mark.parametrize("kind", ["pipeline", "forest"])
@pytest.mark.parametrize("saver", ["joblib", "pickle"])
def test_classifier_converts_and_scores_the_same(
    workspace: Workspace, tmp_path: Path, digits, kind: str, saver: str
) -> None:
    x_train, x_test, y_train, y_test = digits
    est = _estimators()[kind].fit(x_train, y_train)
    path = tmp_path / f"{kind}.{'joblib' if saver == 'joblib' else 'pkl'}"
    if saver == "joblib":
        joblib.dump(est, path)
    else:
        path.write_bytes(pickle.dumps(est))
    source = Model.register(workspace, path, "digits", sample_input=x_test[:16])
    assert source.model_framework == "scikitlearn"

    result = convert_model(workspace, "digits")
    m = result.model
    assert m.id == "digits-onnx:1"
    assert m.properties["converter"] == "skl2onnx" and m.properties["derived_from"] == "digits:1"
    assert float(m.properties["max_abs_diff"]) <= 1e-4
    assert [d.name for d in result.diffs] == ["label", "probabilities"]

    onnx_file = Path(m.download(tmp_path / "dl"))
    _, (labels, probs) = run_artifact(onnx_file, {"input": x_test})
    expected = est.predict(x_test.astype(np.float64))
    agree = float(np.mean(labels == expected))
    assert agree >= 0.995
    acc_src, acc_onnx = float(np.mean(expected == y_test)), float(np.mean(labels == y_test))
    assert abs(acc_src - acc_onnx) <= 0.005 and acc_onnx > 0.9
    np.testing.assert_allclose(probs, est.predict_proba(x_test.astype(np.float64)), atol=1e-4)


def test_regressor_and_input_shape(workspace: Workspace, tmp_path: Path, digits) -> None:
    x_train, _, y_train, _ = digits
    path = tmp_path / "reg.pkl"
    joblib.dump(LinearRegression().fit(x_train, y_train.astype(np.float64)), path)
    Model.register(workspace, path, "reg")  # no sample: generated from n_features_in_
    result = convert_model(workspace, "reg")
    assert result.conversion.feeds["input"].shape == (4, 64)
    assert result.diffs[0].within_tolerance


def test_wrong_sample_width(workspace: Workspace, tmp_path: Path, digits) -> None:
    x_train, x_test, y_train, _ = digits
    path = tmp_path / "lr.pkl"
    joblib.dump(LogisticRegression(max_iter=500).fit(x_train, y_train), path)
    Model.register(workspace, path, "lr", sample_input=x_test[:4, :10])
    with pytest.raises(InvalidInputError, match=r"'input' has shape \[4, 10\], the model expects \[N, 64\]"):
        convert_model(workspace, "lr")
    assert [m.name for m in Model.list(workspace)] == ["lr"]


def test_unreadable_pickle(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x04sklearn garbage")
    Model.register(workspace, path, "broken")
    with pytest.raises(InvalidInputError, match=r"broken\.pkl is not a readable pickle"):
        convert_model(workspace, "broken")


def test_not_an_estimator(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "dict.pkl"
    joblib.dump({"sklearn": "not a model"}, path)
    Model.register(workspace, path, "dict", model_framework="scikitlearn")
    with pytest.raises(InvalidInputError, match="holds a dict, not a scikit-learn estimator"):
        convert_model(workspace, "dict")


def test_pipeline_converts_to_plain_ops_and_quantizes(workspace: Workspace, tmp_path: Path, digits) -> None:
    """Converted linear models use plain ONNX ops, so INT8 quantization works end to end."""
    import onnx

    from packager.quantize import quantize_model

    x_train, x_test, y_train, y_test = digits
    path = tmp_path / "pipe.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train), path)
    Model.register(workspace, path, "digits", sample_input=x_train[:200])
    converted = convert_model(workspace, "digits").model
    ops = {n.op_type for n in onnx.load(converted.download(tmp_path / "c")).graph.node}
    assert "MatMul" in ops and not ops & {"LinearClassifier", "Scaler"}
    result = quantize_model(workspace, converted.name, format="qdq", repeats=0)
    int8_file = Path(result.model.download(tmp_path / "q"))
    _, (labels, _) = run_artifact(int8_file, {"input": x_test})
    _, (fp32_labels, _) = run_artifact(Path(converted.download(tmp_path / "c2")), {"input": x_test})
    assert abs(float(np.mean(labels == y_test)) - float(np.mean(fp32_labels == y_test))) <= 0.01


def test_the_same_estimator_converts_to_the_same_bytes(workspace: Workspace, tmp_path: Path, digits) -> None:
    """Reproducible images need reproducible models: no random graph name (skl2onnx's default is a UUID)."""
    x_train, x_test, y_train, _ = digits
    path = tmp_path / "lr.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x_train, y_train), path)
    Model.register(workspace, path, "lr", sample_input=x_test[:4])
    first = convert_model(workspace, "lr").model
    second = convert_model(workspace, "lr").model
    assert first.id != second.id
    assert [f.digest for f in first.files] == [f.digest for f in second.files]
