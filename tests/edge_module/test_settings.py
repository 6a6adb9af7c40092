"""Settings: one typed object from flags and the environment, Azure ML names honoured."""

from __future__ import annotations

import pytest

from edge_module.server.main import build_parser, settings_from_args
from edge_module.settings import MB, Settings, SettingsError, parse_size


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.host, s.port, s.workers) == ("0.0.0.0", 5001, 1)
    assert s.max_body_size == 100 * MB
    assert s.scoring_timeout == 60.0
    assert s.auth_mode is None and s.cors_origins == () and not s.batching
    assert s.execution == "auto"


def test_azureml_names_are_honoured() -> None:
    s = Settings.from_env(
        {
            "AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/m/1",
            "AZUREML_ENTRY_SCRIPT": "score.py",
            "AML_APP_ROOT": "/var/azureml-app",
            "SCORING_TIMEOUT_MS": "2500",
            "WORKER_COUNT": "3",
            "AML_CORS_ORIGINS": "https://a.example.com, https://b.example.com/",
            "AZUREML_LOG_LEVEL": "debug",
        }
    )
    assert s.model_dir == "/var/azureml-app/azureml-models/m/1"
    assert s.entry_script == "score.py" and s.source_dir == "/var/azureml-app"
    assert s.scoring_timeout == 2.5 and s.workers == 3
    assert s.cors_origins == ("https://a.example.com", "https://b.example.com")
    assert s.log_level == "DEBUG"
    assert Settings.from_env({"AZUREML_SOURCE_DIRECTORY": "/src", "AML_APP_ROOT": "/app"}).source_dir == "/src"


def test_edgepack_names_win_over_azureml_and_flags_win_over_both() -> None:
    env = {"WORKER_COUNT": "3", "EDGEPACK_WORKERS": "2", "SCORING_TIMEOUT_MS": "1000", "EDGEPACK_SCORING_TIMEOUT": "7"}
    s = Settings.from_env(env)
    assert s.workers == 2 and s.scoring_timeout == 7
    s = Settings.from_env(env, workers=4, port=None)
    assert s.workers == 4 and s.port == 5001


def test_every_edgepack_variable() -> None:
    s = Settings.from_env(
        {
            "EDGEPACK_HOST": "127.0.0.1",
            "EDGEPACK_PORT": "8080",
            "EDGEPACK_MAX_BODY_SIZE": "2MiB",
            "EDGEPACK_PRIMARY_KEY": "pk",
            "EDGEPACK_SECONDARY_KEY": "sk",
            "EDGEPACK_CORS_ORIGINS": "*",
            "EDGEPACK_MAX_BATCH_SIZE": "32",
            "EDGEPACK_MAX_BATCH_WAIT_MS": "0.5",
            "EDGEPACK_EXECUTION": "Thread",
            "EDGEPACK_SCORING_THREADS": "2",
            "EDGEPACK_HANDOFF_WAIT_MS": "0",
            "EDGEPACK_ONNX_THREADS": "0",
            "EDGEPACK_KEEPALIVE_TIMEOUT": "5",
            "EDGEPACK_READ_TIMEOUT": "7.5",
            "EDGEPACK_ACCESS_LOG": "yes",
        }
    )
    assert (s.host, s.port, s.max_body_size) == ("127.0.0.1", 8080, 2 * 1024 * 1024)
    assert (s.primary_key, s.secondary_key, s.auth_mode) == ("pk", "sk", "key")
    assert s.cors_origins == ("*",)
    assert s.batching and s.max_batch_size == 32 and s.max_batch_wait_ms == 0.5
    assert (s.execution, s.scoring_threads, s.handoff_wait_ms, s.onnx_threads) == ("thread", 2, 0.0, 0)
    assert s.keepalive_timeout == 5 and s.read_timeout == 7.5 and s.access_log
    assert "pk" not in repr(s) and "sk" not in repr(s)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"EDGEPACK_PORT": "http"}, "EDGEPACK_PORT"),
        ({"EDGEPACK_PORT": "70000"}, "port"),
        ({"WORKER_COUNT": "0"}, "workers"),
        ({"EDGEPACK_MAX_BODY_SIZE": "lots"}, "EDGEPACK_MAX_BODY_SIZE"),
        ({"SCORING_TIMEOUT_MS": "0"}, "timeout"),
        ({"EDGEPACK_EXECUTION": "fast"}, "execution"),
        ({"EDGEPACK_TOKEN_AUTH": "maybe"}, "EDGEPACK_TOKEN_AUTH"),
        ({"EDGEPACK_TOKEN_AUTH": "1", "EDGEPACK_TOKEN_SECRET": "short"}, "16 characters"),
        ({"EDGEPACK_MAX_BATCH_SIZE": "0"}, "batch"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)


def test_sizes() -> None:
    assert parse_size("100MB") == 100_000_000
    assert parse_size("64KiB") == 65536
    assert parse_size("1048576") == 1048576
    assert parse_size("1.5k") == 1500
    with pytest.raises(SettingsError):
        parse_size("-1")


def test_python_m_edge_module_flags() -> None:
    args = build_parser().parse_args(
        ["--model-dir", "/m", "--port", "0", "--workers", "2", "--max-batch-size", "8", "--cors-origin", "https://x"]
    )
    s = settings_from_args(args, environ={"EDGEPACK_PORT": "9000", "EDGEPACK_MAX_BATCH_WAIT_MS": "3"})
    assert (s.model_dir, s.port, s.workers, s.max_batch_size, s.max_batch_wait_ms) == ("/m", 0, 2, 8, 3.0)
    assert s.cors_origins == ("https://x",)
