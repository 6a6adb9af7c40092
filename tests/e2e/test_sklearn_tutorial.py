"""Azure ML v1's "deploy a model locally" tutorial, as users wrote it, against edgepack.

The files are the tutorial's (Azure/MachineLearningNotebooks, how-to-use-azureml/deployment/deploy-to-local
and deploy-to-cloud): a Ridge regression trained on scikit-learn's bundled diabetes data, ``joblib.dump``
to ``sklearn_regression_model.pkl``, ``Model.register`` with tags and a description, the docs' ``score.py``
(``from azureml.core.model import Model``, inference-schema decorators, ``Model.get_model_path``), the docs'
``myenv.yml``, ``Environment`` + ``CondaDependencies``, ``InferenceConfig(entry_script=..., environment=...)``,
``LocalWebservice.deploy_configuration(port=...)``, ``Model.deploy``, ``wait_for_deployment(show_output=True)``,
``run(input_data=...)``, ``get_logs()``, a plain HTTP POST to ``scoring_uri``, the swagger document,
``reload()`` after editing score.py, and ``delete()``.

Changes from the docs, each because the original no longer runs anywhere: ``import joblib`` (not
``sklearn.externals.joblib``, removed in scikit-learn 0.23) and the conda file's Python and scikit-learn
versions (3.6.2 and 0.19.1 have no wheels for the image's Python 3.11; the pickle needs the training version).

External parts: process mode needs only this machine's Python (scikit-learn, joblib, inference-schema from
the ``sklearn`` and ``test`` extras); the Docker case (slow) needs the dev services' Docker engine and base
image, and pip wheels for scikit-learn for the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
import requests
import sklearn
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from cloud_targets import LocalWebservice, Model, Webservice, WebserviceException
from cloud_targets.targets.local.health import free_port
from packager import Workspace
from packager.image.environment import CondaDependencies, Environment
from packager.image.inference_config import InferenceConfig
from tests.cloud_targets.cli_support import runner
from tests.e2e.support import gone

# The docs' score.py; only ``import joblib`` differs (see the module docstring).
SCORE_PY = """\
import json
import numpy as np
import os
import pickle
import joblib
from sklearn.linear_model import Ridge
from azureml.core.model import Model

from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType


def init():
    global model
    # note here "sklearn_regression_model" is the name of the model registered under the workspace
    model_path = Model.get_model_path('sklearn_regression_model')
    # deserialize the model file back into a sklearn model
    model = joblib.load(model_path)


input_sample = np.array([[0.1, 1.2, 2.3, 3.4, 4.5, 5.6, 6.7, 7.8, 8.9, 9.0]])
output_sample = np.array([4429.929236457418])


@input_schema('data', NumpyParameterType(input_sample))
@output_schema(NumpyParameterType(output_sample))
def run(data):
    try:
        result = model.predict(data)
        # you can return any datatype as long as it is JSON-serializable
        return result.tolist()
    except Exception as e:
        error = str(e)
        return error
"""

# The docs' myenv.yml; the Python and scikit-learn pins are today's (see the module docstring).
MYENV_YML = f"""\
name: project_environment
dependencies:
  - python=3.11
  - pip:
    - azureml-defaults
    - scikit-learn=={sklearn.__version__}
    - numpy
    - inference-schema[numpy-support]
"""

# The docs' sample request: two rows of ten features.
SAMPLE = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]


def train_and_register(ws: Workspace) -> tuple[Ridge, Model]:
    """The tutorial's training cell: Ridge on the bundled diabetes data, pickled and registered."""
    X, y = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(X, y)
    joblib.dump(ridge, "sklearn_regression_model.pkl")
    model = Model.register(
        model_path="sklearn_regression_model.pkl",
        model_name="sklearn_regression_model",
        tags={"area": "diabetes", "type": "regression"},
        description="Ridge regression model to predict diabetes",
        workspace=ws,
    )
    return ridge, model


def write_docs_files() -> None:
    Path("score.py").write_text(SCORE_PY)
    Path("myenv.yml").write_text(MYENV_YML)


def test_register_deploy_local_score_reload_delete(
    ws: Workspace, mode: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ridge, model = train_and_register(ws)
    assert (model.name, model.version) == ("sklearn_regression_model", 1)
    assert model.tags == {"area": "diabetes", "type": "regression"}
    assert model.description == "Ridge regression model to predict diabetes"
    write_docs_files()

    environment = Environment("LocalDeploy")
    environment.python.conda_dependencies = CondaDependencies("myenv.yml")
    inference_config = InferenceConfig(entry_script="score.py", environment=environment)
    port = free_port()
    deployment_config = LocalWebservice.deploy_configuration(port=port)

    service = Model.deploy(ws, "myservice", [model], inference_config, deployment_config)
    service.wait_for_deployment(show_output=True)
    assert "myservice: Healthy" in capsys.readouterr().out
    assert service.state == "Healthy"
    assert service.scoring_uri == f"http://localhost:{port}/score"
    assert service.port == port

    # run() with the docs' JSON string, and with the bytes the local notebook sends
    expected = ridge.predict(np.array(SAMPLE, dtype=float)).tolist()
    sample_input = json.dumps({"data": SAMPLE})
    np.testing.assert_allclose(service.run(input_data=sample_input), expected, rtol=1e-12)
    np.testing.assert_allclose(service.run(input_data=bytes(sample_input, encoding="utf-8")), expected, rtol=1e-12)

    # the diabetes rows themselves, through plain HTTP as the docs' "consume a web service" page does
    X, _ = load_diabetes(return_X_y=True)
    resp = requests.post(
        service.scoring_uri, data=json.dumps({"data": X[:5].tolist()}), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(resp.json(), ridge.predict(X[:5]), rtol=1e-12)

    # a row of the wrong width: inference-schema's own message, as a client error (not run()'s try/except)
    resp = requests.post(service.scoring_uri, json={"data": [[1, 2, 3]]}, timeout=30)
    assert resp.status_code == 400 and "dimension" in resp.text

    # the swagger document carries the decorators' schema and examples
    swagger = requests.get(service.swagger_uri, timeout=30).json()
    text = json.dumps(swagger)
    assert "4429.929236457418" in text and "9.0" in text
    assert service.get_logs()  # the service's output, non-empty

    # the local notebook's update(): a retrained model, the environment's packages kept (Docker: rebuilt with them)
    X, y = load_diabetes(return_X_y=True)
    ridge2 = Ridge(alpha=0.1).fit(X, y)
    joblib.dump(ridge2, "sklearn_regression_model.pkl")
    model2 = Model.register(ws, model_path="sklearn_regression_model.pkl", model_name="sklearn_regression_model")
    caplog.clear()
    Webservice(ws, "myservice").update(models=[model2])  # a fresh handle: everything comes from the workspace
    service.wait_for_deployment()
    np.testing.assert_allclose(service.run(sample_input), ridge2.predict(np.array(SAMPLE, dtype=float)), rtol=1e-12)
    assert "not kept" not in caplog.text
    if mode == "process":  # the environment's packages are still the service's, and said to be this machine's
        assert f"not installed: scikit-learn=={sklearn.__version__}" in caplog.text

    # the local notebook's reload(): edit score.py, reload, the new answer without a rebuild
    Path("score.py").write_text(SCORE_PY.replace("return result.tolist()", "return 'hello from updated score.py'"))
    service.reload()
    assert service.run(input_data=sample_input) == "hello from updated score.py"

    handle = dict(Webservice(ws, "myservice")._record.target)
    assert handle["mode"] == mode and not gone(handle)
    service.delete()
    assert gone(handle)
    assert Webservice.list(ws) == []
    with pytest.raises(WebserviceException):
        Webservice(ws, "myservice")


def test_cli_with_inferenceconfig_json(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    """The same tutorial through ``az ml``'s files and edgepack's CLI: inferenceconfig.json, deploymentconfig.json."""
    run = runner(capsys)
    X, y = load_diabetes(return_X_y=True)
    ridge = Ridge().fit(X, y)
    joblib.dump(ridge, "sklearn_regression_model.pkl")
    write_docs_files()
    Path("inferenceconfig.json").write_text(json.dumps({"entryScript": "score.py", "condaFile": "myenv.yml"}))
    Path("deploymentconfig.json").write_text(json.dumps({"computeType": "local"}))

    r = run("model", "register", "-n", "sklearn_regression_model", "-p", "sklearn_regression_model.pkl",
            "--tag", "area=diabetes", "--tag", "type=regression",
            "--description", "Ridge regression model to predict diabetes", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json()["framework"] == "scikitlearn"  # detected from the pickle
    r = run("deploy", "-n", "myservice", "-m", "sklearn_regression_model:1",
            "--ic", "inferenceconfig.json", "--dc", "deploymentconfig.json", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json()["state"] == "Healthy"

    r = run("service", "run", "myservice", "-d", json.dumps({"data": SAMPLE}), "--json")
    assert r.code == 0, r.err
    np.testing.assert_allclose(r.json(), ridge.predict(np.array(SAMPLE, dtype=float)), rtol=1e-12)
    r = run("service", "logs", "myservice")
    assert r.code == 0 and "ready" in r.out
    r = run("service", "delete", "myservice", "-y")
    assert r.code == 0, r.err
    assert Webservice.list(ws) == []
