"""``edgepack service``: secrets stay out of list/show, keys/regen-key rotate, token, reload, errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from packager import Workspace
from tests.cloud_targets.cli_support import Run
from tests.cloud_targets.local.support import body, register, write_app
from tests.support.workspaces import user_workspace


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    yield from user_workspace(tmp_path, monkeypatch)


def status(url: str, key: str | None) -> int:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.post(url, data=body(), headers=headers, timeout=30).status_code


def test_keys_rotate_and_never_leak(ws: Workspace, tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    dc = tmp_path / "dc.json"
    dc.write_text(json.dumps({"computeType": "LOCAL", "authEnabled": True, "tags": {"team": "ml"}}))
    r = run("deploy", "-n", "keyed", "-m", "mlp", "--ic", ic, "--dc", dc, "--json")
    assert r.code == 0, r.err
    url = r.json()["scoringUri"]
    deploy_out = r.out + r.err

    keys = run("service", "keys", "keyed", "--json").json()
    primary, secondary = keys["primaryKey"], keys["secondaryKey"]
    assert primary and secondary and primary != secondary
    human = run("service", "keys", "keyed").out
    assert primary in human and secondary in human
    assert (status(url, None), status(url, primary), status(url, secondary)) == (401, 200, 200)

    public = [
        deploy_out,
        run("service", "list", "--json").out,
        run("service", "list").out,
        run("service", "list", "--tag", "team=ml", "--json").out,
        run("service", "show", "keyed", "--json").out,
        run("service", "show", "keyed").out,
        run("service", "logs", "keyed").out,
    ]
    for text in public:
        assert primary not in text and secondary not in text
    assert [s["name"] for s in json.loads(public[3])] == ["keyed"]
    assert run("service", "list", "--tag", "team=other", "--json").json() == []

    r = run("service", "regen-key", "keyed", "--key", "Primary")
    assert r.code == 0, r.err
    assert primary not in r.out + r.err
    new = run("service", "keys", "keyed", "--json").json()
    assert new["primaryKey"] != primary and new["secondaryKey"] == secondary
    assert (status(url, primary), status(url, new["primaryKey"]), status(url, secondary)) == (401, 200, 200)
    r = run("service", "regen-key", "keyed", "--key", "secondary", "--set-key", "s" * 24)
    assert r.code == 0, r.err
    assert "process list" in r.err and "--set-key -" in r.err  # a key on the command line is visible to all
    assert run("service", "keys", "keyed", "--json").json()["secondaryKey"] == "s" * 24
    assert (status(url, secondary), status(url, "s" * 24)) == (401, 200)
    monkeypatch.setattr("sys.stdin", io.StringIO("t" * 24 + "\n"))
    r = run("service", "regen-key", "keyed", "--key", "secondary", "--set-key", "-")
    assert r.code == 0 and "process list" not in r.err, r.err
    assert run("service", "keys", "keyed", "--json").json()["secondaryKey"] == "t" * 24
    monkeypatch.setenv("EDGEPACK_SET_KEY", "u" * 24)
    r = run("service", "regen-key", "keyed", "--key", "secondary")
    assert r.code == 0 and "process list" not in r.err, r.err
    assert run("service", "keys", "keyed", "--json").json()["secondaryKey"] == "u" * 24
    monkeypatch.delenv("EDGEPACK_SET_KEY")
    r = run("service", "regen-key", "keyed", "--key", "Primary", "--set-key", "short")
    assert r.code == 2 and "16 characters" in r.err
    r = run("service", "regen-key", "keyed", "--key", "Tertiary")
    assert r.code == 2
    r = run("service", "token", "keyed")
    assert r.code == 1 and "token auth" in r.err


def test_token_reload_and_errors(ws: Workspace, tmp_path: Path, run: Run) -> None:
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path)
    r = run("deploy", "-n", "open-svc", "-m", "mlp", "--ic", ic, "--json")
    assert r.code == 0, r.err
    url = r.json()["scoringUri"]
    assert run("service", "run", "open-svc", "-d", body(), "--json").json()["tag"] == "v1"
    assert status(url, None) == 200

    write_app(tmp_path, tag="reloaded")
    r = run("service", "reload", "open-svc")
    assert r.code == 0 and "Healthy" in r.out, r.err
    assert run("service", "run", "open-svc", "-d", body()).json()["tag"] == "reloaded"

    r = run("service", "keys", "open-svc")
    assert r.code == 1 and "key auth" in r.err
    r = run("service", "run", "open-svc", "-d", "{not json")
    assert r.code == 2 and "not valid JSON" in r.err
    binary = tmp_path / "input.bin"
    binary.write_bytes(b"\x9e\xff\x00" * 100)
    r = run("service", "run", "open-svc", "-f", binary)
    assert r.code == 2 and "input.bin" in r.err and "UTF-8" in r.err, r.err
    r = run("service", "run", "open-svc")
    assert r.code == 2 and "-d JSON or -f FILE" in r.err
    r = run("service", "update", "open-svc")
    assert r.code == 2 and "nothing to update" in r.err
    aks = tmp_path / "aks.json"
    aks.write_text(json.dumps({"computeType": "AKS"}))
    r = run("service", "update", "open-svc", "--dc", aks)
    assert r.code == 2 and "LOCAL" in r.err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"computeType": "LOCAL", "port": 0}))
    r = run("service", "update", "open-svc", "--dc", bad)
    assert r.code == 2 and "port" in r.err
    for command in ("show", "logs", "keys", "token", "reload", "delete"):
        r = run("service", command, "no-such-svc", *(["-y"] if command == "delete" else []))
        assert r.code == 1 and "no-such-svc" in r.err and "Traceback" not in r.err, command
    r = run("service", "delete", "open-svc")  # stdin is not a terminal: refuse without -y
    assert r.code == 2 and "-y" in r.err
    assert run("service", "list", "--json").json()[0]["name"] == "open-svc"


def test_token_on_a_key_auth_service_is_refused(ws: Workspace, tmp_path: Path, run: Run) -> None:
    """Token auth is AKS-only (v1's rule); ``service token`` on a key-auth service says so and exits 1."""
    register(ws, tmp_path, seed=0)
    dc = tmp_path / "dc.json"
    dc.write_text(json.dumps({"computeType": "LOCAL", "authEnabled": True}))
    assert run("deploy", "-n", "keyed-only", "-m", "mlp", "--ic", write_app(tmp_path), "--dc", dc).code == 0
    r = run("service", "token", "keyed-only")
    assert r.code == 1 and "token" in r.err.lower(), r.err


def test_show_prints_one_error_line(ws: Workspace, tmp_path: Path, run: Run) -> None:
    """A service whose process exited keeps its last log lines as its error: ``show`` prints the first line
    and points to ``logs``."""
    register(ws, tmp_path, seed=0)
    ic = write_app(tmp_path, init_extra="print('boom-7', flush=True); import os; os._exit(3)")
    r = run("deploy", "-n", "broken-svc", "-m", "mlp", "--ic", ic)
    assert r.code == 1 and "exited" in r.err
    r = run("service", "show", "broken-svc")
    error = [line for line in r.out.splitlines() if line.startswith("error")]
    assert r.code == 0 and len(error) == 1 and "\\n" not in error[0], r.out
    assert "edgepack service logs broken-svc" in error[0]
    assert "boom-7" in run("service", "logs", "broken-svc").out
