"""The README's two commands are the ones that work: CI runs the test command, the main command's
``edgepack`` step runs as written (plus ``--json``) and reports a whole pipeline."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = bash_blocks()[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def edgepack_steps(command: str) -> list[list[str]]:
    steps = [shlex.split(part) for part in command.split("&&")]
    return [s for s in steps if s[0] == "edgepack"]


def test_main_command_has_one_edgepack_step() -> None:
    """The first block installs, then runs the quickstart (what the slow test below runs)."""
    main_command = bash_blocks()[0].strip()
    assert "\n" not in main_command
    assert edgepack_steps(main_command) == [["edgepack", "quickstart"]]
    assert "pip install" in main_command


@pytest.mark.slow
def test_main_command_edgepack_step_works(tmp_path: Path) -> None:
    """Run the main command's ``edgepack`` step as written, with ``--json``, in an empty folder.

    The dev-services step is the environment's (CI runs ``scripts/dev-services.sh`` first, which saves the
    offline base the image step uses); the install step is this test's own. The pipeline's details are
    tested in tests/packager/test_quickstart.py: here, that the README's command completes every step.
    """
    from packager.errors import EdgepackError
    from packager.quickstart.base import find_base

    try:
        find_base()
    except EdgepackError as e:
        unavailable(f"no base image for the quickstart's image step ({e})")
    (step,) = edgepack_steps(bash_blocks()[0].strip())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env.pop("EDGEPACK_WORKSPACE", None)
    r = subprocess.run([*step, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report["ok"]
    assert {s["name"]: s["status"] for s in report["steps"]} == {
        "train": "ok", "convert": "ok", "quantize": "ok", "fpga": "ok", "build": "ok", "manifest": "ok",
        "serve": "ok",
    }  # fmt: skip
    assert all(report["accuracy"][k] > 0.9 for k in ("float", "int8", "fpga_emulated"))
    folder = tmp_path / "edgepack-quickstart"
    assert (folder / "image-oci" / "index.json").is_file()
    assert (folder / "workspace" / "registry.db").is_file()
    assert any((folder / "manifests").glob("*.json"))
