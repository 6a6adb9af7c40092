"""What IoT Hub receives: a manifest's ``modulesContent`` checked, then wrapped as a device's configuration
content or as an automatic (base or layered) deployment.

:func:`deployment_content` is the exact body the SDK PUTs to ``/configurations/<id>`` and a file
``az iot edge deployment create --content`` accepts (``content.modulesContent``; az takes ``targetCondition``,
``priority``, ``labels`` and ``metrics`` from its own flags, the same values live here).
:func:`device_content` is ``{"modulesContent": ...}``: ``az iot edge set-modules --content`` and the body of
``POST /devices/<id>/applyConfigurationContent``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from packager.errors import InvalidInputError
from packager.iotedge.validate import MAX_FILE_BYTES, Problem, is_layered, validate_manifest

__all__ = [
    "InvalidManifestError",
    "check_deployment_id",
    "check_device_id",
    "deployment_content",
    "device_content",
    "load_manifest",
    "modules_content",
    "parse_pairs",
]

# IoT Hub configuration ids: up to 128 lowercase letters, digits and - : + % _ # * ? ! ( ) , = @ ; '
_DEPLOYMENT_ID_RE = re.compile(r"[a-z0-9\-:+%_#*?!(),=@;']{1,128}")
# IoT Hub device ids: up to 128 ASCII letters, digits and - . + % _ # * ? ! ( ) , : = @ $ '
_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9\-.+%_#*?!(),:=@$']{1,128}")
_METRIC_NAME_RE = re.compile(r"[A-Za-z0-9\-:+%_#*?!(),=@;'.]{1,128}")
_MAX_LABELS = 64
_MAX_METRICS = 64  # IoT Hub allows few custom metrics per configuration; bound what we send


class InvalidManifestError(InvalidInputError):
    """A manifest that fails validation; ``problems`` lists each one (path and what to change)."""

    def __init__(self, problems: list[Problem], name: str = "manifest"):
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        shown = "; ".join(str(p) for p in problems[:3]) + ("; ..." if len(problems) > 3 else "")
        super().__init__(
            f"{name} is not a valid deployment manifest ({count}): {shown} (see 'edgepack manifest validate')"
        )


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest file (at most :data:`MAX_FILE_BYTES`): ``{"modulesContent": ...}`` or az's
    ``{"content": {"modulesContent": ...}}``."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInputError(f"{name} is over {MAX_FILE_BYTES // 2**20} MiB: not a deployment manifest")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidInputError(f"{name} is nested too deeply to be a deployment manifest") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{name} is not a JSON object with modulesContent")
    return doc


def modules_content(manifest: dict[str, Any], layered: bool | None = None, name: str = "manifest") -> dict[str, Any]:
    """The validated ``modulesContent`` of ``manifest`` (``content.modulesContent`` accepted too).

    ``layered``: None accepts either kind; True/False insists on it (a full manifest sent as a layered
    deployment would replace the base's runtime, a layered one applied whole breaks the device).
    """
    doc = manifest
    if isinstance(doc.get("content"), dict) and "modulesContent" not in doc:
        doc = doc["content"]  # az's --content file shape
    if not isinstance(doc, dict) or not isinstance(doc.get("modulesContent"), dict):
        raise InvalidInputError(f"{name} has no modulesContent object: is it an IoT Edge deployment manifest?")
    doc = {"modulesContent": doc["modulesContent"]}
    problems = validate_manifest(doc)
    if problems:
        raise InvalidManifestError(problems, name)
    kind = is_layered(doc)
    if layered is True and not kind:
        raise InvalidInputError(
            f"{name} is a full manifest ($edgeAgent properties.desired): a layered deployment holds only "
            "properties.desired.<path> keys; drop --layered to deploy it as a base deployment"
        )
    if layered is False and kind:
        raise InvalidInputError(
            f"{name} is a layered manifest (properties.desired.<path> keys): pass --layered to create a layered "
            "deployment; a device needs a full manifest"
        )
    return doc["modulesContent"]


def check_deployment_id(deployment_id: str) -> str:
    """IoT Hub's rule for configuration ids, checked before any request."""
    if not _DEPLOYMENT_ID_RE.fullmatch(deployment_id):
        raise InvalidInputError(
            f"deployment id {deployment_id!r} is not valid: up to 128 lowercase letters, digits and "
            "- : + % _ # * ? ! ( ) , = @ ; '"
        )
    return deployment_id


def check_device_id(device_id: str) -> str:
    """IoT Hub's rule for device ids, checked before any request."""
    if not isinstance(device_id, str) or not _DEVICE_ID_RE.fullmatch(device_id):
        raise InvalidInputError(
            f"device id {device_id!r} is not valid: up to 128 ASCII letters, digits and "
            "- . + % _ # * ? ! ( ) , : = @ $ '"
        )
    return device_id


def parse_pairs(items: list[str] | tuple[str, ...], what: str) -> dict[str, str]:
    """``NAME=VALUE`` options (``--label``, ``--metric``) as a dict; a repeated name is an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InvalidInputError(f"{what} {item!r} is not NAME=VALUE")
        if key in out:
            raise InvalidInputError(f"{what} {key!r} is given twice")
        out[key] = value.strip()
    return out


def _check_labels(labels: dict[str, str]) -> None:
    if len(labels) > _MAX_LABELS:
        raise InvalidInputError(f"{len(labels)} labels: at most {_MAX_LABELS}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 128 or len(value) > 1024:
            raise InvalidInputError(f"label {key!r}: names up to 128 characters, values up to 1024, both strings")


def _check_metrics(metrics: dict[str, str]) -> None:
    if len(metrics) > _MAX_METRICS:
        raise InvalidInputError(f"{len(metrics)} metrics: at most {_MAX_METRICS}")
    for name, query in metrics.items():
        if not _METRIC_NAME_RE.fullmatch(name):
            raise InvalidInputError(
                f"metric name {name!r} is not valid: up to 128 letters, digits and - : + % _ . etc."
            )
        if not isinstance(query, str) or not query.strip().upper().startswith("SELECT"):
            raise InvalidInputError(
                f'metric {name!r}: the value is an IoT Hub query such as "SELECT deviceId FROM devices.modules '
                'WHERE properties.reported.lastDesiredStatus.code = 200"'
            )


def device_content(manifest: dict[str, Any], name: str = "manifest") -> dict[str, Any]:
    """``{"modulesContent": ...}`` for one device (a full manifest, validated)."""
    return {"modulesContent": modules_content(manifest, layered=False, name=name)}


def deployment_content(
    deployment_id: str,
    manifest: dict[str, Any],
    target_condition: str,
    priority: int,
    labels: dict[str, str] | None = None,
    metrics: dict[str, str] | None = None,
    layered: bool = False,
    name: str = "manifest",
) -> dict[str, Any]:
    """The IoT Hub Configuration for an automatic deployment, as JSON (see the module docstring)."""
    check_deployment_id(deployment_id)
    if not isinstance(target_condition, str) or not target_condition.strip():
        raise InvalidInputError("a deployment needs a target condition, e.g. \"tags.environment='prod'\"")
    if len(target_condition) > 4096:
        raise InvalidInputError("the target condition is over 4096 characters")
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise InvalidInputError(f"priority {priority!r} is not a whole number 0 or more")
    labels = dict(labels or {})
    metrics = dict(metrics or {})
    _check_labels(labels)
    _check_metrics(metrics)
    body: dict[str, Any] = {
        "id": deployment_id,
        "content": {"modulesContent": modules_content(manifest, layered=layered, name=name)},
        "targetCondition": target_condition.strip(),
        "priority": priority,
        "labels": labels,
        "metrics": {"queries": metrics},
    }
    return body
