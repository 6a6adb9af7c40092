"""Starting the server from settings: :func:`run` (the app factory, the terminal report) and ``python -m edge_module``.

``python -m edge_module`` is what images run: every setting comes from the environment
(``AZUREML_*`` / ``EDGEPACK_*``, see :mod:`edge_module.settings`) and may be overridden by flags;
``edgepack serve`` takes the same flags and calls the same :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any, TextIO

from edge_module.runtime import ScoringApp
from edge_module.settings import Settings, SettingsError, settings_from_flags
from edge_module.settings_table import add_arguments, env_reference
from edge_module.transports.settings import IotEdgeSettings, MqttSettings


def app_factory(settings: Settings) -> Callable[[], ScoringApp]:
    """Builds the deployment's app in each worker: the entry script's, else ONNX auto-scoring."""

    def build() -> ScoringApp:
        from edge_module.scoring import build_app

        kwargs: dict[str, Any] = {}
        if settings.onnx_threads:  # 0: onnxruntime's default (one spinning thread per core)
            kwargs["intra_op_threads"] = settings.onnx_threads
            kwargs["inter_op_threads"] = 1
        if settings.fpga_device or settings.fpga_driver:
            kwargs.update(fpga_device=settings.fpga_device, fpga_driver=settings.fpga_driver)
        return build_app(settings.entry_script, settings.source_dir, settings.model_dir, **kwargs)

    return build


def export_environment(settings: Settings) -> None:
    """Set the Azure ML variables entry scripts read (``Model.get_model_path`` needs ``AZUREML_MODEL_DIR``)."""
    if settings.model_dir:
        os.environ["AZUREML_MODEL_DIR"] = os.path.abspath(settings.model_dir)
    if settings.entry_script:
        os.environ["AZUREML_ENTRY_SCRIPT"] = settings.entry_script
    if settings.source_dir:
        os.environ["AML_APP_ROOT"] = os.path.abspath(settings.source_dir)


def auth_summary(settings: Settings) -> tuple[str, str | None]:
    """Which auth protects the scoring routes (``"none"``, ``"key"`` or ``"token"``, with what clients
    send), and a warning when the settings look like auth was meant but is off. Never the secrets."""
    mode = settings.auth_mode
    if mode == "key":
        keys = "primary and secondary keys" if settings.secondary_key else "the primary key"
        line = f"auth: key (clients send 'Authorization: Bearer <key>', {keys})"
    elif mode == "token":
        line = "auth: token (clients send 'Authorization: Bearer <token>'; 'edgepack token' mints one)"
    else:
        line = "auth: none (anyone who reaches the port can score; EDGEPACK_PRIMARY_KEY or --token-auth turn auth on)"
    warning = None
    if settings.token_secret and mode is None:
        warning = (
            "EDGEPACK_TOKEN_SECRET is set but token auth is off, so the server runs WITHOUT auth: "
            "add --token-auth (EDGEPACK_TOKEN_AUTH=true) to require tokens, or unset the secret"
        )
    elif settings.token_secret and mode == "key":
        warning = "EDGEPACK_TOKEN_SECRET is ignored: key auth is on (keys and tokens are mutually exclusive)"
    return line, warning


class TerminalReporter:
    """Prints the server's life to a terminal: where it listens, which auth is on, when it is ready,
    why load() failed."""

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
            auth, warning = auth_summary(self.settings)
            self._print(f"{self.prefix}: {auth}")
            if warning:
                self._print(f"warning: {warning}")
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
    """The flags of ``python -m edge_module``: one per setting that has one (see :mod:`edge_module.settings`)."""
    p = argparse.ArgumentParser(
        prog="python -m edge_module",
        description=textwrap.fill(
            "Serve a scoring app over HTTP (Azure ML /score and the V2 inference protocol), and over MQTT and "
            "the IoT Edge hub when asked. Every flag has environment variables, in brackets with the default; "
            "flags win.",
            100,
        ),
        epilog="Settings from the environment only:\n\n"
        + env_reference(
            {"Server": Settings, "MQTT (with --mqtt or EDGEPACK_MQTT_URL)": MqttSettings, "IoT Edge": IotEdgeSettings}
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p.add_argument_group("server"), Settings)
    add_arguments(p.add_argument_group("MQTT (with --mqtt or EDGEPACK_MQTT_URL)"), MqttSettings)
    return p


def settings_from_args(args: argparse.Namespace, environ: Any = None) -> Settings:
    """Settings from parsed :func:`build_parser` arguments over ``environ`` (default ``os.environ``)."""
    return settings_from_flags(vars(args), environ)


def run(settings: Settings, on_state: Callable[[str, dict[str, Any]], None] | None = None) -> int:
    """Serve ``settings`` until SIGTERM/SIGINT, reporting to the terminal; returns the exit code."""
    from edge_module.server.lifecycle import configure_logging, serve

    configure_logging(settings.log_level)
    export_environment(settings)
    return serve(app_factory(settings), settings, on_state=on_state or TerminalReporter(settings))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(settings)
