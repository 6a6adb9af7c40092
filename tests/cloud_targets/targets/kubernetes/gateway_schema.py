"""HTTPRoutes checked against Gateway API's published v1 schema by ``@kubernetes-models/gateway-api`` (npm, MIT).

``scripts/dev-services.sh`` installs the package (and node) and names its ``node_modules`` in ``services.env``
(``EDGEPACK_TEST_NODE_MODULES``). One ``node validate_httproutes.mjs`` run validates a list of routes: JSON on
stdin, one list of error messages per route on stdout. Types, required fields, enums, patterns and bounds are
checked; unknown fields are not (the package allows them), nor the CRD's CEL rules (only an API server runs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEV_DIR, unavailable

PACKAGE = "@kubernetes-models/gateway-api"
VERSION = "2.0.0"  # keep equal to GATEWAY_API_VERSION in scripts/dev-services.sh
SCRIPT = Path(__file__).with_name("validate_httproutes.mjs")


@dataclass(frozen=True)
class GatewaySchema:
    """A node binary and the ``node_modules`` directory holding :data:`PACKAGE`."""

    node: str
    node_modules: Path

    def errors(self, routes: list[dict[str, Any]]) -> list[list[str]]:
        """One list of messages per route (empty when the route is valid)."""
        return self._run(routes)["errors"]

    def version(self) -> str:
        return self._run([])["version"]

    def _run(self, routes: list[dict[str, Any]]) -> dict[str, Any]:
        proc = subprocess.run(
            [self.node, str(SCRIPT), str(self.node_modules)],
            input=json.dumps(routes),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{SCRIPT.name} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        out = json.loads(proc.stdout)
        if len(out["errors"]) != len(routes):
            raise RuntimeError(f"{SCRIPT.name} answered for {len(out['errors'])} routes, not {len(routes)}")
        return out


def _node_modules() -> Path | None:
    env_file = DEV_DIR / "services.env"
    if not env_file.is_file():
        return None
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "EDGEPACK_TEST_NODE_MODULES":
            return Path(value.strip())
    return None


@pytest.fixture(scope="session")
def gateway_schema() -> GatewaySchema:
    """The validator; skips locally (fails under CI) when node or the package is missing."""
    fix = "run scripts/dev-services.sh (or scripts/dev-services.sh start gateway-api)"
    node = shutil.which("node")
    if node is None:
        unavailable(f"node is not installed, so HTTPRoutes cannot be validated with {PACKAGE}: {fix}")
    modules = _node_modules()
    if modules is None:
        unavailable(f"{DEV_DIR / 'services.env'} does not name EDGEPACK_TEST_NODE_MODULES: {fix}")
    if not (modules / PACKAGE / "package.json").is_file():
        unavailable(f"{PACKAGE} is not installed in {modules}: {fix}")
    schema = GatewaySchema(node, modules)
    found = schema.version()
    if found != VERSION:
        unavailable(f"{modules} holds {PACKAGE} {found}, not {VERSION}: {fix}")
    return schema


__all__ = ["PACKAGE", "VERSION", "GatewaySchema", "gateway_schema"]
