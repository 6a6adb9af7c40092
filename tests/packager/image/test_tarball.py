"""Deterministic layer tarballs: same files → same digest, whatever the order, mtimes, umask or folder."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import time
from pathlib import Path

import pytest

from packager.errors import EdgepackError, InvalidInputError
from packager.image import tarball
from packager.image.spec import FileEntry, LayerSource

FILES = {
    "pkg/__init__.py": b"",
    "pkg/mod.py": b"print('hello')\n" * 100,
    "pkg/sub/data.bin": os.urandom(0) + bytes(range(256)) * 50,
    "run.sh": b"#!/bin/sh\necho hi\n",
    "zz/long/" + "n" * 120 + ".txt": b"long name\n",
}


def make_tree(root: Path, order: list[str], umask: int, mtime: float) -> None:
    old = os.umask(umask)
    try:
        for rel in order:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(FILES[rel])
            if rel.endswith(".sh"):
                p.chmod(0o777 & ~umask)
            os.utime(p, (mtime, mtime))
        (root / "pkg" / "link.py").symlink_to("mod.py")
    finally:
        os.umask(old)


def source(root: Path, key: str = "") -> LayerSource:
    return LayerSource.of("app", tarball.tree_entries(root, "/opt/app"), cache_key=key)


def test_same_files_give_same_digest(tmp_path: Path) -> None:
    a, b = tmp_path / "one" / "src", tmp_path / "two" / "elsewhere"
    make_tree(a, sorted(FILES), umask=0o022, mtime=1_000_000)
    make_tree(b, sorted(FILES, reverse=True), umask=0o077, mtime=time.time())
    la = tarball.build_layer(source(a), tmp_path / "cache-a")
    lb = tarball.build_layer(source(b), tmp_path / "cache-b")
    assert (la.digest, la.diff_id, la.size) == (lb.digest, lb.diff_id, lb.size)
    blob = la.path.read_bytes()
    assert la.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert la.size == len(blob)
    assert la.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    # fixed gzip header: magic, deflate, no flags (no file name), mtime 0, OS byte 255
    assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == b"\0\0\0\0" and blob[9] == 255
    assert la.path == tmp_path / "cache-a" / "layers" / "sha256" / la.digest[7:]


def test_tar_entries_are_normalised(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", sorted(FILES), umask=0o077, mtime=123456)
    layer = tarball.build_layer(source(tmp_path / "src"), tmp_path / "cache")
    with tarfile.open(layer.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["opt", "opt/app", "opt/app/pkg"]
    seen: set[str] = set()
    for m in members:
        parent = m.name.rpartition("/")[0]
        assert not parent or parent in seen, f"{m.name} before its folder"
        seen.add(m.name)
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        if m.isdir():
            assert m.mode == 0o755
    by_name = {m.name: m for m in members}
    assert by_name["opt/app/run.sh"].mode == 0o755
    assert by_name["opt/app/pkg/mod.py"].mode == 0o644
    assert by_name["opt/app/pkg/link.py"].issym() and by_name["opt/app/pkg/link.py"].linkname == "mod.py"
    assert any(len(n) > 100 for n in names)  # PAX long names survive


def test_source_date_epoch_sets_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = LayerSource.of("x", [FileEntry("/a/b.txt", data=b"hi")])
    plain = tarball.build_layer(src, tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = tarball.build_layer(src, tmp_path)
    assert dated.digest != plain.digest
    with tarfile.open(dated.path) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidInputError, match="SOURCE_DATE_EPOCH"):
        tarball.build_layer(src, tmp_path)


def test_cache_key_skips_retarring(tmp_path: Path) -> None:
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x" * 1000)
    first = tarball.build_layer(LayerSource.of("models", [FileEntry("/m/model.onnx", source=f)], "k1"), tmp_path / "c")
    f.unlink()  # a cache hit must not read the file at all
    again = tarball.build_layer(LayerSource.of("models", [FileEntry("/m/model.onnx", source=f)], "k1"), tmp_path / "c")
    assert (again.digest, again.path) == (first.digest, first.path)
    first.path.unlink()  # a missing blob is rebuilt, not trusted
    with pytest.raises(EdgepackError, match=r"model\.onnx"):
        tarball.build_layer(LayerSource.of("models", [FileEntry("/m/model.onnx", source=f)], "k1"), tmp_path / "c")


def test_stat_key_follows_changes(tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("one")
    entries = [tarball.host_entry(f, "/app/a.py")]
    k1 = tarball.stat_key(entries)
    assert tarball.stat_key(entries) == k1
    f.write_text("three")
    assert tarball.stat_key(entries) != k1
    assert tarball.stat_key([FileEntry("/x", data=b"1")]) != tarball.stat_key([FileEntry("/x", data=b"2")])


def test_bad_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="absolute"):
        tarball.build_layer(LayerSource.of("x", [FileEntry("rel/path", data=b"")]), tmp_path)
    with pytest.raises(InvalidInputError, match="twice"):
        tarball.build_layer(LayerSource.of("x", [FileEntry("/a", data=b""), FileEntry("/a", data=b"1")]), tmp_path)
