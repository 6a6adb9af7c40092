"""Helpers for the manifest tests: the published schema, the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from packager.cli import main
from packager.iotedge.validate import validate_manifest

ROOT = Path(__file__).resolve().parents[3]
SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "azure-iot-edge-deployment-2.0.json"
PACKAGED_SCHEMA = ROOT / "packager" / "iotedge" / "schemas" / "azure-iot-edge-deployment-2.0.json"
AGENT = ("modulesContent", "$edgeAgent", "properties.desired")
HUB = ("modulesContent", "$edgeHub", "properties.desired")


def agent(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["modulesContent"]["$edgeAgent"]["properties.desired"]


def hub(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["modulesContent"]["$edgeHub"]["properties.desired"]


def assert_valid(doc: dict[str, Any]) -> None:
    """Valid against the published schema (Draft 4) and edgepack's own checks."""
    schema = json.loads((SHARED_SCHEMA if SHARED_SCHEMA.is_file() else PACKAGED_SCHEMA).read_text())
    errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(doc)]
    assert errors == []
    assert validate_manifest(doc) == []


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def edgepack(*args: str, expect: int = 0, workspace: Path | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    prefix = ["--workspace", str(workspace)] if workspace else []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main([*prefix, *args])
    result = Result(int(exc.value.code or 0), out.getvalue(), err.getvalue())
    assert result.exit_code == expect, result.stdout + result.stderr
    return result
