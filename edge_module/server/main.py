"""Starting the server from settings: the app factory, the terminal report, ``python -m edge_module``.

``python -m edge_module`` is what images run: every setting comes from the environment
(``AZUREML_*`` / ``EDGEPACK_*``, see :mod:`edge_module.settings`) and may be overridden by flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from edge_module.runtime import ScoringApp
from edge_module.settings import Settings, SettingsError


def app_factory(settings: Settings) -> Callable[[], ScoringApp]:
    """Builds the deployment's app in each worker: the entry script's, else ONNX auto-scoring."""

    def build() -> ScoringApp:
        from edge_module.scoring import build_app

        kwargs: dict[str, Any] = {}
        if settings.onnx_threads:  # 0: onnxruntime's default (one spinning thread per core)
            kwargs["intra_op_threads"] = settings.onnx_threads
            kwargs["inter_op_threads"] = 1
        return build_app(settings.entry_script, settings.source_dir, settings.model_dir, **kwargs)

    return build


def transport_overrides(
    *,
    mqtt: str | None = None,
    mqtt_topic: str | None = None,
    mqtt_service: str | None = None,
    mqtt_username: str | None = None,
    mqtt_password: str | None = None,
    mqtt_ca: str | None = None,
    mqtt_cert: str | None = None,
    mqtt_key: str | None = None,
    mqtt_protocol: str | None = None,
    iotedge: bool | None = None,
    environ: Any = None,
) -> dict[str, Any]:
    """``Settings`` overrides (``mqtt``, ``iotedge``) from the transport flags, over ``EDGEPACK_MQTT_*``
    and ``EDGEPACK_IOTEDGE_*``; empty when no flag asks for a transport."""
    from edge_module.transports.settings import IotEdgeSettings, MqttSettings, parse_protocol

    env = os.environ if environ is None else environ
    protocol = None if mqtt_protocol is None else parse_protocol(mqtt_protocol, "--mqtt-protocol")
    flags = {
        "request_topic": mqtt_topic,
        "service": mqtt_service,
        "username": mqtt_username,
        "password": mqtt_password,
        "ca_file": mqtt_ca,
        "cert_file": mqtt_cert,
        "key_file": mqtt_key,
        "protocol": protocol,
    }
    out: dict[str, Any] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        if flags[name] is not None and not os.path.isfile(flags[name]):
            raise SettingsError(f"--mqtt-{name.split('_')[0]} {flags[name]}: no such file")
    url = mqtt or env.get("EDGEPACK_MQTT_URL")
    if not url and any(v is not None for k, v in flags.items() if k != "service"):
        raise SettingsError("the --mqtt-* options need --mqtt mqtt[s]://HOST:PORT (or EDGEPACK_MQTT_URL)")
    if url and (mqtt or any(v is not None for v in flags.values())):
        out["mqtt"] = MqttSettings.from_env(env, url=url, **flags)
    if iotedge:
        out["iotedge"] = IotEdgeSettings.from_env(env)
    return out


def export_environment(settings: Settings) -> None:
    """Set the Azure ML variables entry scripts read (``Model.get_model_path`` needs ``AZUREML_MODEL_DIR``)."""
    if settings.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = os.path.abspath(settings.model_dir)
    if settings.entry_script:
        os.environ["AZUREML_ENTRY_SCRIPT"] = settings.entry_script
    if settings.source_dir:
        os.environ["AML_APP_ROOT"] = os.path.abspath(settings.source_dir)


class TerminalReporter:
    """Prints the server's life to a terminal: where it listens, when it is ready, why load() failed."""

    def __init__(self, settings: Settings, stream: TextIO | None = None, prefix: str = "edgepack"):
        self.settings = settings
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.ready: set[int] = set()
        self.failed: set[int] = set()
        self._tracebacks: set[str] = set()
        self._listening = False

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __call__(self, state: str, info: dict[str, Any]) -> None:
        worker = int(info.get("worker", 0))
        n = self.settings.workers
        who = f"worker {worker}" if n > 1 else "the server"
        where = f" in worker {worker}" if n > 1 else ""
        if state == "listening" and not self._listening:
            self._listening = True
            host = info.get("host", self.settings.host)
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            self._print(
                f"{self.prefix}: listening on http://{shown}:{info['port']} "
                f"({n} worker{'s' if n > 1 else ''}); loading..."
            )
            self.port = info["port"]
        elif state == "ready":
            self.ready.add(worker)
            models = info.get("models") or []
            v2 = f"; V2 models: {', '.join(models)}" if models else ""
            if n == 1 or len(self.ready) == n:
                self._print(f"{self.prefix}: ready in {info.get('seconds', 0):.2f} s{v2} (POST /score)")
            else:
                self._print(f"{self.prefix}: {who} ready in {info.get('seconds', 0):.2f} s")
        elif state == "failed":
            self.failed.add(worker)
            self._print(f"error: load() failed{where}: {info.get('error')}")
            tb = info.get("traceback") or ""
            if tb and tb not in self._tracebacks:
                self._tracebacks.add(tb)
                self._print(tb.rstrip())
            if len(self.failed) == 1:
                self._print(
                    f"{self.prefix}: the server stays up and answers 503 on /v2/health/ready and /score with this "
                    "error; fix it and restart (Ctrl-C to stop)"
                )
        elif state == "exited":
            self._print(
                f"warning: {who} exited with code {info.get('code')}; restarting in {info.get('restart_in', 0):.1f} s"
            )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_module",
        description="Serve a scoring app over HTTP (Azure ML /score and the V2 inference protocol). "
        "Every flag has an environment variable (see edge_module/settings.py); flags win.",
    )
    p.add_argument("--entry-script", help="score.py with init()/run() [AZUREML_ENTRY_SCRIPT]; none: ONNX auto-scoring")
    p.add_argument("--source-dir", help="folder the entry script lives in [AZUREML_SOURCE_DIRECTORY, AML_APP_ROOT]")
    p.add_argument("--model-dir", help="AZUREML_MODEL_DIR layout or ONNX files [AZUREML_MODEL_DIR]")
    p.add_argument("--host", help="address to listen on [EDGEPACK_HOST; 0.0.0.0]")
    p.add_argument("--port", type=int, help="port [EDGEPACK_PORT; 5001]")
    p.add_argument("--workers", type=int, help="worker processes [EDGEPACK_WORKERS, WORKER_COUNT; 1]")
    p.add_argument("--max-body-size", help="e.g. 100MB [EDGEPACK_MAX_BODY_SIZE]")
    p.add_argument("--scoring-timeout", type=float, help="seconds [EDGEPACK_SCORING_TIMEOUT, SCORING_TIMEOUT_MS]")
    p.add_argument("--cors-origin", action="append", help="allowed origin, repeatable [AML_CORS_ORIGINS]")
    p.add_argument("--max-batch-size", type=int, help="adaptive batching for V2 infer; 1 = off")
    p.add_argument("--max-batch-wait-ms", type=float, help="longest a request waits for a batch")
    p.add_argument("--execution", choices=("auto", "inline", "thread"), help="where scoring runs")
    p.add_argument("--scoring-threads", type=int, help="scoring threads per worker [1]")
    p.add_argument("--onnx-threads", type=int, help="onnxruntime intra-op threads per worker")
    p.add_argument("--token-auth", action="store_true", default=None, help="token auth [EDGEPACK_TOKEN_SECRET]")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING... [AZUREML_LOG_LEVEL]")
    p.add_argument("--mqtt", metavar="URL", help="also score over MQTT: mqtt[s]://HOST:PORT [EDGEPACK_MQTT_URL]")
    p.add_argument("--mqtt-topic", help="request topic filter [edgepack/<service>/score/request/#]")
    p.add_argument("--mqtt-service", help="<service> in the MQTT topics [EDGEPACK_MQTT_SERVICE, SERVICE_NAME]")
    p.add_argument("--mqtt-username", help="[EDGEPACK_MQTT_USERNAME]")
    p.add_argument("--mqtt-password", help="prefer EDGEPACK_MQTT_PASSWORD: flags show in ps")
    p.add_argument("--mqtt-ca", help="CA file for mqtts:// [EDGEPACK_MQTT_CA_FILE]")
    p.add_argument("--mqtt-cert", help="client certificate (PEM) [EDGEPACK_MQTT_CERT_FILE]")
    p.add_argument("--mqtt-key", help="its key (PEM) [EDGEPACK_MQTT_KEY_FILE]")
    p.add_argument("--mqtt-protocol", help="5 or 3.1.1 [EDGEPACK_MQTT_PROTOCOL; 5]")
    p.add_argument(
        "--iotedge", action="store_true", default=None, help="also score on the IoT Edge hub [EDGEPACK_IOTEDGE]"
    )
    return p


def settings_from_args(args: argparse.Namespace, environ: Any = None) -> Settings:
    overrides = {
        k: v
        for k, v in vars(args).items()
        if k
        in (
            "entry_script",
            "source_dir",
            "model_dir",
            "host",
            "port",
            "workers",
            "max_body_size",
            "scoring_timeout",
            "max_batch_size",
            "max_batch_wait_ms",
            "execution",
            "scoring_threads",
            "onnx_threads",
            "token_auth",
            "access_log",
            "log_level",
        )
    }
    if args.cors_origin:
        overrides["cors_origins"] = tuple(args.cors_origin)
    overrides.update(
        transport_overrides(
            environ=environ,
            **{k: v for k, v in vars(args).items() if k.startswith("mqtt") or k == "iotedge"},
        )
    )
    if overrides.get("log_level"):
        overrides["log_level"] = overrides["log_level"].upper()
    return Settings.from_env(environ, **overrides)


def main(argv: list[str] | None = None) -> int:
    from edge_module.server.lifecycle import configure_logging, serve

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    export_environment(settings)
    return serve(app_factory(settings), settings, on_state=TerminalReporter(settings))
