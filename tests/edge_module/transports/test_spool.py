"""The MQTT spool under hostile conditions: a private folder, planted symlinks and files, damaged records."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest

from edge_module.settings_table import SettingsError
from edge_module.transports.settings import MqttSettings
from edge_module.transports.spool import Record, Spool, SpoolError
from tests.support.mqtt import v1_segment

STATE_VARS = ("EDGEPACK_STATE_DIR", "XDG_STATE_HOME", "EDGEPACK_MQTT_SPOOL_DIR")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _v1_segment(folder: Path, topics: list[bytes], first: int = 0) -> Path:
    return v1_segment(folder, [(t, b'{"id":"old%d"}' % (first + i)) for i, t in enumerate(topics)], first)


# where the spool lives ----------------------------------------------------------------------------
def test_the_default_folder_is_private_state_not_the_shared_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in STATE_VARS:
        monkeypatch.delenv(var, raising=False)
    default = MqttSettings(client_id="scorer/1").effective_spool_dir
    assert not default.startswith(tempfile.gettempdir() + os.sep), default
    assert default == os.path.expanduser("~/.local/state/edgepack/mqtt/scorer_1")

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = MqttSettings(client_id="c1")
    assert settings.effective_spool_dir == str(tmp_path / "home/.local/state/edgepack/mqtt/c1")
    xdg = MqttSettings.from_env({"XDG_STATE_HOME": "/ignored"}, client_id="c1")  # from_env reads os.environ's HOME
    assert xdg.effective_spool_dir.endswith("/.local/state/edgepack/mqtt/c1")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert settings.effective_spool_dir == str(tmp_path / "xdg/edgepack/mqtt/c1")
    state = MqttSettings.from_env({"EDGEPACK_STATE_DIR": str(tmp_path / "state")}, client_id="c1")
    assert state.effective_spool_dir == str(tmp_path / "state/mqtt/c1")

    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", "/")  # e.g. a user without a home folder: no guessing, say what to set
    with pytest.raises(SettingsError, match="set EDGEPACK_STATE_DIR or EDGEPACK_MQTT_SPOOL_DIR"):
        MqttSettings(client_id="c1").effective_spool_dir  # noqa: B018
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))

    spool = Spool(settings.effective_spool_dir)  # created with its parents, all private
    spool.append([Record("t", b"x")])
    spool.close()
    folder = Path(settings.effective_spool_dir)
    assert _mode(folder) == 0o700 and _mode(folder.parent) == 0o700 and _mode(tmp_path / "xdg") == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["00000000000000000000.seg2", "head"]
    assert all(_mode(f) == 0o600 for f in files), [oct(_mode(f)) for f in files]


def test_an_own_folder_readable_by_others_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / "head").write_bytes(b"")
    (folder / "head").chmod(0o644)
    Spool(folder).close()
    assert _mode(folder) == 0o700 and _mode(folder / "head") == 0o600


# refusing what others could have planted ------------------------------------------------------------
def test_a_planted_head_symlink_is_refused_and_its_target_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious data")
    folder = _private(tmp_path / "spool")
    (folder / "head").symlink_to(victim)
    with pytest.raises(SpoolError, match=r"spool file .*head is a symlink: remove it"):
        spool = Spool(folder)
        spool.append([Record("t", b"x")])
        spool.ack([r.seq for r in spool.take(1)])  # before the fix: rewrote the victim
        spool.close()
    assert victim.read_bytes() == b"precious data"


@pytest.mark.parametrize("name", ["00000000000000000000.seg", "00000000000000000000.seg2"])
def test_a_planted_segment_symlink_is_refused_and_its_target_left_alone(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious data, not a spool record")
    folder = _private(tmp_path / "spool")
    (folder / name).symlink_to(victim)
    with pytest.raises(SpoolError, match="is a symlink"):
        Spool(folder).close()  # before the fix: read it as a segment and truncated the victim to 0 bytes
    assert victim.read_bytes() == b"precious data, not a spool record"


def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    real = _private(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SpoolError, match=r"spool folder .*link is a symlink.*EDGEPACK_MQTT_SPOOL_DIR"):
        Spool(tmp_path / "link")
    assert list(real.iterdir()) == []


@root_only
def test_a_folder_or_file_of_another_user_is_refused(tmp_path: Path) -> None:
    foreign = _private(tmp_path / "foreign")
    os.chown(foreign, 12345, 12345)
    with pytest.raises(SpoolError, match=r"belongs to uid 12345, not to this process .*EDGEPACK_MQTT_SPOOL_DIR"):
        Spool(foreign)
    assert list(foreign.iterdir()) == []

    planted = _private(tmp_path / "planted")
    _v1_segment(planted, [b"edgepack/x/score/response/planted"])
    seg = planted / "00000000000000000000.seg"
    os.chown(seg, 12345, 12345)
    with pytest.raises(SpoolError, match=r"spool file .*\.seg belongs to uid 12345"):
        Spool(planted)  # before the fix: published what another user wrote


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_a_folder_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    folder = _private(tmp_path / "spool")
    folder.chmod(mode)
    with pytest.raises(SpoolError, match=rf"spool folder .*spool is writable by group or others \(mode {mode:04o}\)"):
        Spool(folder)
    assert _mode(folder) == mode and list(folder.iterdir()) == []


# damaged records ------------------------------------------------------------------------------------
def _ten(folder: Path, **kwargs: int) -> Spool:
    spool = Spool(folder, **kwargs)
    spool.append([Record(f"t/{i}", b"payload of record %d " % i * 4) for i in range(10)])
    return spool


def _flip(folder: Path, marker: bytes, delta: int = 0) -> None:
    """Flip one byte of the segment that holds ``marker``, ``delta`` bytes from where it starts."""
    for seg in folder.glob("*.seg*"):
        data = bytearray(seg.read_bytes())
        at = data.find(marker)
        if at >= 0:
            data[at + delta] ^= 0x40
            with open(seg, "r+b") as f:  # in place: the spool may hold it open
                f.write(data)
            return
    raise AssertionError(f"{marker!r} not found")


def test_a_flipped_byte_loses_only_its_record(tmp_path: Path) -> None:
    _ten(tmp_path).close()
    _flip(tmp_path, b"payload of record 3", 5)
    spool = Spool(tmp_path)
    taken = spool.take(100)
    assert [r.topic for r in taken] == [f"t/{i}" for i in range(10) if i != 3]  # before the fix: t/0..t/2
    assert len(spool) == 9 and spool.pending == 0
    spool.ack([r.seq for r in taken])
    assert len(spool) == 0 and spool.lost == 1
    spool.close()


@pytest.mark.parametrize("where", ["magic", "crc", "length", "body header"])
def test_damage_anywhere_in_a_record_loses_only_it(tmp_path: Path, where: str) -> None:
    _ten(tmp_path).close()
    delta = {"magic": 0, "crc": 5, "length": 9, "body header": 12}[where]
    seg = next(tmp_path.glob("*.seg2"))
    starts = [i for i in range(len(seg.read_bytes())) if seg.read_bytes().startswith(b"\xfe\xed\x5a\xa5", i)]
    data = bytearray(seg.read_bytes())
    data[starts[3] + delta] ^= 0x80 if where != "length" else 0x7F  # a length far past the end, too
    seg.write_bytes(bytes(data))
    spool = Spool(tmp_path)
    taken = spool.take(100)
    assert [r.topic for r in taken] == [f"t/{i}" for i in range(10) if i != 3]
    spool.ack([r.seq for r in taken])
    assert len(spool) == 0
    spool.append([Record("next", b"")])  # the spool goes on after it
    assert [r.topic for r in spool.take(10)] == ["next"]
    spool.close()


def test_damage_after_opening_is_skipped_when_read_back_and_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)  # a few records per segment
    spool.recent_max = 0  # read back from disk
    for i in range(10):
        spool.append([Record(f"t/{i}", b"payload of record %d " % i * 4)])
    segments = sorted(tmp_path.glob("*.seg2"))
    assert len(segments) >= 3
    _flip(tmp_path, b"payload of record 3", 0)
    data = segments[0].read_bytes()  # and the last record of the first segment: a gap between segments
    k = max(i for i in range(10) if b"payload of record %d " % i in data)
    _flip(tmp_path, b"payload of record %d " % k, 1)
    taken = spool.take(100)
    assert [r.topic for r in taken] == [f"t/{i}" for i in range(10) if i not in (3, k)]
    spool.ack([r.seq for r in taken])
    assert len(spool) == 0 and spool.lost == 2 and spool.pending == 0
    spool.close()


def test_a_record_that_does_not_decode_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _private(tmp_path / "spool")
    _v1_segment(
        folder, [b"edgepack/s/score/response/old0", b"edgepack/\xff\xfe/bad", b"edgepack/s/score/response/old2"]
    )
    with caplog.at_level(logging.WARNING, "edgepack.mqtt"):
        spool = Spool(folder)
        taken = spool.take(10)  # before the fix: UnicodeDecodeError (and the MQTT thread died)
    assert [r.topic for r in taken] == ["edgepack/s/score/response/old0", "edgepack/s/score/response/old2"]
    assert "does not decode (seq 1)" in caplog.text
    spool.ack([r.seq for r in taken])
    assert len(spool) == 0 and spool.lost == 1
    spool.close()


def test_first_format_segments_are_converted(tmp_path: Path) -> None:
    folder = _private(tmp_path / "spool")
    _v1_segment(folder, [b"a", b"b"], first=0)
    _v1_segment(folder, [b"c"], first=2)
    spool = Spool(folder)
    assert [(r.topic, r.seq, r.payload) for r in spool.take(10)] == [
        ("a", 0, b'{"id":"old0"}'),
        ("b", 1, b'{"id":"old1"}'),
        ("c", 2, b'{"id":"old2"}'),
    ]
    spool.close()
    assert sorted(p.name for p in folder.iterdir()) == [
        "00000000000000000000.seg2",
        "00000000000000000002.seg2",
        "head",
    ]
