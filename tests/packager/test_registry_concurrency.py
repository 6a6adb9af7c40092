"""Concurrent and interrupted registrations: distinct consecutive versions, nothing half-visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from packager import Model, NotFoundError, Workspace

PROCESSES, THREADS = 8, 50


def _register_many(ws_path: str, src_dir: str, worker: int) -> list[int]:
    """One process: THREADS threads register the same name at once (after a barrier)."""
    ws = Workspace.from_path(ws_path)
    barrier = threading.Barrier(THREADS)
    versions: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        src = Path(src_dir) / f"w{worker}-{i}.bin"
        src.write_bytes(f"{worker}-{i}".encode() if i % 2 else b"shared content")
        barrier.wait()
        try:
            v = Model.register(ws, src, "race", tags={"worker": str(worker), "i": str(i)}).version
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            versions.append(v)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return versions


def test_8_processes_x_50_concurrent_registers_get_versions_1_to_400(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path / "ws")
    src = tmp_path / "src"
    src.mkdir()
    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_register_many, str(ws.path), str(src), w) for w in range(PROCESSES)]
        versions = [v for f in futures for v in f.result()]
    total = PROCESSES * THREADS
    assert sorted(versions) == list(range(1, total + 1))
    stored = Model.list(ws, name="race")
    assert sorted(m.version for m in stored) == list(range(1, total + 1))
    # every version points at the content its registrant wrote
    for m in stored[:: total // 20]:
        worker, i = m.tags["worker"], int(m.tags["i"])
        expected = f"{worker}-{i}".encode() if i % 2 else b"shared content"
        assert Path(m.download(tmp_path / "check" / m.id.replace(":", "_"))).read_bytes() == expected


def test_delete_collecting_a_blob_mid_register_does_not_break_the_new_version(tmp_path: Path) -> None:
    """A delete frees a blob after register stored it but before register commits: register stores it again."""
    ws = Workspace.from_path(tmp_path / "ws")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"shared with version 1")
    (folder / "b.bin").write_bytes(b"new in version 2" * 1000)
    old = Model.register(ws, folder / "a.bin", "old")
    shared_blob = ws.blobs.path(old.files[0].digest)
    copied = [0]
    deleted: list[bool] = []

    def progress(n: int) -> None:  # files are copied in path order: a.bin is stored when b.bin starts
        copied[0] += n
        if copied[0] > len(b"shared with version 1") and not deleted:
            old.delete()  # the only other user of a.bin's blob: delete collects it
            deleted.append(not shared_blob.exists())

    new = Model.register(ws, folder, "new", progress=progress)
    assert deleted == [True], "the delete did not run (or left the blob) mid-register: the race was not exercised"
    with pytest.raises(NotFoundError, match="no model named 'old'"):
        Model(ws, "old")
    assert shared_blob.exists()  # register stored it again
    out = Path(new.download(tmp_path / "dl"))
    assert (out / "a.bin").read_bytes() == b"shared with version 1"


def test_killed_register_leaves_no_version(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path / "ws")
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(20):
        (folder / f"part{i:02}.bin").write_bytes(bytes([i]) * 200_000)
    child = textwrap.dedent(f"""
        import sys, time
        from packager import Model, Workspace
        seen = [0]
        def progress(n):
            seen[0] += n
            if seen[0] > 1_000_000:   # several files copied: announce, then hang until killed
                print("copying", flush=True)
                time.sleep(60)
        Model.register(Workspace.from_path({str(ws.path)!r}), {str(folder)!r}, "big", progress=progress)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "copying"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert Model.list(ws) == []
    leftovers = list(ws.blobs.tmp.iterdir())
    assert leftovers  # the killed writer's partial file
    Workspace.from_path(ws.path)  # reopening keeps fresh temp files (a live writer may own them)...
    assert list(ws.blobs.tmp.iterdir()) == leftovers
    for p in leftovers:
        os.utime(p, (0, 0))
    Workspace.from_path(ws.path)  # ...and sweeps old ones
    assert list(ws.blobs.tmp.iterdir()) == []
    m = Model.register(ws, folder, "big")
    assert m.version == 1 and len(m.files) == 20
    assert Path(m.download(tmp_path / "dl")).joinpath("part19.bin").read_bytes() == bytes([19]) * 200_000


def _register_same(ws_path: str, src: str, n: int) -> list[int]:
    """One process: ``n`` threads register the same file at once (after a barrier)."""
    ws = Workspace.from_path(ws_path)
    barrier = threading.Barrier(n)
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(lambda: (barrier.wait(), Model.register(ws, src, "same"))[1].version) for _ in range(n)]
        return [f.result() for f in futures]


def test_many_processes_registering_content_over_a_corrupted_blob_all_repair_it(tmp_path: Path) -> None:
    ws = Workspace.from_path(tmp_path / "ws")
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 << 20))  # several read chunks: a reader can overlap a repairing rename
    first = Model.register(ws, src, "same")
    blob = ws.blobs.path(first.files[0].digest)
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * (3 << 20))
    with ProcessPoolExecutor(4, mp_context=get_context("spawn")) as pool:
        versions = [
            v for f in [pool.submit(_register_same, str(ws.path), str(src), 8) for _ in range(4)] for v in f.result()
        ]
    assert sorted(versions) == list(range(2, 34))
    assert blob.read_bytes() == src.read_bytes() and (blob.stat().st_mode & 0o777) == 0o444
    assert Path(first.download(tmp_path / "dl")).read_bytes() == src.read_bytes()
    assert list(ws.blobs.tmp.iterdir()) == []


def test_gc_removes_the_blob_of_a_register_killed_before_its_commit(tmp_path: Path) -> None:
    """kill -9 after register published its blob and before its row committed leaves an orphan: gc sweeps it."""
    ws = Workspace.from_path(tmp_path / "ws")
    kept_src = tmp_path / "kept.bin"
    kept_src.write_bytes(b"referenced content")
    kept = Model.register(ws, kept_src, "kept")
    src = tmp_path / "orphan.bin"
    src.write_bytes(b"content of the killed register")
    child = textwrap.dedent(f"""
        import time
        from packager import Model, Workspace
        from packager.registry.store import WriteTransaction
        def hang(self, new):   # inside the commit's transaction: blobs published, row not committed
            print("committing", flush=True)
            time.sleep(60)
        WriteTransaction.insert_version = hang
        Model.register(Workspace.from_path({str(ws.path)!r}), {str(src)!r}, "killed")
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "committing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [m.id for m in Model.list(ws)] == ["kept:1"]
    orphans = [b.digest for b in ws.blobs.stored() if b.digest != kept.files[0].digest]
    assert len(orphans) == 1  # the killed register's blob, referenced by nothing

    fresh = ws.gc()  # within the grace period: a register may still be about to commit it
    assert fresh.removed == [] and fresh.kept_recent == 1 and ws.blobs.exists(orphans[0])
    dry = ws.gc(grace_s=0, dry_run=True)
    assert [b.digest for b in dry.removed] == orphans and ws.blobs.exists(orphans[0])
    report = ws.gc(grace_s=0)
    assert [b.digest for b in report.removed] == orphans and report.bytes == len(b"content of the killed register")
    assert [b.digest for b in ws.blobs.stored()] == [kept.files[0].digest]
    assert Path(kept.download(tmp_path / "dl")).read_bytes() == b"referenced content"
    assert ws.gc(grace_s=0).removed == []
    again = Model.register(ws, src, "killed")  # the content can be registered again
    assert Path(again.download(tmp_path / "dl2")).read_bytes() == src.read_bytes()


def test_gc_racing_a_register_keeps_the_new_version_whole(tmp_path: Path) -> None:
    """gc with no grace, run between register's blob writes and its commit, cannot break the version."""
    ws = Workspace.from_path(tmp_path / "ws")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"first file")
    (folder / "b.bin").write_bytes(b"second file" * 1000)
    copied = [0]
    swept: list[int] = []

    def progress(n: int) -> None:  # files are copied in path order: a.bin is stored when b.bin starts
        copied[0] += n
        if copied[0] > len(b"first file") and not swept:
            swept.append(len(ws.gc(grace_s=0).removed))

    m = Model.register(ws, folder, "m", progress=progress)
    assert swept == [1], "gc did not collect a.bin's blob mid-register: the race was not exercised"
    out = Path(m.download(tmp_path / "dl"))
    assert (out / "a.bin").read_bytes() == b"first file"
    assert ws.gc(grace_s=0).removed == []
