"""Endpoints under test: a tiny model whose versions answer differently, and clients that count every answer."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from packager import Workspace
from packager.image.inference_config import InferenceConfig
from packager.registry import Model

PIN_HEADER = "azureml-model-deployment"

SCORE_PY = """
import json
from azureml.core.model import Model

TAG = {tag!r}


def init():
    global WEIGHT
    with open(Model.get_model_path("tiny")) as fh:
        WEIGHT = int(fh.read())


def run(raw):
    x = json.loads(raw)["x"]
    return {{"version": TAG, "weight": WEIGHT, "y": x * WEIGHT}}
"""


def register(ws: Workspace, tmp: Path, weight: int) -> Model:
    """A new version of the model ``tiny``: a file holding ``weight``."""
    path = tmp / f"tiny-{weight}" / "weight.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(weight))
    return Model.register(ws, model_path=str(path), model_name="tiny")


def app(tmp: Path, tag: str) -> InferenceConfig:
    """An entry script answering ``{"version": tag, "weight": W, "y": x * W}``."""
    folder = tmp / f"app-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(SCORE_PY.format(tag=tag))
    return InferenceConfig(entry_script="score.py", source_directory=str(folder))


@dataclass
class Tally:
    """What a client run saw: answers by the version that served them, and every failure (with why)."""

    served: Counter = field(default_factory=Counter)
    weights: dict[str, set[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def total(self) -> int:
        return sum(self.served.values()) + len(self.failures)

    def share(self, version: str) -> float:
        return 100.0 * self.served[version] / max(1, sum(self.served.values()))


def client(
    url: str,
    key: str | None,
    tally: Tally,
    count: int | None = None,
    stop: threading.Event | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Send ``count`` requests (or until ``stop``), checking each answer against the version header.

    ``tags`` maps a version name to the tag its entry script answers (default: the name itself)."""
    session = requests.Session()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    i = 0
    while (count is None or i < count) and not (stop is not None and stop.is_set()):
        i += 1
        x = i % 97
        try:
            resp = session.post(url, data=json.dumps({"x": x}), headers=headers, timeout=60)
        except requests.RequestException as exc:
            with tally.lock:
                tally.failures.append(f"request {i}: {exc}")
            continue
        version = resp.headers.get(PIN_HEADER, "")
        problem = None
        if resp.status_code != 200:
            problem = f"HTTP {resp.status_code} from {version or '?'}: {resp.text[:200]}"
        else:
            doc = resp.json()
            want = (tags or {}).get(version, version)
            if doc.get("version") != want:
                problem = f"header says {version!r}, body says {doc!r}"
            elif doc.get("y") != x * doc.get("weight", 0):
                problem = f"wrong answer {doc!r} for x={x}"
        with tally.lock:
            if problem:
                tally.failures.append(problem)
            else:
                tally.served[version] += 1
                tally.weights.setdefault(version, set()).add(doc["weight"])


def run_clients(url: str, key: str | None, tally: Tally, n: int, **kwargs: object) -> list[threading.Thread]:
    """Start ``n`` client threads (join them, or set their ``stop`` event and join)."""
    threads = [threading.Thread(target=client, args=(url, key, tally), kwargs=kwargs, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads
