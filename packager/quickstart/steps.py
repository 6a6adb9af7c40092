"""The quickstart's steps, each through the project's Python API: train and register, convert, quantize,
compile for the FPGA, build the image, write and validate the IoT Edge manifest, serve and score.

Each step fills its :class:`~packager.quickstart.report.StepResult` (artefact, details) and raises on failure;
:mod:`packager.quickstart.run` decides what runs and records failures.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packager.image.spec import Platform
from packager.quickstart import data as qdata
from packager.quickstart.base import BaseChoice, choose_platforms, find_base
from packager.quickstart.report import Listener, StepResult
from packager.quickstart.services import mqtt_address, reachable
from packager.registry import Model
from packager.workspace import Workspace

MODEL_NAME = "digits"
MODULE_NAME = "digits"
MQTT_SERVICE = "quickstart"
DEFAULT_REPOSITORY = "127.0.0.1:5000/edgepack-quickstart/digits"
LAYOUT_TAG = "quickstart"


@dataclass
class Options:
    """What ``edgepack quickstart`` was asked to do."""

    directory: Path
    registry: str | None = None  # push here instead of writing an OCI layout
    base: str | None = None
    platforms: list[Platform] | None = None
    mqtt: bool = True
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    skip: frozenset[str] = frozenset()


@dataclass
class Context:
    """What the steps share: the options, the workspace, the data and what earlier steps made."""

    options: Options
    workspace: Workspace
    listener: Listener
    services: dict[str, str]
    digits: qdata.Digits | None = None
    eval_file: Path | None = None
    models: dict[str, Model] = field(default_factory=dict)
    build: dict[str, Any] | None = None
    base: BaseChoice | None = None

    @property
    def directory(self) -> Path:
        return self.options.directory

    def note(self, step: str, text: str) -> None:
        self.listener.note(step, text)


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions).reshape(-1) == labels))


# -------------------------------------------------------------------------------------------- 1. train
def train(ctx: Context, result: StepResult) -> None:
    ctx.note("train", "loading sklearn's bundled digits")
    digits = ctx.digits = qdata.load()
    ctx.eval_file = digits.write_eval(ctx.directory / "data" / "digits-test.npz")
    ctx.note("train", f"training a 64-{qdata.HIDDEN[0]}-10 MLP on {len(digits.y_train)} images")
    clf = qdata.train(digits)
    accuracy = float(clf.score(digits.x_test, digits.y_test))
    path = qdata.save(clf, ctx.directory / "data" / "model.pkl")
    model = Model.register(
        ctx.workspace,
        model_path=str(path),
        model_name=MODEL_NAME,
        tags={"source": "edgepack quickstart"},
        properties={"accuracy": f"{accuracy:.4f}", "dataset": "sklearn digits (test 25 %)"},
        model_framework=Model.Framework.SCIKITLEARN,
        sample_input=digits.x_test[:8],
    )
    ctx.models["float"] = model
    result.artefact = model.id
    result.details = {
        "model": model.id,
        "accuracy": accuracy,
        "train_rows": len(digits.y_train),
        "test_rows": len(digits.y_test),
    }


# -------------------------------------------------------------------------------------------- 2. convert
def convert(ctx: Context, result: StepResult) -> None:
    from packager.convert import ConvertOptions, convert_model

    source = ctx.models["float"]
    converted = convert_model(ctx.workspace, source.name, source.version, options=ConvertOptions(target="onnx"))
    ctx.models["onnx"] = converted.model
    parity = {d.name: d.max_abs_diff for d in converted.diffs}
    result.artefact = converted.model.id
    result.details = {
        "model": converted.model.id,
        "parity_max_abs_diff": max(parity.values(), default=0.0),
        "parity": parity,
        "converter": f"{converted.conversion.converter} {converted.conversion.converter_version}",
        "opset": converted.conversion.opset,
    }


# -------------------------------------------------------------------------------------------- 3. quantize
def quantize(ctx: Context, result: StepResult) -> None:
    from packager.quantize import quantize_model

    assert ctx.digits is not None and ctx.eval_file is not None
    source = ctx.models["onnx"]
    quantized = quantize_model(
        ctx.workspace,
        source.name,
        source.version,
        format="qdq",
        calibration=ctx.digits.x_train[: qdata.CALIBRATION_ROWS],
        labels=str(ctx.eval_file),
        repeats=0,
    )
    report = quantized.report.to_dict()
    ctx.models["int8"] = quantized.model
    result.artefact = quantized.model.id
    result.details = {
        "model": quantized.model.id,
        "accuracy": report.get("accuracy_after"),
        "accuracy_float": report.get("accuracy_before"),
        "size_before": report.get("size_before"),
        "size_after": report.get("size_after"),
        "max_abs_diff": report.get("max_abs_diff"),
    }


# -------------------------------------------------------------------------------------------- 4. FPGA
def fpga(ctx: Context, result: StepResult) -> None:
    from packager.fpga_compile import compile_registered

    assert ctx.digits is not None and ctx.eval_file is not None
    source = ctx.models["onnx"]
    compiled = compile_registered(
        ctx.workspace,
        source.name,
        source.version,
        format="int8",
        calibration=ctx.digits.x_train[: qdata.CALIBRATION_ROWS],
        labels=str(ctx.eval_file),
        progress=lambda stage: ctx.note("fpga", str(stage)),
    )
    ctx.models["fpga"] = compiled.model
    acc = compiled.report.get("accuracy") or {}
    split = compiled.report.get("split") or {}
    result.artefact = compiled.model.id
    result.details = {
        "model": compiled.model.id,
        "format": "int8",
        "accuracy": acc.get("emulated"),
        "accuracy_float": acc.get("float"),
        "agreement_with_float": acc.get("agreement"),
        "accelerator_layers": len(split.get("accelerator", [])),
        "host_ops": len(split.get("host", [])),
    }


# -------------------------------------------------------------------------------------------- 5. build
def build(ctx: Context, result: StepResult, reporter: Any = None) -> None:
    from packager.image.builder import BuildRequest, Destination, run

    ctx.note("build", "finding a base image")
    base = ctx.base = find_base(ctx.options.base)
    ctx.services["base"] = f"{base.ref} ({base.source})"
    platforms = choose_platforms(base, ctx.options.platforms)
    if ctx.options.registry:
        destination = Destination.registry(ctx.options.registry)
        ctx.services["registry"] = f"pushed to {destination.ref}"
    else:
        layout = ctx.directory / "image-oci"
        destination = Destination.oci_layout(layout, LAYOUT_TAG)
        if not base.offline:
            ctx.services["registry"] = f"base pulled from {base.ref}; image written to an OCI layout"
    ctx.note("build", f"building {', '.join(map(str, platforms))} on {base.ref}")
    request = BuildRequest(
        [ctx.models["onnx"]],
        destination,
        platforms=platforms,
        base=base.ref,
        labels={"io.edgepack.quickstart": "true"},
    )
    summary = ctx.build = run(ctx.workspace, request, reporter)
    where = summary.get("reference") or f"oci:{summary['oci_layout']}:{LAYOUT_TAG}"
    result.artefact = where if summary.get("reference") else f"{summary['index_digest'][:19]}… in {where}"
    result.details = {
        "index_digest": summary["index_digest"],
        "platforms": {p: doc["digest"] for p, doc in summary["platforms"].items()},
        "base": base.ref,
        "base_source": base.source,
        "oci_layout": summary.get("oci_layout"),
        "reference": summary.get("reference"),
        "bytes": sum(la["size"] for doc in summary["platforms"].values() for la in doc["layers"]),
    }


# -------------------------------------------------------------------------------------------- 6. manifest
def manifest(ctx: Context, result: StepResult) -> None:
    from packager.iotedge.manifest import build_manifest, manifests_from_build, scoring_module, write_manifest
    from packager.iotedge.validate import validate_file

    repository = ctx.options.registry or DEFAULT_REPOSITORY
    out = ctx.directory / "manifests"
    model = ctx.models["onnx"]
    if ctx.build is not None:
        docs = manifests_from_build(
            ctx.build, repository=None if ctx.build.get("reference") else repository, name=MODULE_NAME
        )
        files = {key: out / f"deployment.{key}.json" for key in docs}
    else:  # no image was built: the manifest names the tag it would have had
        image = f"{repository.rsplit('@', 1)[0]}"
        docs = {"tag": build_manifest([scoring_module(image, name=MODULE_NAME, model_version=str(model.version))])}
        files = {"tag": out / "deployment.json"}
    problems: dict[str, list[str]] = {}
    for key, doc in docs.items():
        write_manifest(files[key], doc)
        problems[key] = [str(p) for p in validate_file(files[key])]
    bad = {k: v for k, v in problems.items() if v}
    result.artefact = ", ".join(str(f.relative_to(ctx.directory)) for f in files.values())
    result.details = {
        "files": {k: str(f) for k, f in files.items()},
        "valid": not bad,
        "problems": problems,
        "images": {
            k: doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE_NAME]["settings"]["image"]
            for k, doc in docs.items()
        },
    }
    if ctx.build is None:
        result.details["note"] = "no image was built: the manifest names the image by tag, not digest"
    elif not ctx.build.get("reference"):
        layout = f"oci:{ctx.build['oci_layout']}:{LAYOUT_TAG}"
        result.details["note"] = (
            f"push the image where the manifest names it: skopeo copy --all {layout} docker://{repository}"
        )
    if bad:
        key, found = next(iter(bad.items()))
        raise ValueError(f"the generated manifest {files[key]} is not valid: {found[0]}")


# -------------------------------------------------------------------------------------------- 7. serve
def _onnx_reference(model: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    """What onnxruntime gives for ``x`` on the registered ONNX file itself."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgepack-quickstart-") as tmp:
        path = Path(model.download(tmp, exist_ok=True))
        onnx_file = path if path.is_file() else next(path.rglob("*.onnx"))
        session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


def _compare(answer: Any, expected: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    predictions = np.asarray(answer["label"]).reshape(-1)
    probabilities = np.asarray(answer["probabilities"], dtype=np.float32)
    return {
        "samples": len(predictions),
        "predictions": predictions.tolist(),
        "equal_to_onnx": bool(np.array_equal(predictions, expected["label"].reshape(-1))),
        "max_abs_diff": float(np.max(np.abs(probabilities - expected["probabilities"]))),
        "accuracy": _accuracy(predictions, labels),
    }


def serve(ctx: Context, result: StepResult) -> None:
    import requests

    from edge_module.model_dir import write_model_dir
    from edge_module.scoring import build_app
    from edge_module.server.lifecycle import BackgroundServer
    from edge_module.settings import Settings

    assert ctx.digits is not None
    model = ctx.models["onnx"]
    x = ctx.digits.x_test[: qdata.HTTP_SAMPLES]
    labels = ctx.digits.y_test[: qdata.HTTP_SAMPLES]
    expected = _onnx_reference(model, x)
    mqtt_settings, mqtt_reason = _mqtt_settings(ctx)
    root = Path(tempfile.mkdtemp(prefix="serve-", dir=ctx.directory))
    try:
        model_dir = write_model_dir(root, {(model.name, model.version): lambda t: model.download(t, exist_ok=True)})
        settings = Settings(port=0, host="127.0.0.1", mqtt=mqtt_settings(root) if mqtt_settings else None)
        with BackgroundServer(build_app(None, None, str(model_dir)), settings) as srv:
            if not srv.wait_ready(60):
                raise RuntimeError(f"the scoring module did not load {model.id}: {srv.states[-1][1].get('error')}")
            ctx.note("serve", f"scoring {len(x)} test images over HTTP at {srv.url}/score")
            resp = requests.post(f"{srv.url}/score", json={"data": x.tolist()}, timeout=30)
            resp.raise_for_status()
            http = {"url": f"{srv.url}/score", **_compare(resp.json(), expected, labels)}
            mqtt: dict[str, Any] = {"status": "skipped", "reason": mqtt_reason}
            if mqtt_settings:
                mqtt = _score_mqtt(ctx, srv, x, expected, labels)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result.artefact = http["url"] + (f" + mqtt {mqtt['topic']}" if mqtt.get("status") == "ok" else "")
    result.details = {"model": model.id, "http": http, "mqtt": mqtt}
    if not http["equal_to_onnx"]:
        raise AssertionError("the scoring module's HTTP predictions differ from the ONNX model's")
    if mqtt.get("status") == "ok" and not mqtt["equal_to_onnx"]:
        raise AssertionError("the scoring module's MQTT predictions differ from the ONNX model's")


def _mqtt_settings(ctx: Context) -> tuple[Callable[[Path], Any] | None, str]:
    """A factory of the server's MQTT settings when a broker answers, else None and why not."""
    from edge_module.transports.settings import MqttSettings

    url = ctx.options.mqtt_url
    if not ctx.options.mqtt:
        ctx.services["mqtt"] = "not used (--no-mqtt)"
        return None, "--no-mqtt"
    host, port = mqtt_address(url)
    if not reachable(host, port):
        ctx.services["mqtt"] = f"no broker at {url}: scored over HTTP only"
        return None, f"no broker answers at {url}"
    ctx.services["mqtt"] = f"broker at {url}"
    return (lambda root: MqttSettings(url=url, service=MQTT_SERVICE, spool_dir=str(root / "spool"))), ""


def _score_mqtt(
    ctx: Context, srv: Any, x: np.ndarray, expected: dict[str, np.ndarray], labels: np.ndarray
) -> dict[str, Any]:
    from edge_module.transports.mqtt import mqtt_request

    (transport,) = srv.server.transports
    transport.wait_connected(15)
    topic = f"edgepack/{MQTT_SERVICE}/score/request"
    ctx.note("serve", f"scoring {len(x)} test images over MQTT on {topic}")
    answer = mqtt_request(ctx.options.mqtt_url, topic, {"data": x.tolist()}, timeout=15)
    return {"status": "ok", "broker": ctx.options.mqtt_url, "topic": topic, **_compare(answer, expected, labels)}
