"""The scoring server's settings: one typed, frozen object built from CLI flags and the environment.

Precedence: explicit values (CLI flags) > ``EDGEPACK_*`` variables > the Azure ML names that v1
deployments set (``AZUREML_MODEL_DIR``, ``AZUREML_ENTRY_SCRIPT``, ``AZUREML_SOURCE_DIRECTORY`` /
``AML_APP_ROOT``, ``SCORING_TIMEOUT_MS``, ``WORKER_COUNT``, ``AML_CORS_ORIGINS``,
``AZUREML_LOG_LEVEL``) > defaults.

======================  ==========================================  =====================
setting                 environment                                 default
======================  ==========================================  =====================
host                    EDGEPACK_HOST                               0.0.0.0
port                    EDGEPACK_PORT                               5001
workers                 EDGEPACK_WORKERS, WORKER_COUNT              1
max_body_size           EDGEPACK_MAX_BODY_SIZE (bytes, or 10MB...)  100 MB
scoring_timeout         EDGEPACK_SCORING_TIMEOUT (s),               60 s
                        SCORING_TIMEOUT_MS (ms)
entry_script            EDGEPACK_ENTRY_SCRIPT, AZUREML_ENTRY_SCRIPT none (ONNX auto-scoring)
source_dir              EDGEPACK_SOURCE_DIR, AZUREML_SOURCE_DIRECTORY,
                        AML_APP_ROOT                                none
model_dir               EDGEPACK_MODEL_DIR, AZUREML_MODEL_DIR       none
primary_key             EDGEPACK_PRIMARY_KEY                        none (no key auth)
secondary_key           EDGEPACK_SECONDARY_KEY                      none
token_auth              EDGEPACK_TOKEN_AUTH (needs a secret)        off
token_secret            EDGEPACK_TOKEN_SECRET                       none
cors_origins            EDGEPACK_CORS_ORIGINS, AML_CORS_ORIGINS     none (CORS off)
max_batch_size          EDGEPACK_MAX_BATCH_SIZE                     1 (batching off)
max_batch_wait_ms       EDGEPACK_MAX_BATCH_WAIT_MS                  2 ms
execution               EDGEPACK_EXECUTION (auto|inline|thread)     auto
scoring_threads         EDGEPACK_SCORING_THREADS                    1
handoff_wait_ms         EDGEPACK_HANDOFF_WAIT_MS                    5 ms
onnx_threads            EDGEPACK_ONNX_THREADS                       1 (onnxruntime intra-op)
keepalive_timeout       EDGEPACK_KEEPALIVE_TIMEOUT (s)              75 s
read_timeout            EDGEPACK_READ_TIMEOUT (s): a request must   30 s
                        arrive whole this long after its first byte
log_level               EDGEPACK_LOG_LEVEL, AZUREML_LOG_LEVEL       INFO
access_log              EDGEPACK_ACCESS_LOG                         off
mqtt                    EDGEPACK_MQTT_URL switches scoring over     off
                        MQTT on; EDGEPACK_MQTT_* tune it
                        (:class:`~edge_module.transports.settings.MqttSettings`)
iotedge                 EDGEPACK_IOTEDGE=true switches scoring on   off
                        the IoT Edge hub on; EDGEPACK_IOTEDGE_*
                        tune it (``IotEdgeSettings``)
======================  ==========================================  =====================

The transports run beside HTTP in the same process (in worker 0 when there are several workers).

Key auth (primary/secondary keys) and token auth are mutually exclusive, as in Azure ML v1.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_module.transports.settings import IotEdgeSettings, MqttSettings

MB = 1_000_000


class SettingsError(ValueError):
    """A setting has an unusable value; the message names the flag or variable and what is accepted."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.I)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
}


def parse_size(value: str | int, what: str = "size") -> int:
    """``"100MB"``, ``"64KiB"``, ``"1048576"`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE_RE.match(str(value))
    unit = (m.group(2) or "").lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise SettingsError(f"invalid {what} {value!r}: use bytes or a size such as 100MB, 64KiB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _bool(value: str, what: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"invalid {what} {value!r}: use true or false")


def _number(value: str, what: str, kind: type = int) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        expected = "a whole number" if kind is int else "a number"
        raise SettingsError(f"invalid {what} {value!r}: expected {expected}") from None


def _origins(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(o.strip().rstrip("/") for o in items if o.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the scoring server reads, validated once."""

    host: str = "0.0.0.0"
    port: int = 5001
    workers: int = 1
    max_body_size: int = 100 * MB
    scoring_timeout: float = 60.0
    entry_script: str | None = None
    source_dir: str | None = None
    model_dir: str | None = None
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    token_auth: bool = False
    token_secret: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_batch_size: int = 1
    max_batch_wait_ms: float = 2.0
    execution: str = "auto"
    scoring_threads: int = 1
    handoff_wait_ms: float = 5.0
    onnx_threads: int | None = 1
    keepalive_timeout: float = 75.0
    read_timeout: float = 30.0
    log_level: str = "INFO"
    access_log: bool = False
    mqtt: MqttSettings | None = None  # scoring over MQTT beside HTTP
    iotedge: IotEdgeSettings | None = None  # scoring on the IoT Edge hub beside HTTP

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"invalid port {self.port}: use 1-65535 (0 picks a free port)")
        if self.workers < 1:
            raise SettingsError(f"invalid workers {self.workers}: use 1 or more")
        if self.max_body_size < 1:
            raise SettingsError(f"invalid max body size {self.max_body_size}: use a positive size")
        if not self.scoring_timeout > 0:
            raise SettingsError(f"invalid scoring timeout {self.scoring_timeout}: use a positive number of seconds")
        if self.max_batch_size < 1:
            raise SettingsError(f"invalid max batch size {self.max_batch_size}: use 1 (off) or more")
        if self.max_batch_wait_ms < 0:
            raise SettingsError(f"invalid max batch wait {self.max_batch_wait_ms}: use 0 or more milliseconds")
        if self.execution not in ("auto", "inline", "thread"):
            raise SettingsError(f"invalid execution {self.execution!r}: use auto, inline or thread")
        if self.scoring_threads < 1:
            raise SettingsError(f"invalid scoring threads {self.scoring_threads}: use 1 or more")
        if self.handoff_wait_ms < 0:
            raise SettingsError(f"invalid handoff wait {self.handoff_wait_ms}: use 0 or more milliseconds")
        if self.onnx_threads is not None and self.onnx_threads < 0:
            raise SettingsError(f"invalid onnx threads {self.onnx_threads}: use 0 (onnxruntime's default) or more")
        if not self.read_timeout > 0:
            raise SettingsError(f"invalid read timeout {self.read_timeout}: use a positive number of seconds")
        if self.secondary_key and not self.primary_key:
            raise SettingsError("a secondary key needs a primary key (EDGEPACK_PRIMARY_KEY)")
        if self.token_auth and self.primary_key:
            raise SettingsError(
                "key auth and token auth are mutually exclusive: set either EDGEPACK_PRIMARY_KEY or EDGEPACK_TOKEN_AUTH"
            )
        if self.token_auth and not self.token_secret:
            raise SettingsError("token auth needs a signing secret: set EDGEPACK_TOKEN_SECRET")
        if self.token_secret is not None and len(self.token_secret) < 16:
            raise SettingsError("the token secret must be at least 16 characters")
        object.__setattr__(self, "cors_origins", _origins(self.cors_origins))

    @property
    def auth_mode(self) -> str | None:
        """``"key"``, ``"token"`` or ``None``."""
        if self.primary_key:
            return "key"
        if self.token_auth:
            return "token"
        return None

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win."""
        env = os.environ if environ is None else environ

        def first(*names: str) -> tuple[str, str] | None:
            for name in names:
                value = env.get(name)
                if value is not None and value != "":
                    return name, value
            return None

        values: dict[str, Any] = {}

        def take(attr: str, names: tuple[str, ...], convert: Any = None) -> None:
            found = first(*names)
            if found is None:
                return
            name, raw = found
            values[attr] = convert(raw, name) if convert else raw

        take("host", ("EDGEPACK_HOST",))
        take("port", ("EDGEPACK_PORT",), lambda v, n: _number(v, n))
        take("workers", ("EDGEPACK_WORKERS", "WORKER_COUNT"), lambda v, n: _number(v, n))
        take("max_body_size", ("EDGEPACK_MAX_BODY_SIZE",), lambda v, n: parse_size(v, n))
        found = first("EDGEPACK_SCORING_TIMEOUT")
        if found:
            values["scoring_timeout"] = _number(found[1], found[0], float)
        else:
            found = first("SCORING_TIMEOUT_MS")
            if found:
                values["scoring_timeout"] = _number(found[1], found[0], float) / 1000
        take("entry_script", ("EDGEPACK_ENTRY_SCRIPT", "AZUREML_ENTRY_SCRIPT"))
        take("source_dir", ("EDGEPACK_SOURCE_DIR", "AZUREML_SOURCE_DIRECTORY", "AML_APP_ROOT"))
        take("model_dir", ("EDGEPACK_MODEL_DIR", "AZUREML_MODEL_DIR"))
        take("primary_key", ("EDGEPACK_PRIMARY_KEY",))
        take("secondary_key", ("EDGEPACK_SECONDARY_KEY",))
        take("token_auth", ("EDGEPACK_TOKEN_AUTH",), _bool)
        take("token_secret", ("EDGEPACK_TOKEN_SECRET",))
        take("cors_origins", ("EDGEPACK_CORS_ORIGINS", "AML_CORS_ORIGINS"), lambda v, n: _origins(v))
        take("max_batch_size", ("EDGEPACK_MAX_BATCH_SIZE",), lambda v, n: _number(v, n))
        take("max_batch_wait_ms", ("EDGEPACK_MAX_BATCH_WAIT_MS",), lambda v, n: _number(v, n, float))
        take("execution", ("EDGEPACK_EXECUTION",), lambda v, n: v.strip().lower())
        take("scoring_threads", ("EDGEPACK_SCORING_THREADS",), lambda v, n: _number(v, n))
        take("handoff_wait_ms", ("EDGEPACK_HANDOFF_WAIT_MS",), lambda v, n: _number(v, n, float))
        take("onnx_threads", ("EDGEPACK_ONNX_THREADS",), lambda v, n: _number(v, n))
        take("keepalive_timeout", ("EDGEPACK_KEEPALIVE_TIMEOUT",), lambda v, n: _number(v, n, float))
        take("read_timeout", ("EDGEPACK_READ_TIMEOUT",), lambda v, n: _number(v, n, float))
        take("log_level", ("EDGEPACK_LOG_LEVEL", "AZUREML_LOG_LEVEL"), lambda v, n: v.strip().upper())
        take("access_log", ("EDGEPACK_ACCESS_LOG",), _bool)
        if first("EDGEPACK_MQTT_URL"):
            from edge_module.transports.settings import MqttSettings

            values["mqtt"] = MqttSettings.from_env(env)
        found = first("EDGEPACK_IOTEDGE")
        if found and _bool(found[1], found[0]):
            from edge_module.transports.settings import IotEdgeSettings

            values["iotedge"] = IotEdgeSettings.from_env(env)

        for key, value in overrides.items():
            if key not in cls.__dataclass_fields__:
                raise TypeError(f"unknown setting {key!r}")
            if value is not None:
                values[key] = parse_size(value, "max body size") if key == "max_body_size" else value
        return cls(**values)
