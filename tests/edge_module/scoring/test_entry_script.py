"""Azure ML v1 entry scripts run by EntryScriptApp: real score.py files, called without a server."""

from __future__ import annotations

import sys
import textwrap
import traceback
from pathlib import Path

import orjson
import pytest

from edge_module.compat import real_module_available
from edge_module.runtime import BadInputError, NotReadyError, Request, ScoringError, UnsupportedMediaTypeError
from edge_module.scoring import EntryScriptApp, EntryScriptError, build_app


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts add their folder to sys.path and set AZUREML_MODEL_DIR: undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("AZUREML_MODEL_DIR", "AZUREML_ENTRY_SCRIPT", "AML_APP_ROOT"):
        monkeypatch.delenv(name, raising=False)


def script(folder: Path, source: str, name: str = "score.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def loaded(tmp_path: Path, source: str, model_dir: Path | None = None) -> EntryScriptApp:
    script(tmp_path / "src", source)
    app = EntryScriptApp("score.py", tmp_path / "src", model_dir)
    app.load()
    return app


def post(body: object, content_type: str = "application/json", headers: dict | None = None) -> Request:
    raw = body if isinstance(body, bytes | str) else orjson.dumps(body)
    return Request(raw, content_type=content_type, headers=headers or {})


def answer(app: EntryScriptApp, request: Request) -> object:
    response = app.score(request)
    assert response.status == 200 and response.content_type == "application/json"
    assert float(response.headers["x-ms-run-fn-exec-ms"]) >= 0
    return orjson.loads(response.body)


PLAIN = """
    import json

    def init():
        global calls
        calls = 0

    def run(raw_data):
        global calls
        calls += 1
        if raw_data == "text please":
            return "plain text"
        return {"type": type(raw_data).__name__, "raw": raw_data, "parsed": json.loads(raw_data), "calls": calls}
"""


def test_plain_run_gets_the_body_as_str(tmp_path: Path) -> None:
    app = loaded(tmp_path, PLAIN)
    assert app.models() == []
    got = answer(app, post(b'{"data": [[1, 2]]}'))
    assert got == {"type": "str", "raw": '{"data": [[1, 2]]}', "parsed": {"data": [[1, 2]]}, "calls": 1}
    assert answer(app, post("text please", "text/plain")) == "plain text"  # a str result is a JSON string, as v1
    got = answer(app, Request(b"", method="GET", query="a=1&b=[1,2]&c=x&c=y"))
    assert got["parsed"] == {"a": 1, "b": [1, 2], "c": ["x", "y"]}
    with pytest.raises(BadInputError, match="cannot be decoded as UTF-8"):
        app.score(post(b"\xff\xfe"))


NUMPY = """
    import numpy as np
    from inference_schema.schema_decorators import input_schema, output_schema
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

    def init():
        pass

    @input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)))
    @output_schema(NumpyParameterType(np.array([10.0])))
    def run(data):
        return {"type": type(data).__name__, "dtype": str(data.dtype), "shape": data.shape, "sums": data.sum(axis=1)}
"""


def test_numpy_schema_typed_arguments_and_400s(tmp_path: Path) -> None:
    app = loaded(tmp_path, NUMPY)
    got = answer(app, post({"data": [[1, 2, 3, 4], [1, 1, 1, 1]]}))
    assert got == {"type": "ndarray", "dtype": "float32", "shape": [2, 4], "sums": [10.0, 4.0]}
    with pytest.raises(
        BadInputError,
        match=r"input 'data' does not fit its schema: .*size 3 on dimension #1.*"
        r"expected a float32 array of shape \[-1, 4\]",
    ):
        app.score(post({"data": [[1, 2, 3]]}))
    with pytest.raises(BadInputError, match=r"input 'data' does not fit its schema.*\[-1, 4\]"):
        app.score(post({"data": [["a", "b", "c", "d"]]}))
    with pytest.raises(BadInputError, match="A value is not provided for the 'data' parameter"):
        app.score(post({"other": 1}))
    with pytest.raises(BadInputError, match="malformed JSON body"):
        app.score(post(b'{"data": ['))
    with pytest.raises(BadInputError, match="JSON dictionary"):
        app.score(post([1, 2]))
    with pytest.raises(UnsupportedMediaTypeError, match="application/json"):
        app.score(post({"data": [[1, 2, 3, 4]]}, "text/csv"))
    # GET: query parameters parsed as JSON, then typed
    assert answer(app, Request(b"", method="GET", query="data=[[1,2,3,4]]"))["sums"] == [10.0]

    v2 = app.swagger(2)
    service_input = v2["definitions"]["ServiceInput"]
    assert service_input["example"] == {"data": [[1.0, 2.0, 3.0, 4.0]]}
    assert service_input["properties"]["data"]["format"] == "numpy.ndarray"
    assert v2["definitions"]["ServiceOutput"]["example"] == [10.0]
    v3 = app.swagger(3)
    assert v3["components"]["schemas"]["ServiceInput"] == service_input
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(v2)
    validator.validate(v3)


PANDAS_AND_STANDARD = """
    import pandas as pd
    from inference_schema.schema_decorators import input_schema, output_schema
    from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
    from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

    sample = pd.DataFrame({"age": [42.0], "city": ["Oslo"]})

    def init():
        pass

    @input_schema("frame", PandasParameterType(sample))
    @input_schema("threshold", StandardPythonParameterType(0.5))
    @input_schema("tags", StandardPythonParameterType(["a"]), optional=True)
    @output_schema(StandardPythonParameterType({"rows": 1, "old": ["Oslo"]}))
    def run(frame, threshold, tags=None):
        old = frame[frame["age"] > threshold * 100]
        return {"frame": type(frame).__name__, "rows": len(frame), "old": old["city"],
                "dtypes": frame.dtypes.astype(str), "threshold": type(threshold).__name__, "tags": tags,
                "frame_back": frame}
"""


def test_pandas_and_standard_python_schema(tmp_path: Path) -> None:
    app = loaded(tmp_path, PANDAS_AND_STANDARD)
    rows = [{"age": 70, "city": "Rome"}, {"age": 20, "city": "Lima"}]
    got = answer(app, post({"frame": rows, "threshold": 0.5}))
    assert got["frame"] == "DataFrame" and got["rows"] == 2 and got["old"] == ["Rome"]
    assert got["dtypes"][0] == "float64"  # integer ages cast to the sample's column type
    assert got["threshold"] == "float" and got["tags"] is None
    assert got["frame_back"] == [{"age": 70.0, "city": "Rome"}, {"age": 20.0, "city": "Lima"}]  # records
    with pytest.raises(BadInputError, match=r"input 'threshold' does not fit its schema.*expected float like 0.5"):
        app.score(post({"frame": rows, "threshold": "high"}))
    with pytest.raises(BadInputError, match=r"input 'frame' does not fit.*columns \['age', 'city'\]"):
        app.score(post({"frame": [{"age": 1.0}], "threshold": 0.5}))
    schema = app.swagger(3)["components"]["schemas"]["ServiceInput"]
    assert schema["example"] == {"frame": [{"age": 42.0, "city": "Oslo"}], "threshold": 0.5, "tags": ["a"]}
    assert schema["properties"]["threshold"] == {"type": "number", "format": "double"}
    assert app.swagger(2)["definitions"]["ServiceOutput"]["example"] == {"rows": 1, "old": ["Oslo"]}


DESIGNER_STYLE = """
    import numpy as np
    from inference_schema.schema_decorators import input_schema, output_schema
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
    from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

    def init():
        pass

    @input_schema("Inputs", StandardPythonParameterType({"input1": NumpyParameterType(np.array([[0.1, 0.2]]))}))
    @input_schema("GlobalParameters", StandardPythonParameterType({"method": "predict"}))
    @output_schema(StandardPythonParameterType({"Results": [0.3]}))
    def run(Inputs, GlobalParameters):
        x = Inputs["input1"]
        return {"Results": x.sum(axis=1), "method": GlobalParameters["method"], "type": type(x).__name__}
"""


def test_nested_standard_python_schema(tmp_path: Path) -> None:
    app = loaded(tmp_path, DESIGNER_STYLE)
    got = answer(app, post({"Inputs": {"input1": [[1, 2], [3, 4]]}, "GlobalParameters": {"method": "predict"}}))
    assert got == {"Results": [3.0, 7.0], "method": "predict", "type": "ndarray"}
    with pytest.raises(BadInputError, match="input 'Inputs' does not fit its schema"):
        app.score(post({"Inputs": {"input1": [[1, 2, 3]]}, "GlobalParameters": {"method": "predict"}}))


RAW = """
    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

    def init():
        pass

    @rawhttp
    def run(request):
        assert isinstance(request, AMLRequest)
        if request.method == "GET":
            return AMLResponse(request.full_path.encode(), 200)
        if request.headers.get("Content-Type") == "application/json":
            return {"json": request.get_json(), "arg": request.args.get("mode")}
        if request.files:
            upload = request.files["image"]
            return {"name": upload.filename, "size": len(upload.read()), "field": request.form["label"]}
        body = bytearray(request.get_data())
        body.reverse()
        return AMLResponse(bytes(body), 201, {"Content-Type": "image/png", "X-Frame": "reversed"})
"""


def test_rawhttp_binary_body_and_response(tmp_path: Path) -> None:
    app = loaded(tmp_path, RAW)
    image = bytes(range(256)) * 4 + b"\x00\xff"
    response = app.score(Request(image, content_type="application/octet-stream"))
    assert (response.status, response.content_type, response.body) == (201, "image/png", image[::-1])
    assert response.headers["X-Frame"] == "reversed" and "x-ms-run-fn-exec-ms" in response.headers

    got = app.score(Request(b"", method="GET", query="a=1&b=2"))
    assert (got.body, got.content_type) == (b"/score?a=1&b=2", "text/html; charset=utf-8")  # Flask's default

    request = post({"x": [1, 2]}, headers={"content-type": "application/json"})
    request.query = "mode=fast"
    assert answer(app, request) == {"json": {"x": [1, 2]}, "arg": "fast"}
    with pytest.raises(BadInputError, match="malformed JSON"):  # request.get_json() on a bad body: a 400
        app.score(post(b"{oops", headers={"content-type": "application/json"}))

    boundary = "XyZ"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="label"\r\n\r\ncat\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ct = f"multipart/form-data; boundary={boundary}"
    got = answer(app, Request(multipart, content_type=ct, headers={"content-type": ct}))
    assert got == {"name": "cat.png", "size": len(image), "field": "cat"}


MODEL_PATH = """
    import os
    from azureml.core.model import Model
    from azureml.core import Model as SameModel

    def init():
        global texts
        assert Model is SameModel
        texts = {}
        for name in os.environ["WANTED"].split(","):
            with open(Model.get_model_path(name)) as fh:
                texts[name] = fh.read()
        texts["dir"] = os.environ["AZUREML_MODEL_DIR"]

    def run(data):
        return texts
"""


def deploy(root: Path, name: str, version: int, text: str) -> Path:
    folder = root / name / str(version)
    folder.mkdir(parents=True)
    (folder / f"{name}.txt").write_text(text)
    return folder


def test_get_model_path_single_and_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not real_module_available("azureml.core.model")  # the stand-in serves the import
    root = tmp_path / "azureml-models"
    single = deploy(root, "m", 1, "one")
    monkeypatch.setenv("WANTED", "m")
    app = loaded(tmp_path / "a", MODEL_PATH, model_dir=single)
    assert answer(app, post("{}")) == {"m": "one", "dir": str(single)}

    deploy(root, "m", 2, "two")
    deploy(root, "n", 5, "five")
    monkeypatch.setenv("WANTED", "m,n")
    app = loaded(tmp_path / "b", MODEL_PATH, model_dir=root)
    assert answer(app, post("{}")) == {"m": "two", "n": "five", "dir": str(root)}


def test_init_failure_propagates_with_traceback(tmp_path: Path) -> None:
    script(tmp_path, "def init():\n    raise RuntimeError('no model here')\n\ndef run(data):\n    return data\n")
    app = EntryScriptApp("score.py", tmp_path)
    with pytest.raises(RuntimeError, match="no model here") as info:
        app.load()
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].filename == str(tmp_path / "score.py") and frames[-1].lineno == 2
    assert any("init() of the entry script" in note for note in info.value.__notes__)
    with pytest.raises(NotReadyError):
        app.score(post("{}"))


def test_import_failure_and_bad_scripts(tmp_path: Path) -> None:
    script(tmp_path / "a", "import not_a_module_anywhere\n")
    with pytest.raises(ModuleNotFoundError) as info:
        EntryScriptApp("score.py", tmp_path / "a").load()
    assert any("importing the entry script" in n for n in info.value.__notes__)
    script(tmp_path / "b", "def init():\n    pass\n")
    with pytest.raises(EntryScriptError, match=r"does not define an run\(\)"):
        EntryScriptApp("score.py", tmp_path / "b").load()
    script(tmp_path / "c", "def init():\n    pass\n\ndef run(*args):\n    pass\n")
    with pytest.raises(EntryScriptError, match=r"\*args"):
        EntryScriptApp("score.py", tmp_path / "c").load()
    with pytest.raises(EntryScriptError, match="not found"):
        EntryScriptApp("missing.py", tmp_path).load()


FAILING_RUN = """
    import numpy as np

    def init():
        pass

    def run(data):
        if data == "boom":
            raise ValueError("boom: bad pixel count")
        if data == "object":
            return object()
        if data == "bytes":
            return b"raw"
        return np.arange(3)
"""


def test_run_failure_is_500_and_the_app_keeps_serving(tmp_path: Path) -> None:
    app = loaded(tmp_path, FAILING_RUN)
    with pytest.raises(ScoringError, match=r"run\(\) raised ValueError: boom: bad pixel count") as info:
        app.score(post("boom"))
    assert info.value.status == 500 and isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ScoringError, match=r"run\(\) returned a object that cannot be serialised to JSON") as info:
        app.score(post("object"))
    assert info.value.status == 500
    with pytest.raises(ScoringError, match="@rawhttp"):
        app.score(post("bytes"))
    assert answer(app, post("fine")) == [0, 1, 2]


HEADERS_AND_NEIGHBOUR = """
    from helper import double

    def init():
        pass

    def run(data, request_headers):
        return {"double": double(int(data)), "id": request_headers.get("x-ms-request-id"),
                "title": request_headers["X-Ms-Request-Id"], "keys": sorted(request_headers)}
"""


def test_request_headers_and_neighbour_import(tmp_path: Path) -> None:
    script(tmp_path / "src", "def double(x):\n    return 2 * x\n", name="helper.py")
    app = loaded(tmp_path, HEADERS_AND_NEIGHBOUR)
    got = answer(app, post("21", headers={"x-ms-request-id": "abc", "content-type": "text/plain"}))
    assert got == {"double": 42, "id": "abc", "title": "abc", "keys": ["Content-Type", "X-Ms-Request-Id"]}


SKLEARN = """
    import json
    import os

    import joblib
    import numpy as np

    def init():
        global model
        # the v1 tutorial's init(): the model file under AZUREML_MODEL_DIR
        model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "sklearn_regression_model.pkl")
        model = joblib.load(model_path)

    def run(raw_data):
        data = np.array(json.loads(raw_data)["data"])
        result = model.predict(data)
        return result.tolist()
"""


def test_sklearn_tutorial_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    linear_model = pytest.importorskip("sklearn.linear_model")
    x = np.arange(20, dtype=float).reshape(10, 2)
    model = linear_model.Ridge(alpha=1e-6).fit(x, x @ [1.0, 2.0] + 3.0)
    version_dir = tmp_path / "azureml-models" / "sklearn_regression_model.pkl" / "1"
    version_dir.mkdir(parents=True)
    joblib.dump(model, version_dir / "sklearn_regression_model.pkl")
    monkeypatch.setenv("AML_APP_ROOT", str(tmp_path / "src"))
    monkeypatch.setenv("AZUREML_ENTRY_SCRIPT", "score.py")
    script(tmp_path / "src", SKLEARN)
    app = build_app(model_dir=str(version_dir))
    assert isinstance(app, EntryScriptApp)
    app.load()
    got = answer(app, post({"data": [[1, 2], [3, 4]]}))
    np.testing.assert_allclose(got, [8.0, 14.0], rtol=1e-5)


def test_swagger_files_and_undecorated(tmp_path: Path) -> None:
    app = loaded(tmp_path, PLAIN)
    generic = app.swagger(2)["definitions"]["ServiceInput"]
    assert generic == {"type": "object", "example": {}}
    (tmp_path / "src" / "swagger3.json").write_text('{"openapi": "3.0.3", "mine": true}')
    fresh = EntryScriptApp("score.py", tmp_path / "src")
    fresh.load()
    assert fresh.swagger(3)["mine"] is True and "definitions" in fresh.swagger(2)
