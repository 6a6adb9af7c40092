"""Virtualenvs for real third-party peers whose pins clash with ours (e.g. the KServe SDK).

``peer_venv("kserve", ["kserve==0.21.0"])`` returns the venv's python, creating it on first use
under ``$EDGEPACK_TEST_VENVS`` (default ``/var/cache/edgepack/test-venvs``) and reusing it after:
a marker records what was installed, so a changed requirement list rebuilds it. A file lock keeps
parallel test workers from building the same venv twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ.get("EDGEPACK_TEST_VENVS", "/var/cache/edgepack/test-venvs"))


def peer_venv(name: str, requirements: list[str], timeout: float = 900) -> Path:
    """The python of a venv with exactly ``requirements`` installed (built once, then reused)."""
    ROOT.mkdir(parents=True, exist_ok=True)
    venv = ROOT / name
    python = venv / "bin" / "python"
    marker = venv / ".edgepack-requirements.json"
    wanted = json.dumps(sorted(requirements))
    with open(ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.exists() and marker.read_text() == wanted:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"pip install {' '.join(requirements)} into {venv} failed:\n{result.stderr[-3000:]}")
        marker.write_text(wanted)
        return python
