"""The edge_module, models and app layer sources, and the image environment edge_module reads."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
import tarfile
from pathlib import Path

import pytest

from edge_module.settings import Settings
from packager import Model, Workspace
from packager.errors import IntegrityError, InvalidInputError
from packager.image import content, dockerfile, tarball
from packager.image.spec import APP_ROOT, MODELS_ROOT, MODULE_DIR, PORT, PYTHONPATH

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "examples" / "models" / "digits-linear.onnx"


def test_edge_module_source_has_only_python_files() -> None:
    src = content.stage_edge_module()
    paths = {f.path for f in src.files}
    assert f"{MODULE_DIR}/edge_module/__main__.py" in paths
    assert f"{MODULE_DIR}/edge_module/server/main.py" in paths
    assert all(p.endswith(".py") and "__pycache__" not in p for p in paths)
    assert src.cache_key == content.stage_edge_module().cache_key


def test_models_in_azureml_layout(workspace: Workspace, tmp_path: Path) -> None:
    one = Model.register(workspace, DIGITS, "digits")
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.onnx").write_bytes(DIGITS.read_bytes())
    (folder / "labels.txt").write_text("0\n1\n")
    two = Model.register(workspace, folder, "bundle")
    src = content.stage_models(workspace, [two, one])
    assert src.name == "models"
    assert [f.path for f in src.files] == [
        f"{MODELS_ROOT}/bundle/1/bundle/labels.txt",
        f"{MODELS_ROOT}/bundle/1/bundle/sub/model.onnx",
        f"{MODELS_ROOT}/digits/1/digits-linear.onnx",
    ]
    assert all(f.source is not None and f.source.read_bytes() for f in src.files)
    # the key is exact: same content → same key, wherever it was registered from
    again = Model.register(workspace, DIGITS, "digits")
    assert content.stage_models(workspace, [one]).cache_key == content.stage_models(workspace, [one]).cache_key
    assert content.stage_models(workspace, [again]).cache_key != content.stage_models(workspace, [one]).cache_key


def test_models_layer_refuses_damaged_blobs(workspace: Workspace) -> None:
    model = Model.register(workspace, DIGITS, "digits")
    blob = workspace.blobs.path(model.files[0].digest)
    blob.chmod(0o644)
    blob.write_bytes(b"truncated")
    with pytest.raises(IntegrityError, match="digits:1"):
        content.stage_models(workspace, [model])


def test_models_layer_hashes_what_it_copies(workspace: Workspace, tmp_path: Path) -> None:
    """A blob damaged in place (same size) fails the build naming the model, the file and both digests,
    and leaves nothing in the layer cache (no blob, no key, no partial file)."""
    model = Model.register(workspace, DIGITS, "digits")
    digest = model.files[0].digest
    blob = workspace.blobs.path(digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()
    source = content.stage_models(workspace, [model])  # the size still matches
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError) as err:
        tarball.build_layer(source, cache)
    msg = str(err.value)
    assert "model digits:1" in msg and "digits-linear.onnx" in msg
    assert f"sha256:{digest}" in msg and f"sha256:{actual}" in msg
    left = [p for p in (cache / "layers").rglob("*") if p.is_file()] if (cache / "layers").exists() else []
    assert left == []
    # the Docker backend's context copies the same bytes: same check, no context left behind
    with pytest.raises(IntegrityError, match=actual):
        dockerfile.write_context(tmp_path / "ctx", "python@sha256:" + "a" * 64, [source], {}, ["python3"], {}, 5001)
    assert not (tmp_path / "ctx").exists() and list(tmp_path.glob(".ctx.tmp-*")) == []


def test_app_with_source_dir_and_entry_script(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib" / "__pycache__").mkdir(parents=True)
    (src / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    (src / "lib" / "util.py").write_text("X = 1\n")
    (src / "lib" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"junk")
    manifest = {"models": [{"name": "digits", "version": 1}], "edgepack": "0.1.0"}
    layer = content.stage_app("score.py", src, manifest)
    paths = [f.path for f in layer.files]
    assert paths == [f"{APP_ROOT}/edgepack-image.json", f"{APP_ROOT}/lib/util.py", f"{APP_ROOT}/score.py"]
    doc = next(f for f in layer.files if f.path.endswith("edgepack-image.json")).data
    assert doc is not None and json.loads(doc) == manifest
    assert doc == content.stage_app("score.py", src, dict(reversed(manifest.items()))).files[0].data
    assert content.entry_script_path("score.py", src) == "score.py"
    assert content.entry_script_path(src / "lib" / "util.py", src) == "lib/util.py"


def test_app_entry_script_outside_source_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in Azure ML v1, the entry script lives in the source directory: one outside it is refused."""
    (tmp_path / "score.py").write_text("def init(): pass\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "helper.py").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=r"entry script 'score.py' \(.*score.py\) is outside --source-dir"):
        content.stage_app("score.py", tmp_path / "src", {})
    with pytest.raises(InvalidInputError, match="is outside"):
        content.stage_app(tmp_path / "score.py", tmp_path / "src", {})
    only_script = content.stage_app(tmp_path / "score.py", None, {})
    assert [f.path for f in only_script.files] == [f"{APP_ROOT}/edgepack-image.json", f"{APP_ROOT}/score.py"]
    with pytest.raises(InvalidInputError, match=r"entry script '.*missing.py' not found: looked in .*missing.py$"):
        content.stage_app(tmp_path / "missing.py", None, {})
    (tmp_path / "src" / "score.py").write_text("other")
    assert content.entry_script_path("score.py", tmp_path / "src") == "score.py"  # found in the source dir first
    assert content.entry_script_path("src/score.py", "src") == "score.py"  # named from the working folder
    assert content.entry_script_path(tmp_path / "src" / "score.py", "src") == "score.py"  # absolute, inside


def test_app_key_follows_edits(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("a")
    k1 = content.stage_app(tmp_path / "score.py", None, {}).cache_key
    assert content.stage_app(tmp_path / "score.py", None, {}).cache_key == k1
    assert content.stage_app(tmp_path / "score.py", None, {"v": 2}).cache_key != k1
    (tmp_path / "score.py").write_text("bb")
    assert content.stage_app(tmp_path / "score.py", None, {}).cache_key != k1


def test_image_env_is_what_edge_module_reads(workspace: Workspace) -> None:
    one = Model.register(workspace, DIGITS, "digits")
    env = content.image_env([one], "score.py")
    assert env == {
        "AZUREML_MODEL_DIR": f"{MODELS_ROOT}/digits/1",
        "AZUREML_ENTRY_SCRIPT": "score.py",
        "AML_APP_ROOT": APP_ROOT,
        "AZUREML_SOURCE_DIRECTORY": APP_ROOT,
        "PYTHONPATH": PYTHONPATH,
        "EDGEPACK_PORT": str(PORT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings.from_env(env)
    assert (settings.model_dir, settings.entry_script, settings.source_dir, settings.port) == (
        f"{MODELS_ROOT}/digits/1",
        "score.py",
        APP_ROOT,
        PORT,
    )
    two = Model.register(workspace, DIGITS, "other")
    several = content.image_env([one, two], None)
    assert several["AZUREML_MODEL_DIR"] == MODELS_ROOT and "AZUREML_ENTRY_SCRIPT" not in several


def test_model_layer_digest_is_stable(workspace: Workspace, tmp_path: Path) -> None:
    model = Model.register(workspace, DIGITS, "digits")
    a = tarball.build_layer(content.stage_models(workspace, [model]), tmp_path / "a")
    b = tarball.build_layer(content.stage_models(workspace, [model]), tmp_path / "b")
    assert a.digest == b.digest


def make_source_dir(root: Path) -> Path:
    files = {
        "score.py": "def init(): pass\n",
        "a.tmp": "",
        "sub/b.tmp": "",
        "sub/c.log": "",
        "data/x.csv": "1,2\n",
        "data/keep.txt": "keep\n",
        "lib/util.py": "X = 1\n",
        "lib/__pycache__/util.cpython-311.pyc": "",
        ".edgepack/registry.db": "",
        ".edgepack/blobs/sha256/ab/abcd": "",
        ".git/config": "[core]\n",
        ".hg/hgrc": "",
        "nested/.svn/entries": "",
        "ws/registry.db": "",  # a workspace with another name (EDGEPACK_WORKSPACE=src/ws)
        ".env": "TOKEN=not-a-secret\n",
        "run.sh": "#!/bin/sh\n",
        ".edgepackignore": "# dockerignore syntax\n*.tmp\n**/*.log\ndata/\n!data/keep.txt\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".env").chmod(0o600)
    (root / "run.sh").chmod(0o755)
    return root


def test_source_dir_leaves_out_workspace_vcs_and_ignored_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_source_dir(tmp_path / "src")
    with caplog.at_level(logging.WARNING):
        layer = content.stage_app("score.py", src, {}, exclude=[src / "ws"])
    assert ".env" in caplog.text and "secret" in caplog.text
    built = tarball.build_layer(layer, tmp_path / "cache")
    with tarfile.open(built.path) as tar:
        files = {m.name: m.mode for m in tar.getmembers() if m.isfile()}
    app = APP_ROOT.lstrip("/")
    assert files == {
        f"{app}/.edgepackignore": 0o644,
        f"{app}/.env": 0o600,  # owner-only stays owner-only
        f"{app}/data/keep.txt": 0o644,  # re-included inside an excluded folder, as Docker does
        f"{app}/edgepack-image.json": 0o644,
        f"{app}/lib/util.py": 0o644,
        f"{app}/run.sh": 0o755,
        f"{app}/score.py": 0o644,
        f"{app}/sub/b.tmp": 0o644,  # dockerignore patterns are anchored at the top: *.tmp is ./*.tmp
    }
    # the Docker backend stages the same files with the same modes
    ctx = dockerfile.write_context(tmp_path / "ctx", "python@sha256:" + "a" * 64, [layer], {}, ["python3"], {}, 5001)
    staged = ctx / "layers" / "app" / app
    assert {f"{app}/{p.relative_to(staged).as_posix()}" for p in staged.rglob("*") if p.is_file()} == set(files)
    assert stat.S_IMODE((staged / ".env").stat().st_mode) == 0o600


def test_source_dir_ignore_file_precedence(tmp_path: Path) -> None:
    """.edgepackignore, else .amlignore, else .gitignore (these two in gitignore syntax, as v1 read them)."""
    src = tmp_path / "src"
    for rel in ("a.tmp", "sub/b.tmp", "x.bak", "keep.py", ".env"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("")
    (src / ".env").chmod(0o600)

    def names() -> set[str]:
        return {f.path.removeprefix(APP_ROOT + "/") for f in content.stage_app(None, src, {}).files}

    (src / ".gitignore").write_text("*.bak\n.env\n")
    assert names() == {".gitignore", "a.tmp", "sub/b.tmp", "keep.py", "edgepack-image.json"}
    (src / ".amlignore").write_text("*.tmp\n")  # gitignore syntax: every depth
    assert names() == {".gitignore", ".amlignore", "x.bak", "keep.py", ".env", "edgepack-image.json"}
    (src / ".edgepackignore").write_text("/.*ignore\n.edgepackignore\n")
    assert names() == {"a.tmp", "sub/b.tmp", "x.bak", "keep.py", ".env", "edgepack-image.json"}


def test_source_dir_private_entry_script_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): pass\n")
    (tmp_path / "score.py").chmod(0o600)
    entry = next(f for f in content.stage_app(tmp_path / "score.py", None, {}).files if f.path.endswith("score.py"))
    assert entry.mode == 0o600
