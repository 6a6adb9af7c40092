"""A Keras model registered from a folder with several files, deployed locally with a score.py, and scored.

The folder holds what a user's training run leaves: ``model.keras``, ``labels.txt`` (one class name a line)
and ``preprocessing.json`` (the feature means and scales). ``score.py`` finds the folder with
``Model.get_model_path('iris-keras')`` and reads all three, as the Azure docs' Keras examples do.
The net is tiny (4 -> 8 -> 3, on scikit-learn's bundled iris data); answers are compared with the
model's own ``predict`` in this process.

External parts: TensorFlow (the ``tensorflow`` extra) on this machine, imported by the test and by the
service: slow. Process mode only (a Docker image would carry TensorFlow's wheels, hundreds of MB).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris

from cloud_targets import LocalWebservice, Model, Webservice
from packager import Workspace
from packager.image.inference_config import InferenceConfig
from tests.e2e.support import gone

pytestmark = pytest.mark.slow

SCORE_PY = """\
import json
import os

import numpy as np
import tensorflow as tf
from azureml.core.model import Model


def init():
    global model, labels, mean, scale
    model_dir = Model.get_model_path('iris-keras')  # the registered folder
    model = tf.keras.models.load_model(os.path.join(model_dir, 'model.keras'))
    with open(os.path.join(model_dir, 'labels.txt')) as f:
        labels = [line.strip() for line in f if line.strip()]
    with open(os.path.join(model_dir, 'preprocessing.json')) as f:
        prep = json.load(f)
    mean, scale = np.array(prep['mean']), np.array(prep['scale'])


def run(raw_data):
    data = (np.array(json.loads(raw_data)['data'], dtype=np.float32) - mean) / scale
    probabilities = model.predict(data.astype(np.float32), verbose=0)
    return {'probabilities': probabilities.tolist(),
            'labels': [labels[i] for i in probabilities.argmax(axis=1)]}
"""


def train_to_folder(folder: Path) -> tuple[object, np.ndarray, np.ndarray, list[str]]:
    """A tiny Keras net on iris, saved with its labels and preprocessing; returns it and its inputs."""
    import tensorflow as tf

    iris = load_iris()
    mean, scale = iris.data.mean(axis=0), iris.data.std(axis=0)
    tf.keras.utils.set_random_seed(0)
    net = tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(8, activation="relu"),
            tf.keras.layers.Dense(3, activation="softmax"),
        ]
    )
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    net.fit(((iris.data - mean) / scale).astype(np.float32), iris.target, epochs=20, verbose=0)
    folder.mkdir()
    net.save(folder / "model.keras")
    labels = [str(n) for n in iris.target_names]
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "preprocessing.json").write_text(json.dumps({"mean": mean.tolist(), "scale": scale.tolist()}))
    return net, mean, scale, labels


def test_keras_folder_deploy_and_score(ws: Workspace, tmp_path: Path) -> None:
    net, mean, scale, labels = train_to_folder(tmp_path / "iris_model")
    model = Model.register(ws, model_path="iris_model", model_name="iris-keras", tags={"framework": "keras"})
    assert model.model_framework == Model.Framework.TFKERAS  # detected from the .keras file
    Path("score.py").write_text(SCORE_PY)

    service = Model.deploy(
        ws, "iris-keras-svc", [model], InferenceConfig(entry_script="score.py"), LocalWebservice.deploy_configuration()
    )
    service.wait_for_deployment(show_output=True, timeout_sec=300)

    rows = load_iris().data[[0, 60, 120, 149]]
    want = net.predict(((rows - mean) / scale).astype(np.float32), verbose=0)
    got = service.run(json.dumps({"data": rows.tolist()}))
    np.testing.assert_allclose(np.array(got["probabilities"]), want, rtol=1e-5, atol=1e-6)
    assert got["labels"] == [labels[i] for i in want.argmax(axis=1)]

    resp = requests.post(service.scoring_uri, data=json.dumps({"data": rows[:1].tolist()}), timeout=60)
    assert resp.status_code == 200 and resp.json()["labels"] == got["labels"][:1]

    handle = dict(Webservice(ws, "iris-keras-svc")._record.target)
    service.delete()
    assert gone(handle)
