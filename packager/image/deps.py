"""The dependency layer: wheels for the target platform installed with ``pip install --target``.

pip runs on the build machine and picks binary wheels for the image's platform (``--platform``,
``--python-version``, ``--implementation cp``, ``--abi``), so nothing is compiled and nothing runs
in the image. The result is normalised (no ``__pycache__``, no console scripts whose shebang names
the build machine's Python, ``RECORD`` files without them) and cached under
``<cache_root>/deps/<key>/site-packages``: a rerun with the same requirements does not call pip.
pip's own download cache keeps the wheels.

pip takes only wheels for another platform, so the few pure-Python projects the runtime needs that
publish no wheel (:data:`SDIST_ONLY`: paho-mqtt 1.6.1, which azure-iot-device requires) are built
into a wheel on this machine once, under ``<cache_root>/wheelhouse``, and offered to pip with
``--find-links``: with no compiled code, one such wheel serves every platform.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from packager.errors import EdgepackError, InvalidInputError
from packager.fs import publish_file, replace_dir
from packager.image import tarball
from packager.image.requirements import parse_requirement, requirement_name
from packager.image.spec import DEPS_DIR, PYTHON_VERSION, LayerSource, NullReporter, Platform, Reporter


def cpython_abi(python_version: str = PYTHON_VERSION) -> str:
    """The wheel ABI tag of a CPython version: ``3.11`` → ``cp311``."""
    return "cp" + python_version.replace(".", "")


#: glibc of the default base (Debian bookworm): wheels for manylinux_2_17 ... 2_36 all run on it.
BASE_GLIBC = (2, 36)
OLDEST_GLIBC = (2, 17)
#: pip's platform tag suffix per OCI architecture (and variant).
ARCH_TAGS = {("amd64", ""): "x86_64", ("arm64", ""): "aarch64", ("arm", "v7"): "armv7l"}
#: Packages PyPI publishes no wheel of for a platform, checked before pip runs (clearer than pip's message).
NO_WHEELS = {
    ("arm", "v7"): {
        "onnxruntime": "onnxruntime publishes no 32-bit ARM wheels on PyPI",
        "numpy": f"numpy publishes no {cpython_abi()} wheels for 32-bit ARM on PyPI",
        "ai-edge-litert": "ai-edge-litert (LiteRT, for .tflite models) publishes no 32-bit ARM wheels",
    },
}
#: What the no-code app needs beyond :func:`runtime_requirements` to serve a model file, by suffix
#: (``edge_module.scoring.registry`` picks the runtime); ONNX needs nothing more, and neither do FPGA
#: packages (``fpga.json``: the emulator in ``edge_module.numerics`` is numpy, the host part onnxruntime).
MODEL_FILE_REQUIREMENTS = {".tflite": "ai-edge-litert>=1.2"}
#: azure-iot-device 2.14 requires paho-mqtt below 2; PyPI has 1.6.1 as an sdist only.
PAHO_REQUIREMENT = "paho-mqtt>=1.6.1,<2"
#: Pure-Python projects without a wheel on PyPI that images need: project -> what to build a wheel of.
SDIST_ONLY = {"paho-mqtt": PAHO_REQUIREMENT}
STAGE_VERSION = "edgepack-deps-v1"
_NO_MATCH_RE = re.compile(r"No matching distribution found for ([^\s]+)")


def platform_tags(platform: Platform, glibc: tuple[int, int] = BASE_GLIBC) -> list[str]:
    """pip ``--platform`` values for ``platform``: every manylinux glibc level the base can run, newest first.

    pip does not expand ``manylinux_2_28`` to older levels by itself, so e.g. arm64 needs both
    ``manylinux_2_28_aarch64`` (onnxruntime 1.31, numpy 2.4) and ``manylinux2014_aarch64``
    (protobuf, orjson); listing only the latter silently gives onnxruntime 1.16.3.
    """
    if platform.os != "linux":
        raise InvalidInputError(f"platform {platform}: only linux images can be built")
    arch = ARCH_TAGS.get((platform.architecture, platform.variant))
    if arch is None:
        supported = ", ".join(f"linux/{a}{'/' + v if v else ''}" for a, v in ARCH_TAGS)
        raise InvalidInputError(f"platform {platform} is not supported: use one of {supported}")
    tags = [f"manylinux_{glibc[0]}_{minor}_{arch}" for minor in range(glibc[1], OLDEST_GLIBC[1] - 1, -1)]
    if arch in ("x86_64", "aarch64", "armv7l"):
        tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def runtime_requirements() -> list[str]:
    """What ``edge_module`` needs inside an image, its MQTT and IoT Edge transports included;
    onnxruntime pinned to the host's major.minor. azure-iot-device 2.14 caps paho-mqtt below 2."""
    try:
        major, minor = metadata.version("onnxruntime").split(".")[:2]
        ort = f"onnxruntime>={major}.{minor},<{major}.{int(minor) + 1}"
    except metadata.PackageNotFoundError:
        ort = "onnxruntime>=1.31,<1.32"
    transports = [PAHO_REQUIREMENT, "azure-iot-device>=2.14,<3"]
    return ["httptools>=0.6", "numpy>=1.26", ort, "orjson>=3.10", "uvloop>=0.19", *transports]


def model_requirements(model_files: Iterable[str], entry_script: str | None = None) -> list[str]:
    """The runtime libraries the no-code app needs for ``model_files`` (e.g. LiteRT for ``.tflite``);
    none with an entry script, which lists what it imports in its own environment."""
    if entry_script:
        return []
    wanted = {req for f in model_files for suffix, req in MODEL_FILE_REQUIREMENTS.items() if f.lower().endswith(suffix)}
    return sorted(wanted)


def wheelhouse(requirements: list[str], cache_root: Path) -> Path | None:
    """``<cache_root>/wheelhouse`` holding a wheel of each :data:`SDIST_ONLY` project ``requirements``
    name (built with this machine's pip the first time); None when they name none."""
    wanted = {requirement_name(r) for r in requirements} & set(SDIST_ONLY)
    if not wanted:
        return None
    house = Path(cache_root) / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    for name in sorted(wanted):
        if any(house.glob(f"{name.replace('-', '_')}-*-py3-none-any.whl")):
            continue
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=house))
        try:
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--no-input"]
            proc = subprocess.run([*cmd, "-w", str(work), SDIST_ONLY[name]], capture_output=True, text=True)
            wheels = sorted(work.glob("*-py3-none-any.whl"))
            if proc.returncode != 0 or not wheels:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
                raise EdgepackError(f"cannot build a wheel of {SDIST_ONLY[name]} (it publishes none):\n{tail}")
            for wheel in wheels:
                publish_file(wheel, house / wheel.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return house


def _normalise_requirements(requirements: list[str]) -> list[str]:
    out: list[str] = []
    for r in requirements:
        line = r.split(" #", 1)[0].strip()
        if line.startswith("-"):
            raise InvalidInputError(
                f"requirement {r!r}: pip options are not supported in the image's requirements; list packages only"
            )
        if line and line not in out:
            parse_requirement(line, "the image's requirements")
            out.append(line)
    return out


def deps_key(requirements: list[str], platform: Platform, python_version: str = PYTHON_VERSION) -> str:
    """Cache key of a staged install: requirements, platform, Python version and the tags pip is given."""
    doc = {
        "v": STAGE_VERSION,
        "requirements": sorted(_normalise_requirements(requirements)),
        "platform": str(platform),
        "python": python_version,
        "tags": platform_tags(platform),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def check_wheels(requirements: list[str], platform: Platform, python_version: str) -> None:
    gaps = NO_WHEELS.get((platform.architecture, platform.variant), {})
    names = {requirement_name(r) for r in _normalise_requirements(requirements)}
    found = [(name, reason) for name, reason in gaps.items() if name in names]
    if found:
        abi = cpython_abi(python_version)
        what = "; ".join(f"{name} has no wheel for {platform} ({abi}): {reason}" for name, reason in found)
        raise InvalidInputError(f"{what}. Build for linux/amd64 or linux/arm64 instead")


def pip_command(
    requirements: list[str],
    platform: Platform,
    target: Path,
    python_version: str = PYTHON_VERSION,
    find_links: Path | None = None,
) -> list[str]:
    abi = cpython_abi(python_version)
    cmd = [
        sys.executable, "-m", "pip", "install", "--target", str(target), "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp", "--abi", abi,
        "--no-compile", "--no-warn-script-location", "--disable-pip-version-check", "--no-input",
    ]  # fmt: skip
    for tag in platform_tags(platform):
        cmd += ["--platform", tag]
    if find_links is not None:
        cmd += ["--find-links", str(find_links)]
    return [*cmd, *requirements]


def _pip_failure(output: str, platform: Platform, python_version: str) -> EdgepackError:
    abi = cpython_abi(python_version)
    m = _NO_MATCH_RE.search(output)
    if m:
        name = m.group(1)
        return InvalidInputError(
            f"{name} has no wheel for {platform} ({abi}) on the package index: pin a version that publishes "
            f"one, drop the package, or build for another platform"
        )
    tail = "\n".join(output.strip().splitlines()[-15:])
    return EdgepackError(f"pip could not install the requirements for {platform}:\n{tail}")


def normalise_tree(root: Path) -> None:
    """Make a ``pip install --target`` folder byte-identical across runs and machines.

    Drops ``__pycache__`` and ``bin/`` (console scripts carry the build machine's Python in their
    shebang and are never run in the image), and the ``RECORD`` lines of files outside the target.
    """
    for cache in sorted(root.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(root / "bin", ignore_errors=True)
    for record in root.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines()
        kept = [ln for ln in lines if not ln.startswith("../") and "__pycache__/" not in ln]
        record.write_text("".join(f"{ln}\n" for ln in kept))
    for direct_url in root.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()


def staged_versions(site_packages: Path) -> dict[str, str]:
    """``{project: version}`` of what a staged folder holds (from its ``*.dist-info`` folder names)."""
    out = {}
    for d in site_packages.glob("*.dist-info"):
        name, _, version = d.name[: -len(".dist-info")].partition("-")
        out[canonicalize_name(name)] = version
    return dict(sorted(out.items()))


def install(
    requirements: list[str],
    platform: Platform,
    cache_root: Path,
    python_version: str = PYTHON_VERSION,
    reporter: Reporter | None = None,
) -> Path:
    """The cached ``site-packages`` folder for ``requirements`` on ``platform`` (pip runs only on a miss)."""
    reporter = reporter or NullReporter()
    reqs = _normalise_requirements(requirements)
    check_wheels(reqs, platform, python_version)
    key = deps_key(reqs, platform, python_version)
    final = Path(cache_root) / "deps" / key
    done = final / "site-packages"
    if (final / "stage.json").is_file() and done.is_dir():
        return done
    task = f"pip {platform}"
    reporter.start(task)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=final.parent))
    try:
        target = work / "site-packages"
        env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            pip_command(reqs, platform, target, python_version, wheelhouse(reqs, cache_root)),
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise _pip_failure(proc.stdout + proc.stderr, platform, python_version)
        normalise_tree(target)
        doc = {"requirements": reqs, "platform": str(platform), "python": python_version}
        doc["versions"] = staged_versions(target)  # type: ignore[assignment]
        (work / "stage.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
        try:
            os.rename(work, final)
        except OSError:
            if not (final / "stage.json").is_file():  # not a concurrent winner: a stale, unfinished stage
                replace_dir(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reporter.done(task, f"{len(staged_versions(done))} packages")
    return done


def stage_dependencies(
    requirements: list[str],
    platform: Platform,
    cache_root: Path,
    python_version: str = PYTHON_VERSION,
    reporter: Reporter | None = None,
) -> LayerSource:
    """The ``dependencies`` layer source: ``requirements`` installed for ``platform`` under :data:`DEPS_DIR`."""
    site = install(requirements, platform, cache_root, python_version, reporter)
    key = hashlib.sha256(f"{site.parent.name}\0{tarball.FORMAT_VERSION}".encode()).hexdigest()
    versions = staged_versions(site)
    comment = "pip: " + " ".join(f"{n}=={v}" for n, v in versions.items())
    return LayerSource.of("dependencies", tarball.tree_entries(site, DEPS_DIR), cache_key=key, comment=comment)
