"""The atomic file-system layer: whole old content or whole new, no temporary files left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from packager import fs


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> list[tuple[str, str]]:
    """Make the ``n``-th ``os.replace`` in packager.fs raise; return the calls seen."""
    real = os.replace
    calls: list[tuple[str, str]] = []

    def replace(src: os.PathLike, dst: os.PathLike) -> None:
        calls.append((str(src), str(dst)))
        if len(calls) == n:
            raise OSError(5, "injected failure", str(dst))
        real(src, dst)

    monkeypatch.setattr(fs.os, "replace", replace)
    return calls


# -- write_atomic --------------------------------------------------------------------------------------
def test_write_atomic_creates_parents_and_writes(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    fs.write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert os.listdir(target.parent) == ["file.json"]


def test_write_atomic_failing_write_keeps_old_content_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), fs.atomic_writer(target) as out:
        out.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_write_atomic_failing_rename_keeps_old_content_and_leaves_no_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.txt"
    target.write_bytes(b"old")
    _fail_on_call(monkeypatch, 1)
    with pytest.raises(OSError, match="injected failure"):
        fs.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_write_atomic_keeps_the_replaced_files_mode(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_bytes(b"old")
    target.chmod(0o750)
    fs.write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o750


def test_write_atomic_sets_a_given_mode_and_defaults_to_the_umask(tmp_path: Path) -> None:
    fs.write_atomic(tmp_path / "ro", b"x", mode=0o444)
    assert _mode(tmp_path / "ro") == 0o444
    umask = os.umask(0o022)
    os.umask(umask)
    fs.write_atomic(tmp_path / "plain", b"x")
    assert _mode(tmp_path / "plain") == 0o666 & ~umask


# -- publish_file -------------------------------------------------------------------------------------
def test_publish_file_moves_a_finished_file_into_place_with_its_mode(tmp_path: Path) -> None:
    tmp, dest = tmp_path / ".part", tmp_path / "blob"
    tmp.write_bytes(b"content")
    dest.write_bytes(b"older")
    fs.publish_file(tmp, dest, mode=0o444)
    assert dest.read_bytes() == b"content" and _mode(dest) == 0o444 and not tmp.exists()


# -- replace_dir --------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return path


def test_replace_dir_moves_into_a_new_place(tmp_path: Path) -> None:
    staged = _folder(tmp_path / ".staged", {"a.txt": b"new", "sub/b.txt": b"new b"})
    fs.replace_dir(staged, tmp_path / "out")
    assert _tree(tmp_path / "out") == {"a.txt": b"new", "sub/b.txt": b"new b"}
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_replace_dir_replaces_an_existing_folder_and_removes_the_old_one(tmp_path: Path) -> None:
    final = _folder(tmp_path / "out", {"old.txt": b"old", "sub/x": b"x"})
    staged = _folder(tmp_path / ".staged", {"a.txt": b"new"})
    fs.replace_dir(staged, final)
    assert _tree(final) == {"a.txt": b"new"}
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no backup left behind


def test_replace_dir_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"old")
    (tmp_path / ".staged").write_bytes(b"new")
    fs.replace_dir(tmp_path / ".staged", tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_replace_dir_rolls_back_when_moving_the_new_folder_in_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = _folder(tmp_path / "out", {"old.txt": b"old"})
    staged = _folder(tmp_path / ".staged", {"a.txt": b"new"})
    calls = _fail_on_call(monkeypatch, 2)  # 1: old folder aside, 2: new folder in (fails), 3: old folder back
    with pytest.raises(OSError, match="injected failure"):
        fs.replace_dir(staged, final)
    assert len(calls) == 3 and calls[2] == (calls[0][1], str(final))
    assert _tree(final) == {"old.txt": b"old"}
    assert _tree(staged) == {"a.txt": b"new"}  # left for the caller to remove
    assert sorted(os.listdir(tmp_path)) == [".staged", "out"]


def test_replace_dir_rolls_back_when_the_staged_folder_is_gone(tmp_path: Path) -> None:
    """A real failure (no injection): the rename of a missing folder fails, the old one comes back."""
    final = _folder(tmp_path / "out", {"old.txt": b"old"})
    with pytest.raises(FileNotFoundError):
        fs.replace_dir(tmp_path / ".never-staged", final)
    assert _tree(final) == {"old.txt": b"old"}
    assert os.listdir(tmp_path) == ["out"]


def test_replace_dir_names_where_the_old_content_is_when_restoring_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = _folder(tmp_path / "out", {"old.txt": b"old"})
    staged = _folder(tmp_path / ".staged", {"a.txt": b"new"})
    real = os.replace
    calls: list[str] = []

    def replace(src: os.PathLike, dst: os.PathLike) -> None:
        calls.append(str(src))
        if len(calls) >= 2:
            raise OSError(5, "injected failure")
        real(src, dst)

    monkeypatch.setattr(fs.os, "replace", replace)
    with pytest.raises(OSError, match="injected failure") as info:
        fs.replace_dir(staged, final)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "previous content is at" in notes
    moved = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert len(moved) == 1 and str(moved[0]) in notes and _tree(moved[0]) == {"old.txt": b"old"}
