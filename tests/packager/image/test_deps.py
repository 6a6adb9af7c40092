"""The dependency layer: platform wheels via ``pip install --target``, normalised and cached."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from packager.errors import InvalidInputError
from packager.image import deps, tarball
from packager.image.requirements import requirement_name
from packager.image.spec import DEPS_DIR, Platform

AMD64, ARM64, ARMV7 = Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "arm", "v7")


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_platform_tags_cover_old_and_new_manylinux() -> None:
    arm = deps.platform_tags(ARM64)
    assert "manylinux_2_28_aarch64" in arm and "manylinux2014_aarch64" in arm and "manylinux_2_17_aarch64" in arm
    amd = deps.platform_tags(AMD64)
    assert amd[0] == "manylinux_2_36_x86_64" and "manylinux_2_28_x86_64" in amd and "manylinux2014_x86_64" in amd
    with pytest.raises(InvalidInputError, match="windows/amd64"):
        deps.platform_tags(Platform("windows", "amd64"))
    with pytest.raises(InvalidInputError, match="linux/s390x"):
        deps.platform_tags(Platform("linux", "s390x"))


def test_runtime_requirements_pin_the_hosts_onnxruntime() -> None:
    import onnxruntime

    major, minor = onnxruntime.__version__.split(".")[:2]
    reqs = deps.runtime_requirements()
    assert f"onnxruntime>={major}.{minor},<{major}.{int(minor) + 1}" in reqs
    names = {requirement_name(r) for r in reqs}
    assert names == {"numpy", "onnxruntime", "httptools", "orjson", "uvloop", "paho-mqtt", "azure-iot-device"}
    assert "paho-mqtt>=1.6.1,<2" in reqs  # what azure-iot-device 2.14 accepts


def test_armv7_names_onnxruntime(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"onnxruntime has no wheel for linux/arm/v7 \(cp311\)"):
        deps.stage_dependencies(deps.runtime_requirements(), ARMV7, tmp_path)
    assert not (tmp_path / "deps").exists() or not any((tmp_path / "deps").iterdir())


def test_normalise_tree_drops_machine_specific_files(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/home/me/.venv/bin/python\n")
    info = tmp_path / "pkg-1.0.dist-info"
    (info / "x").mkdir(parents=True)
    (info / "RECORD").write_text(
        "pkg/__init__.py,sha256=abc,0\n../../bin/tool,sha256=def,30\npkg/__pycache__/a.pyc,,\n"
    )
    (info / "direct_url.json").write_text("{}")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    deps.normalise_tree(tmp_path)
    assert not (tmp_path / "bin").exists() and not (tmp_path / "pkg" / "__pycache__").exists()
    assert (info / "RECORD").read_text() == "pkg/__init__.py,sha256=abc,0\n"
    assert not (info / "direct_url.json").exists()


def test_pip_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="pip options"):
        deps.stage_dependencies(["--index-url=http://x", "numpy"], AMD64, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("platform", [AMD64, ARM64], ids=str)
def test_stage_runtime_dependencies(platform: Platform, tmp_path: Path) -> None:
    source = deps.stage_dependencies(deps.runtime_requirements(), platform, tmp_path)
    assert source.name == "dependencies" and source.cache_key
    paths = {f.path for f in source.files}
    assert all(p.startswith(DEPS_DIR + "/") for p in paths)
    ort = [p for p in paths if p.startswith(f"{DEPS_DIR}/onnxruntime-1.31.") and p.endswith(".dist-info/METADATA")]
    assert ort, "onnxruntime 1.31.x was not staged"
    arch = {"amd64": "x86_64", "arm64": "aarch64"}[platform.architecture]
    assert any(p.endswith(f"_{arch}.so") or f"-{arch}-linux-gnu.so" in p for p in paths)
    assert not any("__pycache__" in p or p.startswith(f"{DEPS_DIR}/bin/") for p in paths)
    assert "onnxruntime==1.31." in source.comment

    start = time.perf_counter()  # cached: pip is not run again
    again = deps.stage_dependencies(deps.runtime_requirements(), platform, tmp_path)
    assert time.perf_counter() - start < 2
    assert again.cache_key == source.cache_key and [f.path for f in again.files] == [f.path for f in source.files]
    layer = tarball.build_layer(source, tmp_path)
    assert tarball.build_layer(again, tmp_path).digest == layer.digest


@pytest.mark.slow
def test_sdist_only_projects_get_a_wheel_built_once(tmp_path: Path) -> None:
    assert deps.wheelhouse(["numpy"], tmp_path) is None
    house = deps.wheelhouse(deps.runtime_requirements(), tmp_path)
    assert house is not None
    (wheel,) = house.glob("paho_mqtt-1.6.*-py3-none-any.whl")
    stamp = wheel.stat().st_mtime_ns
    assert deps.wheelhouse(["paho-mqtt"], tmp_path) == house and wheel.stat().st_mtime_ns == stamp  # not rebuilt
    cmd = deps.pip_command(["paho-mqtt<2"], ARM64, tmp_path / "t", find_links=house)
    assert cmd[cmd.index("--find-links") + 1] == str(house)
    site = deps.install(["paho-mqtt>=1.6.1,<2"], ARM64, tmp_path)  # a wheels-only install for another platform
    assert deps.staged_versions(site)["paho-mqtt"].startswith("1.6.")


@pytest.mark.slow
def test_two_installs_are_byte_identical(tmp_path: Path) -> None:
    one = deps.install(deps.runtime_requirements(), AMD64, tmp_path / "a")
    two = deps.install(deps.runtime_requirements(), AMD64, tmp_path / "b")
    assert tree_digest(one) == tree_digest(two)
    la = tarball.build_layer(
        deps.stage_dependencies(deps.runtime_requirements(), AMD64, tmp_path / "a"), tmp_path / "a"
    )
    lb = tarball.build_layer(
        deps.stage_dependencies(deps.runtime_requirements(), AMD64, tmp_path / "b"), tmp_path / "b"
    )
    assert la.digest == lb.digest


@pytest.mark.slow
def test_missing_wheel_names_package_and_platform(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"onnx==1\.22\.0 has no wheel for linux/arm/v7 \(cp311\)"):
        deps.stage_dependencies(["onnx==1.22.0"], ARMV7, tmp_path)


def test_pip_command_shape(tmp_path: Path) -> None:
    cmd = deps.pip_command(["numpy"], ARM64, tmp_path)
    joined = " ".join(cmd)
    for part in ("--only-binary=:all:", "--python-version 3.11", "--implementation cp", "--abi cp311", "--target"):
        assert part in joined
    assert cmd[-1] == "numpy"
    assert subprocess.list2cmdline(cmd).count("--platform") == len(deps.platform_tags(ARM64))


def test_model_files_bring_their_runtime_and_armv7_names_litert() -> None:
    """The no-code app serves .tflite files on LiteRT: images carrying one get ai-edge-litert (amd64 and arm64
    have wheels; arm/v7 is refused naming it); an entry script brings its own requirements."""
    assert deps.model_requirements(["m.onnx"]) == []
    assert deps.model_requirements(["m.onnx", "sub/model.TFLITE"]) == ["ai-edge-litert>=1.2"]
    assert deps.model_requirements(["model.tflite"], entry_script="score.py") == []
    fpga_package = ["p/fpga.json", "p/program.json", "p/program.npz", "p/host.onnx", "p/accelerator.onnx"]
    assert deps.model_requirements(fpga_package) == []  # numpy and onnxruntime are in every image
    deps.check_wheels([*deps.runtime_requirements(), "ai-edge-litert>=1.2"], ARM64, "3.11")
    with pytest.raises(InvalidInputError, match=r"ai-edge-litert has no wheel for linux/arm/v7"):
        deps.check_wheels(["ai-edge-litert>=1.2"], ARMV7, "3.11")
