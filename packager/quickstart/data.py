"""The quickstart's embedded defaults: sklearn's bundled digits (no download) and a tiny MLP trained on them."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED = 0
HIDDEN = (32,)
CALIBRATION_ROWS = 200
HTTP_SAMPLES = 32


@dataclass(frozen=True)
class Digits:
    """8x8 digit images as 64 floats in [0, 1], split 75/25 (stratified, fixed seed)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def write_eval(self, path: Path) -> Path:
        """The test set as an .npz with ``x`` and ``y`` (what quantize and fpga compile read as labels)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=self.x_test, y=self.y_test)
        return path


def load() -> Digits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return Digits(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64))


def train(data: Digits) -> Any:
    """A 64-32-10 MLP (about a second on one core)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=300, random_state=SEED).fit(data.x_train, data.y_train)


def save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))
    return path
