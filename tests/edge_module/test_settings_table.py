"""One declaration per setting: every setting is reachable by its variables and, with a flag, by both
command lines (``python -m edge_module`` and ``edgepack serve``), which accept the same flags."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from edge_module.server.main import build_parser, settings_from_args
from edge_module.settings import Settings
from edge_module.settings_table import Setting, table
from edge_module.transports.settings import IotEdgeSettings, MqttSettings

ROOT = Path(__file__).resolve().parents[2]
SECTIONS: dict[type, str | None] = {Settings: None, MqttSettings: "mqtt", IotEdgeSettings: "iotedge"}
URL = "mqtt://broker.test:1884"
CONN = "HostName=h;DeviceId=d;SharedAccessKey=a2V5"
ALL_VARS = {var for cls in SECTIONS for r in table(cls) for var in r.env}

# a value for every setting: (text, expected value, other settings it needs as text); "{tmp}" is a folder of files
SAMPLES: dict[tuple[type, str], tuple[str, Any, dict[str, str]]] = {
    (Settings, "host"): ("127.0.0.2", "127.0.0.2", {}),
    (Settings, "port"): ("8081", 8081, {}),
    (Settings, "workers"): ("3", 3, {}),
    (Settings, "max_body_size"): ("2MiB", 2 * 2**20, {}),
    (Settings, "max_header_size"): ("32KiB", 32 * 2**10, {}),
    (Settings, "max_headers"): ("50", 50, {}),
    (Settings, "max_url_size"): ("4KiB", 4 * 2**10, {}),
    (Settings, "inline_max_body"): ("1MB", 1_000_000, {}),
    (Settings, "scoring_timeout"): ("2.5", 2.5, {}),
    (Settings, "max_concurrent_requests"): ("4", 4, {}),
    (Settings, "max_queue_wait_ms"): ("250", 250.0, {}),
    (Settings, "entry_script"): ("{tmp}/score.py", "{tmp}/score.py", {}),
    (Settings, "source_dir"): ("{tmp}", "{tmp}", {}),
    (Settings, "model_dir"): ("{tmp}", "{tmp}", {}),
    (Settings, "primary_key"): ("pk-1", "pk-1", {}),
    (Settings, "secondary_key"): ("sk-2", "sk-2", {"primary_key": "pk-1"}),
    (Settings, "token_auth"): ("true", True, {"token_secret": "a-secret-of-16-chars"}),
    (Settings, "token_secret"): ("a-secret-of-16-chars", "a-secret-of-16-chars", {}),
    (Settings, "cors_origins"): ("https://a.test", ("https://a.test",), {}),
    (Settings, "max_batch_size"): ("8", 8, {}),
    (Settings, "max_batch_wait_ms"): ("3.5", 3.5, {}),
    (Settings, "execution"): ("thread", "thread", {}),
    (Settings, "scoring_threads"): ("2", 2, {}),
    (Settings, "handoff_wait_ms"): ("1.5", 1.5, {}),
    (Settings, "onnx_threads"): ("0", 0, {}),
    (Settings, "fpga_device"): ("/dev/xdma0", "/dev/xdma0", {}),
    (Settings, "fpga_driver"): ("vendor.card:open_card", "vendor.card:open_card", {}),
    (Settings, "keepalive_timeout"): ("5", 5.0, {}),
    (Settings, "read_timeout"): ("7.5", 7.5, {}),
    (Settings, "log_level"): ("debug", "DEBUG", {}),
    (Settings, "access_log"): ("true", True, {}),
    (Settings, "mqtt"): (URL, URL, {}),
    (Settings, "iotedge"): ("true", True, {}),
    (MqttSettings, "url"): ("mqtts://other.test:8884", "mqtts://other.test:8884", {}),
    (MqttSettings, "service"): ("digits", "digits", {}),
    (MqttSettings, "client_id"): ("scorer-1", "scorer-1", {}),
    (MqttSettings, "request_topic"): ("in/{service}/#", "in/{service}/#", {}),
    (MqttSettings, "response_topic"): ("out/{id}", "out/{id}", {}),
    (MqttSettings, "error_topic"): ("err/{id}", "err/{id}", {}),
    (MqttSettings, "qos"): ("0", 0, {}),
    (MqttSettings, "protocol"): ("3.1.1", 311, {}),
    (MqttSettings, "username"): ("edge", "edge", {}),
    (MqttSettings, "password"): ("s3cret", "s3cret", {"username": "edge"}),
    (MqttSettings, "ca_file"): ("{tmp}/ca.pem", "{tmp}/ca.pem", {}),
    (MqttSettings, "cert_file"): ("{tmp}/c.pem", "{tmp}/c.pem", {"key_file": "{tmp}/k.pem"}),
    (MqttSettings, "key_file"): ("{tmp}/k.pem", "{tmp}/k.pem", {"cert_file": "{tmp}/c.pem"}),
    (MqttSettings, "session_expiry"): ("60", 60, {}),
    (MqttSettings, "keepalive"): ("10", 10, {}),
    (MqttSettings, "max_batch"): ("4", 4, {}),
    (MqttSettings, "max_wait_ms"): ("1.5", 1.5, {}),
    (MqttSettings, "max_inflight"): ("20", 20, {}),
    (MqttSettings, "state_dir"): ("{tmp}/state", "{tmp}/state", {}),
    (MqttSettings, "spool_dir"): ("{tmp}/spool", "{tmp}/spool", {}),
    (MqttSettings, "spool_max"): ("10", 10, {}),
    (MqttSettings, "spool_max_bytes"): ("1MB", 1_000_000, {}),
    (MqttSettings, "spool_fsync"): ("yes", True, {}),
    (MqttSettings, "dedupe_window"): ("50", 50, {}),
    (MqttSettings, "max_payload"): ("64KiB", 65536, {}),
    (MqttSettings, "reconnect_min"): ("0.1", 0.1, {}),
    (MqttSettings, "reconnect_max"): ("5", 5.0, {}),
    (IotEdgeSettings, "input_name"): ("frames", "frames", {}),
    (IotEdgeSettings, "output_name"): ("scores", "scores", {}),
    (IotEdgeSettings, "error_output"): ("oops", "oops", {}),
    (IotEdgeSettings, "max_message_bytes"): ("64KiB", 65536, {}),
    (IotEdgeSettings, "connection_string"): (CONN, CONN, {}),
    (IotEdgeSettings, "server_verification_cert"): ("{tmp}/ca.pem", "PEM", {"connection_string": CONN}),
    (IotEdgeSettings, "max_batch_size"): ("16", 16, {}),
    (IotEdgeSettings, "send_threads"): ("2", 2, {}),
    (IotEdgeSettings, "report_interval"): ("5", 5.0, {}),
    (IotEdgeSettings, "retry_interval"): ("0.5", 0.5, {}),
}  # fmt: skip
ROWS = [(cls, r) for cls in SECTIONS for r in table(cls)]
FLAGGED = [(cls, r) for cls, r in ROWS if r.flag]


def _id(case: tuple[type, Setting]) -> str:
    return f"{case[0].__name__}.{case[1].name}"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Files the samples name; no setting of the test process's environment leaks in."""
    for name in ("score.py", "ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("PEM")
    for var in ALL_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _row(cls: type, name: str) -> Setting:
    return next(r for r in table(cls) if r.name == name)


def _fill(value: Any, tmp: Path) -> Any:
    return value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value


def _sample(cls: type, r: Setting, tmp: Path) -> tuple[str, Any, dict[str, str]]:
    raw, expected, needs = SAMPLES[(cls, r.name)]
    return _fill(raw, tmp), _fill(expected, tmp), {k: _fill(v, tmp) for k, v in needs.items()}


def _value(settings: Settings, cls: type, name: str) -> Any:
    """The setting's value as the sample states it (a transport's switch: on or not)."""
    section = SECTIONS[cls]
    if section is None:
        value = getattr(settings, name)
        if name == "mqtt":
            return value.url if value is not None else None
        return value is not None if name == "iotedge" else value
    holder = getattr(settings, section)
    assert holder is not None, f"{section} is off"
    return getattr(holder, name)


def _switch_on_env(cls: type) -> dict[str, str]:
    return {MqttSettings: {"EDGEPACK_MQTT_URL": URL}, IotEdgeSettings: {"EDGEPACK_IOTEDGE": "true"}}.get(cls, {})


def _argv(cls: type, values: dict[str, str]) -> list[str]:
    argv = ["--mqtt", URL] if cls is MqttSettings else []
    for name, raw in values.items():
        r = _row(cls, name)
        assert r.flag is not None
        argv += [r.flag] if r.switch else [r.flag, raw]
    return argv


def test_every_setting_has_a_sample_and_one_declaration() -> None:
    assert set(SAMPLES) == {(cls, r.name) for cls, r in ROWS}
    names = [var for cls, r in ROWS for var in r.env if var != "EDGEPACK_MQTT_URL"]
    assert len(names) == len(set(names)), "a variable is declared twice"
    flags = [r.flag for _, r in FLAGGED]
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize("case", ROWS, ids=_id)
def test_every_setting_is_reachable_by_its_variables(case: tuple[type, Setting], files: Path) -> None:
    cls, r = case
    raw, expected, needs = _sample(cls, r, files)
    assert _value(Settings.from_env(_switch_on_env(cls)), cls, r.name) != expected  # the sample changes something
    for var in r.env:
        env = {**_switch_on_env(cls), **{_row(cls, k).env[0]: v for k, v in needs.items()}}
        env[var] = str(float(raw) * 1000) if var == "SCORING_TIMEOUT_MS" else raw
        assert _value(Settings.from_env(env), cls, r.name) == expected, var


@pytest.mark.parametrize("case", FLAGGED, ids=_id)
def test_every_flag_sets_its_setting_on_both_command_lines(
    case: tuple[type, Setting], files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from packager.cli import cli

    cls, r = case
    raw, expected, needs = _sample(cls, r, files)
    flagged_needs = {k: v for k, v in needs.items() if _row(cls, k).flag}
    env_needs = {_row(cls, k).env[0]: v for k, v in needs.items() if not _row(cls, k).flag}
    argv = _argv(cls, {**flagged_needs, r.name: raw})

    s = settings_from_args(build_parser().parse_args(argv), environ=env_needs)
    assert _value(s, cls, r.name) == expected, "python -m edge_module"

    served: list[Settings] = []
    monkeypatch.setattr("edge_module.server.main.run", lambda settings: served.append(settings) or 0)
    for var, value in env_needs.items():
        monkeypatch.setenv(var, value)
    serve_argv = argv if r.name in ("model_dir", "entry_script") else ["--model-dir", str(files), *argv]
    result = CliRunner().invoke(cli, ["serve", *serve_argv], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _value(served[0], cls, r.name) == expected, "edgepack serve"


def test_flags_win_over_the_variables(files: Path) -> None:
    env = {"EDGEPACK_PORT": "9000", "WORKER_COUNT": "3", "EDGEPACK_MQTT_URL": URL, "EDGEPACK_MQTT_SERVICE": "env"}
    args = build_parser().parse_args(["--port", "9001", "--mqtt-service", "flag"])
    s = settings_from_args(args, environ=env)
    assert (s.port, s.workers, s.mqtt.service if s.mqtt else None) == (9001, 3, "flag")


def _click_flags(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def test_both_command_lines_accept_the_same_flags() -> None:
    from packager.cli.serve import serve

    argparse_flags = {opt for a in build_parser()._actions for opt in a.option_strings} - {"-h", "--help"}
    assert _click_flags(serve) - {"--model", "-m"} == argparse_flags
    assert argparse_flags == {r.flag for _, r in FLAGGED}
    # the flags that existed before the table keep their names
    assert {
        "--model-dir",
        "--entry-script",
        "--source-dir",
        "--cors-origin",
        "--mqtt",
        "--mqtt-topic",
    } <= argparse_flags
    assert {
        "--mqtt-ca",
        "--mqtt-cert",
        "--mqtt-key",
        "--mqtt-protocol",
        "--mqtt-password",
        "--iotedge",
    } <= argparse_flags


def test_help_lists_every_variable() -> None:
    text = build_parser().format_help()
    assert all(var in text for var in ALL_VARS), sorted(v for v in ALL_VARS if v not in text)
    for _, r in ROWS:
        if r.secret:
            assert all(var in text for var in r.env)


def test_secrets_stay_out_of_repr() -> None:
    s = Settings.from_env(
        {
            "EDGEPACK_PRIMARY_KEY": "pk-secret",
            "EDGEPACK_MQTT_URL": URL,
            "EDGEPACK_MQTT_USERNAME": "u",
            "EDGEPACK_MQTT_PASSWORD": "mqtt-secret",
            "EDGEPACK_IOTEDGE": "1",
            "EDGEPACK_IOTEDGE_CONNECTION_STRING": "HostName=h;SharedAccessKey=hub-secret",
        }
    )
    assert not any(secret in repr(s) for secret in ("pk-secret", "mqtt-secret", "hub-secret"))


def test_importing_the_transport_settings_first_works() -> None:
    """No cycle: either settings module can be imported first in a fresh interpreter."""
    for first in ("edge_module.transports.settings", "edge_module.settings", "edge_module.settings_table"):
        code = f"import {first}; from edge_module.settings import Settings; print(Settings.from_env({{}}).port)"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "5001", proc.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_settings_modules_import_one_way() -> None:
    """settings_table ← transports.settings ← settings: the base imports nothing of edge_module and
    the transports' settings never import the server's."""
    base = _imports(ROOT / "edge_module" / "settings_table.py")
    assert not {n for n in base if n.startswith("edge_module")}
    transports = _imports(ROOT / "edge_module" / "transports" / "settings.py")
    assert {n for n in transports if n.startswith("edge_module")} == {"edge_module.settings_table"}
