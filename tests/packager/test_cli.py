"""The ``edgepack model`` CLI: JSON round trip, one-line errors, exit codes (2 usage, 1 failure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from packager import Workspace
from packager.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in-process against a fresh workspace; return exit code and output."""
    monkeypatch.setenv("EDGEPACK_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("EDGEPACK_DEBUG", raising=False)

    def _run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        captured = capsys.readouterr()
        return Result(int(exc.value.code or 0), captured.out, captured.err)

    return _run


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "outputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "sub" / "labels.txt").write_text("a\nb\n")
    return folder


def test_round_trip_with_json(run, model_dir: Path, tmp_path: Path) -> None:
    r = run(
        "model",
        "register",
        "-n",
        "digits",
        "-p",
        str(model_dir),
        "--tag",
        "stage=dev",
        "--tag",
        "team=iot",
        "--property",
        "acc=0.97",
        "--description",
        "first cut",
        "--json",
    )
    assert r.code == 0, r.err
    reg = r.json()
    assert reg["id"] == "digits:1" and reg["framework"] == "onnx"
    assert reg["tags"] == {"stage": "dev", "team": "iot"} and reg["properties"] == {"acc": "0.97"}
    assert [f["path"] for f in reg["files"]] == ["outputs/model.onnx", "outputs/sub/labels.txt"]

    r = run("model", "register", "-n", "digits", "-p", str(model_dir / "model.onnx"), "--framework", "onnx", "--json")
    assert r.json()["version"] == 2

    listed = run("model", "list", "--json").json()
    assert [m["id"] for m in listed] == ["digits:2", "digits:1"]
    assert [m["id"] for m in run("model", "list", "--latest", "--json").json()] == ["digits:2"]
    assert [m["id"] for m in run("model", "list", "--tag", "stage=dev", "--json").json()] == ["digits:1"]
    assert run("model", "list", "--name", "other", "--json").json() == []

    shown = run("model", "show", "digits:1", "--json").json()
    assert shown == reg
    assert run("model", "show", "digits", "--json").json()["version"] == 2

    r = run(
        "model",
        "update",
        "digits:1",
        "--tag",
        "stage=prod",
        "--remove-tag",
        "team",
        "--description",
        "promoted",
        "--json",
    )
    assert r.code == 0, r.err
    assert r.json()["tags"] == {"stage": "prod"} and r.json()["description"] == "promoted"

    r = run("model", "download", "digits:1", "-t", str(tmp_path / "dl"), "--json")
    path = Path(r.json()["path"])
    assert path == tmp_path / "dl" / "outputs"
    assert (path / "sub" / "labels.txt").read_text() == "a\nb\n"

    r = run("model", "delete", "digits:1", "--json")
    assert r.json() == {"deleted": "digits:1"}
    assert [m["id"] for m in run("model", "list", "--json").json()] == ["digits:2"]


def test_human_output(run, model_dir: Path) -> None:
    r = run("model", "register", "-n", "digits", "-p", str(model_dir))
    assert r.code == 0 and "Registered digits:1 (onnx, 2 files" in r.out
    r = run("model", "list")
    assert "digits" in r.out and "onnx" in r.out
    r = run("model", "show", "digits")
    assert "outputs/sub/labels.txt" in r.out


def _one_error_line(r: Result, code: int, *fragments: str) -> None:
    assert r.code == code, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_usage_errors_exit_2(run, model_dir: Path, tmp_path: Path) -> None:
    _one_error_line(run("model", "register", "-n", "bad name", "-p", str(model_dir)), 2, "invalid model name")
    _one_error_line(run("model", "register", "-n", "m", "-p", str(tmp_path / "nope")), 2, "does not exist")
    (tmp_path / "empty").mkdir()
    _one_error_line(run("model", "register", "-n", "m", "-p", str(tmp_path / "empty")), 2, "has no files")
    _one_error_line(run("model", "register", "-p", str(model_dir)), 2, "Missing option", "--help")
    _one_error_line(run("model", "register", "-n", "m", "-p", str(model_dir), "--tag", "novalue"), 2, "KEY=VALUE")
    _one_error_line(run("model", "show", "m:zero"), 2, "NAME:VERSION")
    _one_error_line(run("model", "nosuch"), 2, "No such command")
    assert run("model", "list", "--json").json() == []  # nothing was registered by the failures


def test_failures_exit_1(run, model_dir: Path, tmp_path: Path) -> None:
    _one_error_line(run("model", "show", "digits"), 1, "no edgepack workspace")
    run("model", "register", "-n", "digits", "-p", str(model_dir))
    _one_error_line(run("model", "show", "digits:7"), 1, "no version 7", "versions: 1")
    _one_error_line(run("model", "show", "other"), 1, "no model named 'other'")
    _one_error_line(run("model", "delete", "digits"), 2, "explicit version")
    assert run("model", "update", "digits:1", "--property", "x=1").code == 0
    _one_error_line(run("model", "update", "digits:1", "--property", "x=2"), 1, "add-only")
    _one_error_line(run("model", "update", "digits:1"), 2, "nothing to update")
    run("model", "download", "digits", "-t", str(tmp_path / "dl"))
    _one_error_line(run("model", "download", "digits", "-t", str(tmp_path / "dl")), 2, "already exists")
    assert run("model", "download", "digits", "-t", str(tmp_path / "dl"), "--overwrite").code == 0


def test_corrupted_blob_download_fails_and_debug_shows_traceback(run, model_dir: Path, tmp_path: Path) -> None:
    reg = run("model", "register", "-n", "digits", "-p", str(model_dir), "--json").json()
    digest = next(f["digest"] for f in reg["files"] if f["path"] == "outputs/model.onnx").split(":")[1]
    blob = tmp_path / "ws" / "blobs" / "sha256" / digest[:2] / digest
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    r = run("model", "download", "digits:1", "-t", str(tmp_path / "dl"))
    _one_error_line(r, 1, "outputs/model.onnx", "digits:1", "corrupted")
    assert list((tmp_path / "dl").iterdir()) == []
    r = run("--debug", "model", "download", "digits:1", "-t", str(tmp_path / "dl"))
    assert r.code == 1 and "Traceback" in r.err


def test_console_script_installed(tmp_path: Path, model_dir: Path) -> None:
    """The installed ``edgepack`` entry point (and ``python -m packager``) behave the same."""
    env = {"EDGEPACK_WORKSPACE": str(tmp_path / "ws"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    r = subprocess.run(
        ["edgepack", "model", "register", "-n", "m", "-p", str(model_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == "m:1"
    r = subprocess.run(
        [sys.executable, "-m", "packager", "model", "show", "m:9"], capture_output=True, text=True, env=env, check=False
    )
    assert r.returncode == 1 and r.stderr.startswith("error: model 'm' has no version 9")
    r = subprocess.run(["edgepack", "--version"], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0 and "0.1.0" in r.stdout


def test_error_messages_are_printed_as_text_not_markup(run) -> None:
    """Brackets in a message (a name, ``pkg[extra]``, ``[/variant]``) are shown as typed, never parsed."""
    for name in ("bad[/x]", "bad[bold]name"):
        r = run("model", "show", name)
        assert r.code == 2, r.err
        assert name in r.err and r.err.startswith("error:"), r.err


def test_file_link_outside_the_folder_needs_follow_symlinks(run, model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("token")
    (model_dir / "sub" / "creds").symlink_to(tmp_path / "secret")
    r = run("model", "register", "-n", "m", "-p", str(model_dir))
    _one_error_line(r, 2, "creds is a symbolic link to", str(tmp_path / "secret"), "--follow-symlinks")
    r = run("model", "register", "-n", "m", "-p", str(model_dir), "--follow-symlinks", "--json")
    assert r.code == 0, r.err
    assert "outputs/sub/creds" in [f["path"] for f in r.json()["files"]]


def test_gc_removes_unreferenced_blobs_after_the_grace_period(run, model_dir: Path, tmp_path: Path) -> None:
    reg = run("model", "register", "-n", "m", "-p", str(model_dir), "--json").json()
    ws = Workspace.from_path(tmp_path / "ws")
    orphan, size = ws.blobs.put_bytes(b"left by a killed register")  # a blob no version references
    r = run("model", "gc", "--json")
    assert r.code == 0, r.err
    assert r.json() == {"dryRun": False, "removed": [], "bytes": 0, "keptRecent": 1, "tempRemoved": 0}
    os.utime(ws.blobs.path(orphan), (1, 1))  # older than the default grace period (1h)
    r = run("model", "gc", "--dry-run")
    assert r.code == 0 and r.out.startswith("Would remove 1 unreferenced blob (25 B)"), r.out
    assert ws.blobs.exists(orphan)
    r = run("model", "gc", "--json")
    assert r.json()["removed"] == [{"digest": f"sha256:{orphan}", "size": size}]
    assert not ws.blobs.exists(orphan)
    assert run("model", "gc", "--grace", "0").out.startswith("Removed 0 unreferenced blobs")
    assert run("model", "download", "m", "-t", str(tmp_path / "dl")).code == 0  # referenced blobs are kept
    assert all(ws.blobs.exists(f["digest"].split(":")[1]) for f in reg["files"])
    _one_error_line(run("model", "gc", "--grace", "soon"), 2, "'soon' is not a duration")


def _raw_controls(text: str) -> list[str]:
    """Characters a terminal would act on instead of showing (line breaks between lines aside)."""
    return [ch for ch in text if not ch.isprintable() and ch != "\n"]


def test_human_output_escapes_control_characters_and_json_keeps_them(run, model_dir: Path) -> None:
    description = "clears\x1b[2J\rthe screen [bold]and[/] [/x] \u202eevil\u2028"
    (model_dir / "sub" / "log\x1b[31m.txt").write_text("x")
    r = run(
        "model",
        "register",
        "-n",
        "m",
        "-p",
        str(model_dir),
        "--description",
        description,
        "--tag",
        "bell=\x07ring",
        "--tag",
        "k\x9b2J=v",
        "--property",
        "p\x1b]0;title\x07=1",
        "--json",
    )
    assert r.code == 0, r.err
    shown = run("model", "show", "m", "--json").json()
    assert shown["description"] == description and shown["tags"] == {"bell": "\x07ring", "k\x9b2J": "v"}
    assert "outputs/sub/log\x1b[31m.txt" in [f["path"] for f in shown["files"]]
    for args in (("model", "show", "m"), ("model", "list")):
        r = run(*args)
        assert r.code == 0, r.err
        assert _raw_controls(r.out) == [], (args, r.out)
    show = run("model", "show", "m").out
    assert "clears\\x1b[2J\\rthe screen [bold]and[/] [/x] \\u202eevil\\u2028" in show  # markup shown as typed
    assert "bell=\\x07ring" in show and "k\\x9b2J=v" in show and "log\\x1b[31m.txt" in show
    assert "bell=\\x07ring" in run("model", "list").out


def test_error_lines_escape_control_characters(run, model_dir: Path) -> None:
    assert run("model", "register", "-n", "m", "-p", str(model_dir), "--property", "p\x1b[2J=1").code == 0
    r = run("model", "update", "m:1", "--property", "p\x1b[2J=2")
    _one_error_line(r, 1, "add-only; p\\x1b[2J already set")
    assert _raw_controls(r.err) == []


def test_warnings_reach_the_terminal_as_one_prefixed_line(run, tmp_path: Path, monkeypatch) -> None:
    """A repaired blob is said on stderr as ``warning: repaired blob ...`` (not a bare log line)."""
    model_file = tmp_path / "m.bin"
    model_file.write_bytes(b"content " * 64)
    first = run("model", "register", "-n", "m", "-p", str(model_file), "--json")
    assert first.code == 0, first.err
    ws = tmp_path / "ws"
    (blob,) = [p for p in (ws / "blobs" / "sha256").rglob("*") if p.is_file()]
    blob.chmod(0o644)
    blob.write_bytes(bytes(blob.stat().st_size))  # same size, other bytes
    again = run("model", "register", "-n", "m", "-p", str(model_file))
    assert again.code == 0, again.err
    assert again.err.startswith("warning: repaired blob sha256:"), again.err
