"""Service state in the workspace: private folders and secrets, no symbolic links followed, locked updates."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from cloud_targets.services.store import ServiceRecord, ServiceSecrets, ServiceStore
from packager import Workspace
from packager.errors import EdgepackError, InvalidInputError, NotFoundError


def test_records_and_secrets_are_separate_and_private(workspace: Workspace) -> None:
    store = ServiceStore(workspace)
    with store.lock("svc-a", create=True):
        store.write(ServiceRecord(name="svc-a", compute_type="LOCAL", tags={"k": "v"}))
        store.write_secrets("svc-a", ServiceSecrets(primary_key="p" * 20, secondary_key="s" * 20))
    folder = workspace.path / "services" / "svc-a"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "secrets.json").st_mode) == 0o600
    assert "p" * 20 not in (folder / "service.json").read_text()
    assert store.read("svc-a").tags == {"k": "v"}
    assert store.read_secrets("svc-a").primary_key == "p" * 20
    assert "p" * 20 not in repr(store.read_secrets("svc-a"))
    assert [r.name for r in store.list()] == ["svc-a"]
    with pytest.raises(NotFoundError, match="edgepack service list"):
        store.read("svc-b")
    with pytest.raises(InvalidInputError, match="between 3 and 32"):
        store.read("../x")


def test_symbolic_links_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    store = ServiceStore(workspace)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (workspace.path / "services").mkdir(mode=0o700)
    (workspace.path / "services" / "linked").symlink_to(elsewhere)
    with pytest.raises(EdgepackError, match="symbolic link"):
        store.service_dir("linked")
    with pytest.raises(EdgepackError, match="symbolic link"), store.lock("linked", create=True):
        pass

    with store.lock("real", create=True) as folder:
        store.write(ServiceRecord(name="real", compute_type="LOCAL"))
    target = tmp_path / "stolen.json"
    target.write_text('{"primary_key": "from-a-link"}')
    os.chmod(target, 0o600)
    (folder / "secrets.json").symlink_to(target)
    with pytest.raises(EdgepackError, match="symbolic link"):
        store.read_secrets("real")
    store.write_secrets("real", ServiceSecrets(primary_key="k" * 20))  # replaces the link, never writes through it
    assert target.read_text() == '{"primary_key": "from-a-link"}'
    assert not (folder / "secrets.json").is_symlink()
    os.chmod(folder / "secrets.json", 0o644)
    with pytest.raises(EdgepackError, match="chmod 600"):
        store.read_secrets("real")


def _bump(path: str, n: int) -> None:
    store = ServiceStore(Workspace(path))
    for _ in range(n):
        with store.lock("counter"):
            record = store.read("counter")
            record.properties["n"] = str(int(record.properties.get("n", "0")) + 1)
            store.write(record)


def test_concurrent_read_modify_write_loses_nothing(workspace: Workspace) -> None:
    store = ServiceStore(workspace)
    with store.lock("counter", create=True):
        store.write(ServiceRecord(name="counter", compute_type="LOCAL"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(workspace.path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert store.read("counter").properties["n"] == "100"


def test_a_lock_held_on_a_removed_service_is_not_shared(workspace: Workspace) -> None:
    """A deploy that fails removes the service's folder (and its lock file) while another waits on that lock:
    the waiter must not then run alongside a third call that made a fresh folder and lock."""
    store = ServiceStore(workspace)
    waiter_in = threading.Event()
    waiter_release = threading.Event()
    result: dict[str, object] = {}

    def waiter() -> None:
        with store.lock("gone", create=True) as path:
            result["path"] = path
            waiter_in.set()
            waiter_release.wait(10)

    with store.lock("gone", create=True):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter blocks on the old lock file
        store.remove("gone")  # what a failed first deploy does
    assert waiter_in.wait(10)
    # the waiter now holds the lock: a third caller must not get it at the same time
    with store.lock("gone", create=True, wait=False) as third:
        assert third is None
    waiter_release.set()
    thread.join(10)
    assert result["path"] == store.service_dir("gone") and store.service_dir("gone").is_dir()
    with store.lock("gone", wait=False) as again:
        assert again is not None
