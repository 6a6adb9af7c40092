"""The scoring server's settings: one typed, frozen object built from CLI flags and the environment.

Precedence: explicit values (CLI flags) > ``EDGEPACK_*`` variables > the Azure ML names that v1
deployments set (``AZUREML_MODEL_DIR``, ``AZUREML_ENTRY_SCRIPT``, ``AZUREML_SOURCE_DIRECTORY`` /
``AML_APP_ROOT``, ``SCORING_TIMEOUT_MS``, ``WORKER_COUNT``, ``AML_CORS_ORIGINS``,
``AZUREML_LOG_LEVEL``) > defaults. ``MAX_CONCURRENT_REQUESTS_PER_CONTAINER`` and ``MAX_QUEUE_WAIT_MS``
are aliases named after v1's deployment settings (``maxConcurrentRequestsPerContainer``,
``maxQueueWaitMs``); the limit is per replica, every worker process together
(:mod:`edge_module.server.limits`).

Each field of :class:`Settings` below is the one declaration of its setting: default, variables
(in precedence order), flag, parser and help (see :mod:`edge_module.settings_table`). The
environment reader, ``python -m edge_module``'s flags and ``edgepack serve``'s options are built from
them; ``python -m edge_module --help`` prints them all, with the variables of every flag and the
settings that only come from the environment (keys and secrets, the transports' tuning).

``EDGEPACK_MQTT_URL`` (``--mqtt``) switches scoring over MQTT on and ``EDGEPACK_IOTEDGE=true``
(``--iotedge``) scoring on the IoT Edge hub; ``EDGEPACK_MQTT_*`` / ``EDGEPACK_IOTEDGE_*`` tune them
(:class:`~edge_module.transports.settings.MqttSettings`, ``IotEdgeSettings``). The transports run
beside HTTP in the same process (in worker 0 when there are several workers).

Key auth (primary/secondary keys) and token auth are mutually exclusive, as in Azure ML v1.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_module.settings_table import (
    MB,
    SettingsError,
    boolean,
    env_and_overrides,
    first_set,
    integer,
    lower,
    milliseconds,
    number,
    origins,
    parse_size,
    read_flags,
    setting,
    table,
    upper,
)
from edge_module.transports.settings import IotEdgeSettings, MqttSettings

_DRIVER_RE = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?")

__all__ = [
    "AUTH_FIELDS",
    "MB",
    "Settings",
    "SettingsError",
    "auth_mode",
    "check_auth",
    "parse_size",
    "same_setting",
    "settings_from_flags",
]


@dataclass(frozen=True)
class Settings:
    """Everything the scoring server reads, validated once."""

    host: str = setting("0.0.0.0", "EDGEPACK_HOST", flag="--host", metavar="ADDRESS", help="Address to listen on.")
    port: int = setting(5001, "EDGEPACK_PORT", parse=integer, flag="--port", help="Port (0 picks a free one).")
    workers: int = setting(
        1, "EDGEPACK_WORKERS", "WORKER_COUNT", parse=integer, flag="--workers", metavar="N", help="Worker processes."
    )
    max_body_size: int = setting(
        100 * MB,
        "EDGEPACK_MAX_BODY_SIZE",
        parse=parse_size,
        flag="--max-body-size",
        metavar="SIZE",
        shown="100MB",
        help="Largest request body: bytes, or a size such as 10MB, 64KiB.",
    )
    max_header_size: int = setting(
        64 * 1024,
        "EDGEPACK_MAX_HEADER_SIZE",
        parse=parse_size,
        flag="--max-header-size",
        metavar="SIZE",
        shown="64KiB",
        help="Largest request line and headers together (else 431).",
    )
    max_headers: int = setting(
        100, "EDGEPACK_MAX_HEADERS", parse=integer, flag="--max-headers", metavar="N", help="Most headers (else 431)."
    )
    max_url_size: int = setting(
        16 * 1024,
        "EDGEPACK_MAX_URL_SIZE",
        parse=parse_size,
        flag="--max-url-size",
        metavar="SIZE",
        shown="16KiB",
        help="Longest request URL (else 414).",
    )
    inline_max_body: int = setting(
        64 * 1024,
        "EDGEPACK_INLINE_MAX_BODY",
        parse=parse_size,
        flag="--inline-max-body",
        metavar="SIZE",
        shown="64KiB",
        help="Larger bodies are decoded and scored on a scoring thread, even for scorers that run inline.",
    )
    scoring_timeout: float = setting(
        60.0,
        "EDGEPACK_SCORING_TIMEOUT",
        "SCORING_TIMEOUT_MS",
        parse=number,
        env_parse={"SCORING_TIMEOUT_MS": milliseconds},
        flag="--scoring-timeout",
        metavar="S",
        help="Seconds before a scoring call is answered 504 (SCORING_TIMEOUT_MS: milliseconds).",
    )
    max_concurrent_requests: int = setting(
        0,
        "EDGEPACK_MAX_CONCURRENT_REQUESTS",
        "MAX_CONCURRENT_REQUESTS_PER_CONTAINER",
        parse=integer,
        flag="--max-concurrent-requests",
        metavar="N",
        shown="0: unlimited",
        help="Most scoring requests (/score, V2 infer) in progress in the whole server, all workers together "
        "(Azure ML v1's maxConcurrentRequestsPerContainer); the next ones wait, then get 503.",
    )
    max_queue_wait_ms: float = setting(
        500.0,
        "EDGEPACK_MAX_QUEUE_WAIT_MS",
        "MAX_QUEUE_WAIT_MS",
        parse=number,
        flag="--max-queue-wait-ms",
        metavar="MS",
        shown="500",
        help="With --max-concurrent-requests: how long a scoring request waits for a slot before it is "
        "answered 503 (v1's maxQueueWaitMs).",
    )
    entry_script: str | None = setting(
        None,
        "EDGEPACK_ENTRY_SCRIPT",
        "AZUREML_ENTRY_SCRIPT",
        flag="--entry-script",
        metavar="FILE",
        help="score.py with init()/run(), relative to --source-dir when given (as in Azure ML v1); without one, "
        "ONNX models are served as they are.",
    )
    source_dir: str | None = setting(
        None,
        "EDGEPACK_SOURCE_DIR",
        "AZUREML_SOURCE_DIRECTORY",
        "AML_APP_ROOT",
        flag="--source-dir",
        metavar="DIR",
        help="Folder the entry script and its helpers live in.",
    )
    model_dir: str | None = setting(
        None,
        "EDGEPACK_MODEL_DIR",
        "AZUREML_MODEL_DIR",
        flag="--model-dir",
        metavar="DIR",
        help="An AZUREML_MODEL_DIR folder, or ONNX files.",
    )
    primary_key: str | None = setting(
        None, "EDGEPACK_PRIMARY_KEY", secret=True, help="Key auth: clients send 'Authorization: Bearer <key>'."
    )
    secondary_key: str | None = setting(
        None, "EDGEPACK_SECONDARY_KEY", secret=True, help="A second key (needs the primary one)."
    )
    token_auth: bool = setting(
        False,
        "EDGEPACK_TOKEN_AUTH",
        parse=boolean,
        flag="--token-auth",
        switch=True,
        help="Require tokens (signed with EDGEPACK_TOKEN_SECRET; not with keys).",
    )
    token_secret: str | None = setting(
        None, "EDGEPACK_TOKEN_SECRET", secret=True, help="Token auth's signing secret (16 characters or more)."
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "EDGEPACK_CORS_ORIGINS",
        "AML_CORS_ORIGINS",
        parse=origins,
        flag="--cors-origin",
        metavar="ORIGIN",
        multiple=True,
        shown="none: CORS off",
        help="Allowed CORS origin (repeatable; the variables take a comma-separated list).",
    )
    max_batch_size: int = setting(
        1,
        "EDGEPACK_MAX_BATCH_SIZE",
        parse=integer,
        flag="--max-batch-size",
        metavar="N",
        help="Adaptive batching for V2 infer (1 = off).",
    )
    max_batch_wait_ms: float = setting(
        2.0,
        "EDGEPACK_MAX_BATCH_WAIT_MS",
        parse=number,
        flag="--max-batch-wait-ms",
        metavar="MS",
        help="Longest a request waits for a batch to fill.",
    )
    execution: str = setting(
        "auto",
        "EDGEPACK_EXECUTION",
        parse=lower,
        flag="--execution",
        metavar="auto|inline|thread",
        help="Where scoring runs.",
    )
    scoring_threads: int = setting(
        1,
        "EDGEPACK_SCORING_THREADS",
        parse=integer,
        flag="--scoring-threads",
        metavar="N",
        help="Scoring threads per worker.",
    )
    handoff_wait_ms: float = setting(
        5.0,
        "EDGEPACK_HANDOFF_WAIT_MS",
        parse=number,
        flag="--handoff-wait-ms",
        metavar="MS",
        help="With one scoring thread: how long a request waits for the busy scorer before a thread takes it.",
    )
    onnx_threads: int | None = setting(
        1,
        "EDGEPACK_ONNX_THREADS",
        parse=integer,
        flag="--onnx-threads",
        metavar="N",
        help="onnxruntime intra-op threads per worker (0: onnxruntime's default).",
    )
    fpga_device: str | None = setting(
        None,
        "EDGEPACK_FPGA_DEVICE",
        flag="--fpga-device",
        metavar="PATH",
        help="FPGA packages: the card's device (/dev/xdma0), passed to the vendor driver.",
    )
    fpga_driver: str | None = setting(
        None,
        "EDGEPACK_FPGA_DRIVER",
        flag="--fpga-driver",
        metavar="MODULE:FACTORY",
        shown="none: the bit-accurate emulator",
        help="FPGA packages: a vendor driver, factory(package_dir, device) -> object with run(x) for the "
        "accelerator part (see edge_module.scoring.fpga_runtime).",
    )
    keepalive_timeout: float = setting(
        75.0,
        "EDGEPACK_KEEPALIVE_TIMEOUT",
        parse=number,
        flag="--keepalive-timeout",
        metavar="S",
        help="Seconds an idle connection stays open.",
    )
    read_timeout: float = setting(
        30.0,
        "EDGEPACK_READ_TIMEOUT",
        parse=number,
        flag="--read-timeout",
        metavar="S",
        help="Seconds a request has to arrive whole after its first byte (else 408).",
    )
    log_level: str = setting(
        "INFO",
        "EDGEPACK_LOG_LEVEL",
        "AZUREML_LOG_LEVEL",
        parse=upper,
        flag="--log-level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING...",
    )
    access_log: bool = setting(
        False, "EDGEPACK_ACCESS_LOG", parse=boolean, flag="--access-log", switch=True, help="Log every request."
    )
    # scoring over MQTT beside HTTP: the URL switches it on, EDGEPACK_MQTT_* and --mqtt-* tune it
    mqtt: MqttSettings | None = setting(  # noqa: RUF009 - setting() is a dataclasses.field
        None,
        "EDGEPACK_MQTT_URL",
        flag="--mqtt",
        metavar="URL",
        help="Also score over MQTT: mqtt://HOST:PORT or mqtts://HOST:PORT.",
    )
    # scoring on the IoT Edge hub beside HTTP: EDGEPACK_IOTEDGE_* tune it
    iotedge: IotEdgeSettings | None = setting(  # noqa: RUF009 - setting() is a dataclasses.field
        None,
        "EDGEPACK_IOTEDGE",
        parse=boolean,
        flag="--iotedge",
        switch=True,
        help="Also score messages on the IoT Edge hub (module client from the edge environment).",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"invalid port {self.port}: use 1-65535 (0 picks a free port)")
        if self.workers < 1:
            raise SettingsError(f"invalid workers {self.workers}: use 1 or more")
        if self.max_body_size < 1:
            raise SettingsError(f"invalid max body size {self.max_body_size}: use a positive size")
        for name in ("max_header_size", "max_headers", "max_url_size"):
            if getattr(self, name) < 1:
                raise SettingsError(f"invalid {name.replace('_', ' ')} {getattr(self, name)}: use a positive number")
        if self.inline_max_body < 0:
            raise SettingsError(f"invalid inline max body {self.inline_max_body}: use 0 (always offload) or more")
        if not self.scoring_timeout > 0:
            raise SettingsError(f"invalid scoring timeout {self.scoring_timeout}: use a positive number of seconds")
        if self.max_concurrent_requests < 0:
            raise SettingsError(
                f"invalid max concurrent requests {self.max_concurrent_requests}: use 0 (unlimited) or more"
            )
        if not 0 <= self.max_queue_wait_ms < float("inf"):
            raise SettingsError(f"invalid max queue wait {self.max_queue_wait_ms}: use 0 or more milliseconds")
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
        if self.fpga_driver is not None and not _DRIVER_RE.fullmatch(self.fpga_driver):
            raise SettingsError(
                f"invalid FPGA driver {self.fpga_driver!r}: give a Python module and factory, pkg.module:factory"
            )
        if not self.read_timeout > 0:
            raise SettingsError(f"invalid read timeout {self.read_timeout}: use a positive number of seconds")
        check_auth(self)
        object.__setattr__(self, "cors_origins", origins(self.cors_origins))

    @property
    def auth_mode(self) -> str | None:
        """``"key"``, ``"token"`` or ``None``."""
        return auth_mode(self)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` that are not None win.

        Overrides are typed values or their text (parsed like the variables); ``mqtt`` takes a URL or
        :class:`MqttSettings`, ``iotedge`` a bool or :class:`IotEdgeSettings`."""
        env = os.environ if environ is None else environ
        values = env_and_overrides(cls, env, overrides)
        mqtt = values.get("mqtt")
        values["mqtt"] = MqttSettings.from_env(env, url=mqtt) if isinstance(mqtt, str) else mqtt
        iotedge = values.get("iotedge")
        if isinstance(iotedge, bool):
            values["iotedge"] = IotEdgeSettings.from_env(env) if iotedge else None
        return cls(**values)


#: The auth settings, declared once here; other processes that take the same keys (the endpoint router,
#: :mod:`edge_module.router.settings`) declare their fields with :func:`same_setting`.
AUTH_FIELDS = ("primary_key", "secondary_key", "token_auth", "token_secret")


def same_setting(name: str) -> Any:
    """A dataclass field declared like :class:`Settings`' ``name`` (same default, variables, flag and help)."""
    f = Settings.__dataclass_fields__[name]
    return dataclasses.field(default=f.default, repr=f.repr, metadata=f.metadata)


def auth_mode(settings: Any) -> str | None:
    """``"key"``, ``"token"`` or ``None`` for any settings object with the :data:`AUTH_FIELDS`."""
    if settings.primary_key:
        return "key"
    if settings.token_auth:
        return "token"
    return None


def check_auth(settings: Any) -> None:
    """Raise :class:`SettingsError` unless the :data:`AUTH_FIELDS` of ``settings`` make sense together."""
    if settings.secondary_key and not settings.primary_key:
        raise SettingsError("a secondary key needs a primary key (EDGEPACK_PRIMARY_KEY)")
    if settings.token_auth and settings.primary_key:
        raise SettingsError(
            "key auth and token auth are mutually exclusive: set either EDGEPACK_PRIMARY_KEY or EDGEPACK_TOKEN_AUTH"
        )
    if settings.token_auth and not settings.token_secret:
        raise SettingsError("token auth needs a signing secret: set EDGEPACK_TOKEN_SECRET")
    if settings.token_secret is not None and len(settings.token_secret) < 16:
        raise SettingsError("the token secret must be at least 16 characters")


def settings_from_flags(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from command-line flags over the environment (both ``python -m edge_module`` and ``edgepack serve``).

    ``flags`` maps each flag's :attr:`~edge_module.settings_table.Setting.dest` (``port``, ``mqtt_ca``...)
    to its text, True for a switch, a sequence for a repeatable flag, None when not given."""
    env = os.environ if environ is None else environ
    values = read_flags(Settings, flags)
    mqtt = read_flags(MqttSettings, flags)
    for r in table(MqttSettings):
        if r.name in ("ca_file", "cert_file", "key_file") and r.name in mqtt and not os.path.isfile(mqtt[r.name]):
            raise SettingsError(f"{r.flag} {mqtt[r.name]}: no such file")
    found = first_set(env, ("EDGEPACK_MQTT_URL",))
    url = values.get("mqtt") or (found[1] if found else None)
    if not url and any(name != "service" for name in mqtt):
        raise SettingsError("the --mqtt-* options need --mqtt mqtt[s]://HOST:PORT (or EDGEPACK_MQTT_URL)")
    if url and ("mqtt" in values or mqtt):
        values["mqtt"] = MqttSettings.from_env(env, **{**mqtt, "url": url})
    return Settings.from_env(env, **values)
