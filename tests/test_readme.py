"""The README's commands are the ones that work."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = bash_blocks()[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_main_command_edgepack_steps_work(tmp_path: Path) -> None:
    """Run the edgepack parts of the README's first command (the install step is this test's own)."""
    main_command = bash_blocks()[0].strip()
    steps = [shlex.split(part) for part in main_command.split("&&")]
    edgepack_steps = [s for s in steps if s[0] == "edgepack"]
    assert len(edgepack_steps) >= 2
    env = {"EDGEPACK_WORKSPACE": str(tmp_path / "ws"), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    for step in edgepack_steps:
        r = subprocess.run(step, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        assert r.returncode == 0, (step, r.stderr)
    listed = subprocess.run(
        ["edgepack", "model", "list", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert [m["id"] for m in json.loads(listed.stdout)] == ["digits:1"]
    assert json.loads(listed.stdout)[0]["framework"] == "onnx"
