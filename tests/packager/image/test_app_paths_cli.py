"""``build``/``build-and-push``/``package`` find ``--entry-script`` inside ``--source-dir`` (and an
inferenceconfig.json's ``entryScript`` inside ``sourceDirectory``) as Azure ML v1 did, from any working
folder: the docs' layout."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from packager.cli.build import build_request
from packager.image.spec import APP_ROOT
from tests.packager.image.support import edgepack, edgepack_json

SCORE = "import json\n\ndef init():\n    pass\n\ndef run(raw):\n    return json.loads(raw)\n"


@pytest.fixture
def docs_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``proj/app/score.py``, ``proj/app/env.yml``, ``proj/app/lib/util.py``; the working folder is ``elsewhere``."""
    app = tmp_path / "proj" / "app"
    (app / "lib").mkdir(parents=True)
    (app / "score.py").write_text(SCORE)
    (app / "lib" / "util.py").write_text("X = 1\n")
    (app / "env.yml").write_text("name: env\ndependencies:\n  - python=3.11\n  - pip:\n    - joblib\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return app


def _request(**flags: object):
    base = dict(
        models=("digits:1",), inference_config=None, entry_script=None, source_dir=None, requirements=(),
        platforms="linux/amd64", base=None, labels=(), tag=None, push=False, output="oci:out", backend="oci",
        username=None, password=None,
    )  # fmt: skip
    return build_request(**{**base, **flags})


@pytest.mark.parametrize("source", ["../proj/app", "abs"])
def test_build_flags_resolve_inside_the_source_dir(docs_layout: Path, source: str) -> None:
    src = str(docs_layout) if source == "abs" else source
    config = _request(entry_script="score.py", source_dir=src).config
    assert config.entry_script == "score.py" and config.source_directory == str(docs_layout)
    assert config.entry_script_file == docs_layout / "score.py"
    absolute = _request(entry_script=str(docs_layout / "lib" / "util.py"), source_dir=src).config
    assert absolute.entry_script == "lib/util.py"


def test_inference_config_json_relative_to_its_folder(docs_layout: Path) -> None:
    ic = docs_layout.parent / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "app", "condaFile": "env.yml"}))
    config = _request(inference_config=str(ic)).config
    assert (config.entry_script, config.source_directory) == ("score.py", str(docs_layout))
    assert config.conda_file == str(docs_layout / "env.yml")  # relative to sourceDirectory too


def test_inference_config_json_elsewhere_reads_source_directory_from_the_working_folder(
    docs_layout: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As ``az ml model deploy --ic`` did: a sourceDirectory not beside the JSON is read from the working folder."""
    configs = tmp_path / "configs"
    configs.mkdir()
    ic = configs / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "app"}))
    monkeypatch.chdir(docs_layout.parent)
    config = _request(inference_config=str(ic)).config
    assert (config.entry_script, config.source_directory) == ("score.py", str(docs_layout))


def test_errors_name_both_places_and_refuse_outside_scripts(docs_layout: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    args = ("-m", "digits:1", "--source-dir", "../proj/app")
    for command in (
        ("build", "--output", "oci:out"),
        ("build-and-push", "-t", "127.0.0.1:5000/x:1"),
        ("package", "-o", "out"),
    ):
        r = edgepack(ws, *command, *args, "--entry-script", "nope.py", expect=2)
        assert r.stderr.strip() == (
            f"error: entry script 'nope.py' not found: looked in {docs_layout}/nope.py "
            f"(inside --source-dir {docs_layout}) and {Path.cwd()}/nope.py"
        )
    outside = tmp_path / "proj" / "score.py"
    outside.write_text(SCORE)
    r = edgepack(ws, "package", "-o", "out", *args, "--entry-script", str(outside), expect=2)
    assert f"entry script '{outside}' ({outside}) is outside --source-dir {docs_layout}" in r.stderr
    ic = tmp_path / "proj" / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "../score.py", "sourceDirectory": "app"}))
    r = edgepack(ws, "package", "-o", "out", "-m", "digits:1", "--inference-config", str(ic), expect=2)
    assert f"is outside sourceDirectory {docs_layout}" in r.stderr


def _app_files(context: Path) -> set[str]:
    return {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file() and "app" in p.parts}


@pytest.mark.slow
def test_package_stages_the_script_in_the_app_root(ws: Path, base: str, docs_layout: Path, tmp_path: Path) -> None:
    ic = docs_layout.parent / "inferenceconfig.json"
    ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "app", "condaFile": "env.yml"}))
    for i, flags in enumerate(
        (["--entry-script", "score.py", "--source-dir", "../proj/app"], ["--inference-config", str(ic)])
    ):
        out = edgepack_json(
            ws, "package", "-m", "digits:1", *flags, "--platform", "linux/amd64", "--base", base,
            "-o", str(tmp_path / f"pkg{i}"),
        )  # fmt: skip
        context = Path(out["contexts"]["linux/amd64"])
        dockerfile = (context / "Dockerfile").read_text()
        assert "AZUREML_ENTRY_SCRIPT" in dockerfile and "score.py" in dockerfile, dockerfile
        staged = [p for p in context.rglob("score.py")]
        assert len(staged) == 1 and staged[0].read_text() == SCORE
        assert staged[0].as_posix().endswith(f"{APP_ROOT}/score.py"), staged
        assert any(p.as_posix().endswith(f"{APP_ROOT}/lib/util.py") for p in context.rglob("util.py"))


@pytest.mark.slow
def test_build_oci_layout_has_the_script_where_the_image_looks(
    ws: Path, base: str, docs_layout: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "oci"
    edgepack_json(
        ws, "build", "-m", "digits:1", "--entry-script", "score.py", "--source-dir", "../proj/app",
        "--platform", "linux/amd64", "--base", base, "--output", f"oci:{layout}",
    )  # fmt: skip

    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.split(":", 1)[1]

    index = json.loads((layout / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = json.loads(blob(desc["digest"]).read_text())
    if "manifests" in manifest:  # an image index
        manifest = json.loads(blob(manifest["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["AZUREML_ENTRY_SCRIPT"] == "score.py" and env["AML_APP_ROOT"] == APP_ROOT
    names: dict[str, bytes] = {}
    for layer in manifest["layers"][-4:]:
        with tarfile.open(blob(layer["digest"]), "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.lstrip("./").startswith(APP_ROOT.lstrip("/")):
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    names[member.name.lstrip("./")] = extracted.read()
    root = APP_ROOT.lstrip("/")
    assert names[f"{root}/score.py"] == SCORE.encode()
    assert f"{root}/lib/util.py" in names and f"{root}/env.yml" in names
