"""The model registry through its Python API (Azure ML v1 shape)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from packager import (
    ConflictError,
    Framework,
    IntegrityError,
    InvalidInputError,
    Model,
    NotFoundError,
    ResourceConfiguration,
    Workspace,
)


def make_folder(root: Path) -> Path:
    folder = root / "outputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx-bytes")
    (folder / "labels.txt").write_text("cat\ndog\n")
    (folder / "sub" / "vocab.json").write_text('{"a": 1}')
    script = folder / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return folder


def test_register_file_versions_increment(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "model.pkl"
    f.write_bytes(b"v1")
    m1 = Model.register(workspace, f, "digits", tags={"stage": "dev"}, description="first")
    f.write_bytes(b"v2")
    m2 = Model.register(workspace, f, "digits", properties={"accuracy": 0.96})
    assert (m1.version, m2.version) == (1, 2)
    assert m1.id == "digits:1" and m1.root == "model.pkl" and not m1.is_folder
    assert m1.tags == {"stage": "dev"} and m1.description == "first"
    assert m2.properties == {"accuracy": "0.96"}
    assert [f.path for f in m2.files] == ["model.pkl"]
    assert Model(workspace, "digits").version == 2
    assert Model(workspace, "digits", version=1).files[0].digest != m2.files[0].digest
    assert Model(workspace, id="digits:1") == m1


def test_register_folder_keeps_structure_and_download_round_trips(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    m = Model.register(workspace, folder, "bundle")
    assert m.is_folder and m.root == "outputs"
    assert [f.path for f in m.files] == [
        "outputs/labels.txt",
        "outputs/model.onnx",
        "outputs/run.sh",
        "outputs/sub/vocab.json",
    ]
    assert m.size == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    out = Path(m.download(tmp_path / "dl"))
    assert out == tmp_path / "dl" / "outputs"
    for src in folder.rglob("*"):
        if src.is_file():
            assert (out / src.relative_to(folder)).read_bytes() == src.read_bytes()
    assert os.access(out / "run.sh", os.X_OK) and not os.access(out / "labels.txt", os.X_OK)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["outputs"]  # no staging left behind


def test_child_paths_pick_files(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    m = Model.register(workspace, folder, "picked", child_paths=["model.onnx", "sub", "sub/../sub/vocab.json"])
    assert [f.path for f in m.files] == ["outputs/model.onnx", "outputs/sub/vocab.json"]
    assert len(Model.register(workspace, folder, "picked", child_paths=["."]).files) == 4
    with pytest.raises(InvalidInputError, match="inside"):
        Model.register(workspace, folder, "picked", child_paths=["../escape.txt"])
    with pytest.raises(InvalidInputError, match="does not exist"):
        Model.register(workspace, folder, "picked", child_paths=["nope.bin"])
    with pytest.raises(InvalidInputError, match="folder"):
        Model.register(workspace, folder / "model.onnx", "picked", child_paths=["x"])
    assert [m.version for m in Model.list(workspace, name="picked")] == [2, 1]


@pytest.mark.parametrize(
    ("file_name", "content", "expected"),
    [
        ("m.onnx", b"\x08\x07", "onnx"),
        ("q.onnx", b"...qonnx.custom_op.general...", "fpga"),
        ("fpga.json", b"{}", "fpga"),  # an edgepack FPGA package (edgepack fpga compile)
        ("m.tflite", b"TFL3", "tflite"),
        ("m.keras", b"PK", "tfkeras"),
        ("m.h5", b"\x89HDF", "tfkeras"),
        ("m.pt", b"PK", "pytorch"),
        ("m.pkl", b"\x80\x04\x95csklearn.linear_model", "scikitlearn"),
        ("m.joblib", b"\x80\x04\x95ctorch.nn", "pytorch"),
        ("m.pkl", b"\x80\x04\x95cbuiltins\ndict", "custom"),
        ("weights.bin", b"\x00", "custom"),
    ],
)
def test_framework_detected_from_files(
    workspace: Workspace, tmp_path: Path, file_name: str, content: bytes, expected: str
) -> None:
    f = tmp_path / file_name
    f.write_bytes(content)
    assert Model.register(workspace, f, "m").model_framework == expected


def test_framework_detected_in_folder(workspace: Workspace, tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    (saved / "variables" / "variables.index").write_bytes(b"i")
    assert Model.register(workspace, saved, "tfm").model_framework == "tensorflow"


def test_framework_given_in_v1_spelling(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    m = Model.register(workspace, f, "m", model_framework="ScikitLearn", model_framework_version="1.5")
    assert m.model_framework == Model.Framework.SCIKITLEARN == Framework.SCIKITLEARN == "scikitlearn"
    assert m.model_framework_version == "1.5"
    with pytest.raises(InvalidInputError, match="unknown framework 'caffe'"):
        Model.register(workspace, f, "m", model_framework="caffe")
    with pytest.raises(InvalidInputError, match="model_framework"):
        Model.register(workspace, f, "m", model_framework_version="1.0")


@pytest.mark.parametrize("name", ["", "has space", "-leading", "a/b", "x:1", "é", "a" * 256])
def test_bad_names_rejected(workspace: Workspace, tmp_path: Path, name: str) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="model name"):
        Model.register(workspace, f, name)
    assert Model.list(workspace) == []


def test_good_names_accepted(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    for name in ["a", "Model_1.2-x", "9lives", "a" * 255]:
        assert Model.register(workspace, f, name).name == name


def test_missing_path_and_empty_folder(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        Model.register(workspace, tmp_path / "nope", "m")
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="has no files"):
        Model.register(workspace, tmp_path / "empty", "m")
    assert Model.list(workspace) == []


def test_bad_metadata_rejected(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="tags value for 'k'"):
        Model.register(workspace, f, "m", tags={"k": [1, 2]})
    with pytest.raises(InvalidInputError, match="properties must be a dict"):
        Model.register(workspace, f, "m", properties=["a"])
    assert Model.list(workspace) == []


def test_unknown_name_and_version(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    for _ in range(3):
        Model.register(workspace, f, "m")
    Model(workspace, "m", version=2).delete()
    with pytest.raises(NotFoundError, match=r"no version 7; versions: 1, 3"):
        Model(workspace, "m", version=7)
    with pytest.raises(NotFoundError, match="no model named 'other'"):
        Model(workspace, "other")


def test_list_filters(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    Model.register(workspace, f, "a", tags={"stage": "dev"})
    Model.register(workspace, f, "a", tags={"stage": "prod", "team": "x"}, properties={"acc": "0.9"})
    Model.register(workspace, f, "a", tags={"stage": "dev"})
    Model.register(workspace, f, "b", tags={"stage": "prod"}, model_framework="custom")

    def ids(**kw: object) -> list[str]:
        return [m.id for m in Model.list(workspace, **kw)]

    assert ids() == ["a:3", "a:2", "a:1", "b:1"]
    assert ids(name="a", latest=True) == ["a:3"]
    assert ids(latest=True) == ["a:3", "b:1"]
    assert ids(tags=["stage=prod"]) == ["a:2", "b:1"]
    assert ids(tags=["stage=prod"], latest=True) == ["a:2", "b:1"]
    assert ids(tags=[["stage", "prod"], "team"]) == ["a:2"]
    assert ids(tags={"stage": "dev"}) == ["a:3", "a:1"]
    assert ids(properties=["acc"]) == ["a:2"]
    assert ids(framework="onnx") == ["a:3", "a:2", "a:1"]
    assert ids(name="zzz") == []
    assert set(workspace.models) == {"a", "b"} and workspace.models["a"].version == 3


def test_update_tags_description_and_add_only_properties(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    m = Model.register(workspace, f, "m", tags={"a": "1", "b": "2"}, properties={"p": "1"})
    m.update(tags={"c": "3"}, description="new")
    assert Model(workspace, "m").tags == {"c": "3"} and Model(workspace, "m").description == "new"
    m.add_tags({"d": "4", "c": "33"}).remove_tags(["d", "absent"])
    assert Model(workspace, "m").tags == {"c": "33"}
    m.add_properties({"p": "1", "q": "2"})
    with pytest.raises(ConflictError, match="add-only; p already set"):
        m.add_properties({"p": "changed"})
    assert Model(workspace, "m").properties == {"p": "1", "q": "2"}


def test_delete_never_reuses_versions_and_collects_orphan_blobs(workspace: Workspace, tmp_path: Path) -> None:
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"same content")
    only = tmp_path / "only.bin"
    only.write_bytes(b"only in v2")
    m1 = Model.register(workspace, shared, "m")
    m2 = Model.register(workspace, only, "m")
    m3 = Model.register(workspace, shared, "m")
    assert m1.files[0].digest == m3.files[0].digest
    only_blob = workspace.blobs.path(m2.files[0].digest)
    assert only_blob.is_file()
    m2.delete()
    assert not only_blob.exists()
    m1.delete()
    assert workspace.blobs.path(m3.files[0].digest).is_file()  # still used by version 3
    assert Model.register(workspace, only, "m").version == 4
    with pytest.raises(NotFoundError):
        m1.delete()
    assert [m.version for m in Model.list(workspace)] == [4, 3]


def test_download_refuses_existing_unless_exist_ok(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"one")
    m1 = Model.register(workspace, f, "m")
    f.write_bytes(b"two")
    m2 = Model.register(workspace, f, "m")
    target = tmp_path / "dl"
    m1.download(target)
    with pytest.raises(InvalidInputError, match="already exists"):
        m2.download(target)
    assert (target / "m.bin").read_bytes() == b"one"
    m2.download(target, exist_ok=True)
    assert (target / "m.bin").read_bytes() == b"two"
    assert sorted(p.name for p in target.iterdir()) == ["m.bin"]


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_blob_fails_download_naming_the_file(workspace: Workspace, tmp_path: Path, damage: str) -> None:
    folder = make_folder(tmp_path)
    m = Model.register(workspace, folder, "bundle")
    victim = next(f for f in m.files if f.path == "outputs/sub/vocab.json")
    blob = workspace.blobs.path(victim.digest)
    if damage == "corrupt":
        blob.chmod(0o644)
        blob.write_bytes(b'{"a": 2}')
    else:
        blob.unlink()
    target = tmp_path / "dl"
    with pytest.raises(IntegrityError, match=r"'outputs/sub/vocab.json' of model bundle:1 is (corrupted|missing)"):
        m.download(target)
    assert list(target.iterdir()) == []  # nothing partial left behind
    with pytest.raises(IntegrityError):
        Model.get_model_path("bundle", _workspace=workspace)


def test_samples_and_resource_configuration(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    m = Model.register(
        workspace,
        f,
        "m",
        sample_input=x,
        sample_output={"label": [1, 2, 3]},
        resource_configuration=ResourceConfiguration(cpu=0.5, memory_in_gb=1.5),
    )
    again = Model(workspace, "m")
    np.testing.assert_array_equal(again.load_sample_input(), x)
    assert again.load_sample_output() == {"label": [1, 2, 3]}
    assert again.resource_configuration == ResourceConfiguration(cpu=0.5, memory_in_gb=1.5)
    npz = tmp_path / "batch.npz"
    np.savez(npz, input=x)
    m2 = Model.register(workspace, f, "m", sample_input=npz)
    np.testing.assert_array_equal(m2.load_sample_input()["input"], x)
    with pytest.raises(InvalidInputError, match="unknown type"):
        Model.register(workspace, f, "m", sample_input=f)
    assert [f.path for f in m.files] == ["m.onnx"]  # samples are not model files


def test_serialize_is_json_and_deserializes(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    m = Model.register(workspace, folder, "bundle", tags={"t": "1"}, description="d")
    data = json.loads(json.dumps(m.serialize()))
    assert data["id"] == "bundle:1" and data["framework"] == "onnx" and data["tags"] == {"t": "1"}
    assert {f["path"] for f in data["files"]} == {f.path for f in m.files}
    assert all(f["digest"].startswith("sha256:") for f in data["files"])
    assert Model.deserialize(workspace, data) == m


def test_get_model_path_from_workspace(workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    folder = make_folder(tmp_path)
    Model.register(workspace, folder, "bundle")
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    Model.register(workspace, f, "bundle")
    latest = Path(Model.get_model_path("bundle", _workspace=workspace))
    assert latest.name == "m.bin" and latest.read_bytes() == b"x"
    first = Path(Model.get_model_path("bundle", version=1, _workspace=workspace))
    assert first.is_dir() and (first / "sub" / "vocab.json").is_file()
    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(workspace.path))
    assert Model.get_model_path("bundle", 1) == str(first)


def test_get_model_path_in_a_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = tmp_path / "azureml-models" / "digits" / "3"
    single.mkdir(parents=True)
    (single / "model.onnx").write_bytes(b"x")
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(single))
    assert Model.get_model_path("digits") == str(single / "model.onnx")
    with pytest.raises(NotFoundError, match="version 2 is not deployed"):
        Model.get_model_path("digits", 2)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "azureml-models"))
    assert Model.get_model_path("digits", 3) == str(single / "model.onnx")


def test_workspace_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no edgepack workspace"):
        Workspace.from_path(tmp_path / "none", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        Workspace.from_path(tmp_path / "file")


def test_workspace_from_a_newer_edgepack_is_refused(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path / "ws")
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(InvalidInputError, match=r"newer edgepack \(schema 99\); upgrade edgepack"):
        Workspace.from_path(ws.path)


def test_editing_a_deleted_version_says_so(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x")
    m = Model.register(workspace, f, "m", tags={"a": "1"})
    stale = Model(workspace, "m", version=1)
    m.delete()
    for edit in (
        lambda: stale.update(description="d"),
        lambda: stale.add_tags({"b": "2"}),
        lambda: stale.remove_tags(["a"]),
        lambda: stale.add_properties({"p": "1"}),
    ):
        with pytest.raises(NotFoundError, match="model m:1 was deleted"):
            edit()
    with pytest.raises(NotFoundError, match="already deleted"):
        stale.delete()


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "replaced_by_symlink"])
@pytest.mark.parametrize("source", ["file", "sample_bytes"])
def test_registering_again_repairs_a_damaged_blob(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, source: str
) -> None:
    """Content stored again over a damaged blob replaces it (and says so), for files and in-memory samples."""
    f = tmp_path / "m.bin"
    f.write_bytes(b"good content " * 100)
    m = Model.register(workspace, f, "m", sample_output={"label": [1, 2, 3]})
    stored = m.files[0] if source == "file" else m.sample_output
    assert stored is not None
    blob = workspace.blobs.path(stored.digest)
    good = blob.read_bytes()
    blob.chmod(0o644)
    if damage == "corrupt":
        blob.write_bytes(bytes(len(good)))  # same size, other bytes
    elif damage == "truncated":
        blob.write_bytes(good[:5])
    else:
        blob.unlink()
        (tmp_path / "elsewhere").write_bytes(b"not the content")
        blob.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError):
        m.download(tmp_path / "broken") if source == "file" else m.load_sample_output()
    with caplog.at_level("WARNING", logger="packager.blobstore"):
        again = Model.register(workspace, f, "m", sample_output={"label": [1, 2, 3]})
    assert not blob.is_symlink() and blob.read_bytes() == good
    assert (blob.stat().st_mode & 0o777) == 0o444
    assert f"repaired blob sha256:{stored.digest}" in caplog.text
    assert Path(m.download(tmp_path / "dl1")).read_bytes() == f.read_bytes()  # the old version is whole again
    assert again.load_sample_output() == m.load_sample_output() == {"label": [1, 2, 3]}
    assert list(workspace.blobs.tmp.iterdir()) == []


def test_registering_intact_content_again_keeps_the_blob(workspace: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x" * 1000)
    m = Model.register(workspace, f, "m")
    blob = workspace.blobs.path(m.files[0].digest)
    inode = blob.stat().st_ino
    Model.register(workspace, f, "m")
    assert blob.stat().st_ino == inode  # not rewritten


def test_file_link_pointing_outside_the_folder_is_refused_unless_followed(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    secret = tmp_path / "home" / "id_rsa"
    secret.parent.mkdir()
    secret.write_bytes(b"PRIVATE KEY")
    (folder / "sub" / "key").symlink_to(secret)
    with pytest.raises(InvalidInputError) as exc:
        Model.register(workspace, folder, "bundle")
    message = str(exc.value)
    assert str(folder / "sub" / "key") in message and str(secret) in message and "outside" in message
    assert "--follow-symlinks" in message and "follow_symlinks=True" in message
    with pytest.raises(InvalidInputError, match="outside"):  # picked directly, or its folder
        Model.register(workspace, folder, "bundle", child_paths=["sub/key"])
    with pytest.raises(InvalidInputError, match="outside"):
        Model.register(workspace, folder, "bundle", child_paths=["sub"])
    assert Model.list(workspace) == []
    assert [p for p in workspace.blobs.objects.rglob("*") if p.is_file()] == []  # nothing stored

    m = Model.register(workspace, folder, "bundle", follow_symlinks=True)  # explicit: capture the target's content
    assert "outputs/sub/key" in [f.path for f in m.files]
    assert (Path(m.download(tmp_path / "dl")) / "sub" / "key").read_bytes() == b"PRIVATE KEY"
    picked = Model.register(workspace, folder, "picked", child_paths=["sub/key"], follow_symlinks=True)
    assert [f.path for f in picked.files] == ["outputs/sub/key"]


def test_file_link_chain_leaving_the_folder_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (tmp_path / "outside.txt").write_text("x")
    (folder / "hop").symlink_to(tmp_path / "outside.txt")
    (folder / "first").symlink_to("hop")  # inside -> inside -> outside
    with pytest.raises(InvalidInputError, match=r"first is a symbolic link to .*outside\.txt"):
        Model.register(workspace, folder, "m", child_paths=["first"])


def test_file_link_inside_the_folder_is_stored_as_its_targets_content(workspace: Workspace, tmp_path: Path) -> None:
    """As v1 did: a link to another file of the model is stored as a copy of that file."""
    folder = make_folder(tmp_path)
    (folder / "sub" / "alias.onnx").symlink_to("../model.onnx")
    m = Model.register(workspace, folder, "bundle")
    by_path = {f.path: f.digest for f in m.files}
    assert by_path["outputs/sub/alias.onnx"] == by_path["outputs/model.onnx"]
    out = Path(m.download(tmp_path / "dl"))
    assert not (out / "sub" / "alias.onnx").is_symlink()
    assert (out / "sub" / "alias.onnx").read_bytes() == b"onnx-bytes"


def test_broken_link_and_folder_link_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidInputError, match="dangling is not a regular file"):
        Model.register(workspace, folder, "m", follow_symlinks=True)
    (folder / "dangling").unlink()
    (folder / "dirlink").symlink_to(tmp_path)
    for follow in (False, True):
        with pytest.raises(InvalidInputError, match="dirlink is a symbolic link to a folder"):
            Model.register(workspace, folder, "m", follow_symlinks=follow)
