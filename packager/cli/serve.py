"""``edgepack serve``, ``edgepack score`` and ``edgepack token``: run the scoring server, call it, mint tokens.

``serve`` takes the flags of ``python -m edge_module`` (generated from the settings' declarations in
:mod:`edge_module.settings`) plus ``--model``: it writes registered models into an
``AZUREML_MODEL_DIR`` layout (:func:`edge_module.model_dir.write_model_dir`) and serves them with
:func:`edge_module.server.main.run`. ``score`` wraps :mod:`edge_module.client`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_module.app_paths import AppPathError, resolve_app_paths
from edge_module.model_dir import write_model_dir
from edge_module.settings import Settings, SettingsError, settings_from_flags
from edge_module.settings_table import Setting, describe, find_row, first_set, table
from edge_module.transports.settings import MqttSettings
from packager.cli.model import open_workspace
from packager.cli.output import print_json
from packager.errors import EdgepackError, InvalidInputError, NotFoundError
from packager.registry import Model
from packager.registry.names import parse_ref

#: On the host, path flags name the user's files: click checks they exist (the entry script is found
#: by :func:`edge_module.app_paths.resolve_app_paths`, inside --source-dir as in Azure ML v1).
HOST_PATHS = {
    "source_dir": click.Path(exists=True, file_okay=False),
    "model_dir": click.Path(exists=True),
}


def resolve_models(ctx: click.Context, refs: tuple[str, ...], root: Path) -> str:
    """Download ``NAME[:VERSION]`` models into ``root/azureml-models``; return the AZUREML_MODEL_DIR to use."""
    ws = open_workspace(ctx)
    chosen: dict[tuple[str, int], Callable[[Path], Any]] = {}
    for ref in refs:
        name, version = parse_ref(ref)
        model = Model(ws, name, version=version)
        if (model.name, model.version) in chosen:
            raise InvalidInputError(f"model {model.name}:{model.version} is given twice")
        chosen[(model.name, model.version)] = lambda target, m=model: m.download(target, exist_ok=True)
    return str(write_model_dir(root, chosen))


def setting_option(row: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of a setting's flag: its text is parsed by :func:`settings_from_flags`, as in
    ``python -m edge_module``."""
    if row.switch:
        return click.option(row.flag, row.dest, is_flag=True, default=None, help=describe(row))
    return click.option(
        row.flag,
        row.dest,
        metavar=row.metavar or row.dest.upper(),
        multiple=row.multiple,
        type=HOST_PATHS.get(row.name, str),
        help=describe(row),
    )


def setting_options(*classes: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click options of every setting of ``classes`` that has a flag, in table order."""
    rows = [r for cls in classes for r in table(cls) if r.flag]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for r in reversed(rows):
            f = setting_option(r)(f)
        return f

    return decorate


@click.command()
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Registered model to serve (repeatable; latest version when none is given); instead of --model-dir.",
)
@setting_options(Settings, MqttSettings)
@click.pass_context
def serve(ctx: click.Context, models: tuple[str, ...], **flags: Any) -> None:
    """Serve models over HTTP: Azure ML's /score and the V2 inference protocol; with --mqtt and
    --iotedge, over MQTT and the IoT Edge hub too (same process, same loaded model).

    Every flag has environment variables (in brackets); keys and secrets come only from the
    environment (EDGEPACK_PRIMARY_KEY, EDGEPACK_SECONDARY_KEY, EDGEPACK_TOKEN_SECRET...; see
    'python -m edge_module --help' for every variable).
    """
    from edge_module.server.main import run

    if models and flags["model_dir"]:
        raise InvalidInputError("give either --model (registered models) or --model-dir, not both")
    if flags["entry_script"]:  # a wrong path fails before any model is downloaded
        _settings(flags)
    tmp: Path | None = None
    try:
        if models:
            tmp = Path(tempfile.mkdtemp(prefix="edgepack-serve-"))
            flags["model_dir"] = resolve_models(ctx, models, tmp)
        if models and not flags["mqtt_service"] and not _env_service():
            flags["mqtt_service"] = parse_ref(models[0])[0]
        settings = _settings(flags)
        if not settings.entry_script and not settings.model_dir:
            raise InvalidInputError(
                "nothing to serve: give --model NAME[:VERSION], --model-dir DIR or --entry-script score.py"
            )
        code = run(settings.replace(log_level="DEBUG") if ctx.obj.get("debug") else settings)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if code:
        ctx.exit(code)


def _settings(flags: dict[str, Any]) -> Settings:
    try:
        return app_settings(settings_from_flags(flags))
    except (SettingsError, AppPathError) as exc:
        raise InvalidInputError(str(exc)) from None


def app_settings(settings: Settings) -> Settings:
    """``settings`` with the entry script found as Azure ML v1 finds it (relative to --source-dir, which
    must hold it; else to the working folder) and both made absolute, so the server does not depend on
    the working folder. Raises :class:`~edge_module.app_paths.AppPathError` naming the places looked in."""
    if not settings.entry_script:
        return settings
    paths = resolve_app_paths(settings.entry_script, settings.source_dir)
    if paths.source_dir is None:
        return settings.replace(entry_script=str(paths.entry_script))
    return settings.replace(entry_script=paths.entry_script_rel, source_dir=str(paths.source_dir))


def _env_service() -> bool:
    """Whether the environment names the MQTT service (else ``serve`` names it after the first ``--model``)."""
    service = find_row(MqttSettings, "service")
    return service is not None and first_set(os.environ, service.env) is not None


def load_data(data: str) -> tuple[bytes, Any]:
    """``--data``: a file path or inline JSON; returns the bytes and the parsed JSON (None when not JSON)."""
    from edge_module.client import load_body

    try:
        return load_body(data)
    except ValueError as exc:
        raise InvalidInputError(f"--data is {exc}") from None


@click.command()
@click.argument("url")
@click.option("--data", "-d", required=True, metavar="FILE|JSON", help="Request body: a file, or inline JSON.")
@click.option(
    "--key", envvar="EDGEPACK_SCORE_KEY", help="Key or token, sent as 'Authorization: Bearer' [EDGEPACK_SCORE_KEY]."
)
@click.option("--v2", "v2_model", metavar="MODEL", help="Call V2 infer on MODEL instead of /score.")
@click.option(
    "--content-type", help="Content type to send [application/json, or application/octet-stream for non-JSON files]."
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the answer.")
def score(url: str, data: str, key: str | None, v2_model: str | None, content_type: str | None, timeout: float) -> None:
    """Send a scoring request to a running server and print the answer.

    URL is the server (http://HOST:PORT, /score is added) or a full endpoint URL.
    """
    from edge_module.client import HttpError, score_request

    raw, _ = load_data(data)
    try:
        resp = score_request(url, raw, v2_model=v2_model, key=key, content_type=content_type, timeout=timeout)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    except (HttpError, OSError) as exc:  # an error answer, unreachable, no answer in time
        raise EdgepackError(str(exc)) from None
    body = resp.content
    if "json" in resp.headers.get("content-type", ""):
        try:
            print_json(json.loads(body))
            return
        except ValueError:
            pass
    out = sys.stdout.buffer
    out.write(body)
    if body and not body.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


@click.command()
@click.option(
    "--ttl", type=click.FloatRange(min=1), default=3600.0, show_default=True, help="Seconds the token is valid."
)
@click.option("--refresh-after", type=float, help="Seconds after which clients should get a new one [3/4 of --ttl].")
@click.option("--json", "as_json", is_flag=True, help="Print accessToken, expiryOn and refreshAfter as JSON.")
def token(ttl: float, refresh_after: float | None, as_json: bool) -> None:
    """Mint a token for a server running with --token-auth (signed with EDGEPACK_TOKEN_SECRET)."""
    from edge_module.server.auth import mint_token

    secret = os.environ.get("EDGEPACK_TOKEN_SECRET")
    if not secret:
        raise NotFoundError("EDGEPACK_TOKEN_SECRET is not set: export the server's token secret first")
    try:
        minted = mint_token(secret, ttl=ttl, refresh_after=refresh_after)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if as_json:
        print_json(minted.to_dict())
    else:
        click.echo(minted.access_token)
