"""The azureml stand-ins: served only when the real packages are absent; AMLRequest/AMLResponse."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_module.compat import (
    AMLRequest,
    AMLResponse,
    install_azureml_compat,
    real_module_available,
    uninstall_azureml_compat,
)
from edge_module.model_dir import ModelPathNotFoundError
from edge_module.runtime import BadInputError, Request, UnsupportedMediaTypeError


@pytest.fixture
def fresh_azureml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No azureml modules imported and no hook installed, before and after."""

    def forget() -> None:
        uninstall_azureml_compat()
        for name in [n for n in sys.modules if n.split(".")[0] in ("azureml", "azureml_inference_server_http")]:
            del sys.modules[name]
        importlib.invalidate_caches()

    monkeypatch.setattr(sys, "path", list(sys.path))
    forget()
    yield
    forget()


def test_served_when_absent(fresh_azureml: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not real_module_available("azureml.core.model")
    served = install_azureml_compat()
    assert {"azureml.core.model", "azureml.contrib.services.aml_request", "azureml"} <= served
    assert install_azureml_compat() is served  # idempotent
    from azureml.contrib.services.aml_request import AMLRequest as Req
    from azureml.contrib.services.aml_request import rawhttp
    from azureml.contrib.services.aml_response import AMLResponse as Resp
    from azureml.core import Model as CoreModel
    from azureml.core import Workspace
    from azureml.core.model import Model
    from azureml_inference_server_http.api.aml_response import AMLResponse as NewerResp

    assert Model is CoreModel and Req is AMLRequest and Resp is AMLResponse is NewerResp and callable(rawhttp)
    with pytest.raises(NotImplementedError, match="get_model_path"):
        Workspace.from_config()
    with pytest.raises(ImportError):
        importlib.import_module("azureml.core.webservice")  # only what scoring scripts need

    folder = tmp_path / "azureml-models" / "digits" / "2"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"x")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(folder))
    assert Model.get_model_path("digits") == str(folder / "model.onnx")
    assert Model.get_model_path("digits", version="2") == str(folder / "model.onnx")
    with pytest.raises(ModelPathNotFoundError, match="holds version 2"):
        Model.get_model_path("digits", 3)
    secret = tmp_path / "secret" / "1"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_bytes(b"key")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "azureml-models"))
    assert Model.get_model_path("digits") == str(folder / "model.onnx")
    for name in ("../secret", str(tmp_path / "secret")):  # paths, not model names: refused as the packager does
        with pytest.raises(ValueError, match="invalid model name"):
            Model.get_model_path(name)


def test_real_package_wins(fresh_azureml: None, tmp_path: Path) -> None:
    # A real azureml-core: a namespace package "azureml" with core/model.py, and no contrib.
    core = tmp_path / "site" / "azureml" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("from .model import Model\n")
    (core / "model.py").write_text("class Model:\n    REAL = True\n")
    sys.path.insert(0, str(tmp_path / "site"))
    importlib.invalidate_caches()

    assert real_module_available("azureml.core.model") and real_module_available("azureml")
    assert "azureml" not in sys.modules  # looked up, not imported
    served = install_azureml_compat()
    assert "azureml" not in served and "azureml.core" not in served and "azureml.core.model" not in served
    assert "azureml.contrib.services.aml_request" in served

    from azureml.contrib.services.aml_response import AMLResponse as Resp  # stand-in inside the real namespace
    from azureml.core.model import Model

    assert Model.REAL is True and Resp is AMLResponse


def test_aml_request_like_flask() -> None:
    request = AMLRequest.from_request(
        Request(
            b'{"a": 1}',
            content_type="application/json; charset=utf-8",
            headers={"x-ms-request-id": "r1", "cookie": "session=abc", "host": "edge:5001"},
            query="k=1&k=2&z=",
        )
    )
    assert request.method == "POST" and request.data == request.get_data() == b'{"a": 1}'
    assert request.get_data(as_text=True) == '{"a": 1}'
    assert request.headers["X-MS-Request-ID"] == request.headers.get("x-ms-request-id") == "r1"
    assert request.headers.get("missing", "d") == "d" and "Content-Type" in request.headers
    assert request.args["k"] == "1" and request.args.getlist("k") == ["1", "2"] and request.args.get("z") == ""
    assert request.full_path == "/score?k=1&k=2&z=" and request.url == "http://edge:5001/score?k=1&k=2&z="
    assert request.is_json and request.json == {"a": 1} and request.mimetype == "application/json"
    assert request.cookies == {"session": "abc"} and request.content_length == 8
    assert AMLRequest(b"", "GET").full_path == "/score?"  # werkzeug keeps the "?"

    text = AMLRequest(b"not json", headers={"Content-Type": "text/plain"})
    assert text.get_json(silent=True) is None
    with pytest.raises(UnsupportedMediaTypeError):
        text.get_json()
    with pytest.raises(BadInputError, match="malformed JSON"):
        text.get_json(force=True)
    form = AMLRequest(b"a=1&b=two", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.form == {"a": "1", "b": "two"} and not form.files


def test_aml_response_as_v1() -> None:
    plain = AMLResponse("bad request", 400).to_response()
    assert (plain.status, plain.body, plain.content_type) == (400, b"bad request", "text/html; charset=utf-8")
    as_json = AMLResponse({"x": 1}, 200, json_str=True).to_response()
    assert (as_json.body, as_json.content_type) == (b'{"x": 1}', "application/json")
    empty = AMLResponse(None, 204).to_response()
    assert (empty.body, empty.content_type) == (b"{}", "application/json")
    image = AMLResponse(b"\x89PNG", 200, {"content-type": "image/png", "Cache-Control": "no-store"})
    assert image.status_code == 200 and image.get_data() == b"\x89PNG" and image.mimetype == "image/png"
    out = image.to_response()
    assert out.content_type == "image/png" and out.headers == {"Cache-Control": "no-store"}
