"""``edgepack serve``, ``edgepack score`` and ``edgepack token``: run the scoring server, call it, mint tokens.

``serve`` resolves registered models from the workspace into an ``AZUREML_MODEL_DIR`` layout
(``<tmp>/azureml-models/<name>/<version>/``: one model → that folder, several → ``<tmp>/azureml-models``)
and serves them with :mod:`edge_module.server` (ONNX auto-scoring, or an entry script).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from packager.cli.model import open_workspace
from packager.cli.output import print_json
from packager.errors import EdgepackError, InvalidInputError, NotFoundError
from packager.registry import Model
from packager.registry.names import parse_ref


def resolve_models(ctx: click.Context, refs: tuple[str, ...], root: Path) -> str:
    """Download ``NAME[:VERSION]`` models into ``root/azureml-models``; return the AZUREML_MODEL_DIR to use."""
    ws = open_workspace(ctx)
    base = root / "azureml-models"
    chosen: list[Model] = []
    seen: set[tuple[str, int]] = set()
    for ref in refs:
        name, version = parse_ref(ref)
        model = Model(ws, name, version=version)
        if (model.name, model.version) in seen:
            raise InvalidInputError(f"model {model.name}:{model.version} is given twice")
        seen.add((model.name, model.version))
        chosen.append(model)
    for model in chosen:
        model.download(base / model.name / str(model.version), exist_ok=True)
    if len(chosen) == 1:
        return str(base / chosen[0].name / str(chosen[0].version))
    return str(base)


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Registered model to serve (repeatable; latest version when none is given).",
)
@click.option(
    "--entry-script",
    type=click.Path(exists=True, dir_okay=False),
    help="score.py with init()/run() [AZUREML_ENTRY_SCRIPT]; without one, ONNX models are served as they are.",
)
@click.option(
    "--source-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Folder the entry script and its helpers live in [AZUREML_SOURCE_DIRECTORY, AML_APP_ROOT].",
)
@click.option(
    "--model-dir",
    type=click.Path(exists=True),
    help="An AZUREML_MODEL_DIR folder (or ONNX files) instead of --model [AZUREML_MODEL_DIR].",
)
@click.option("--host", help="Address to listen on [EDGEPACK_HOST; default 0.0.0.0].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [EDGEPACK_PORT; default 5001; 0 picks a free one].")
@click.option("--workers", type=click.IntRange(1), help="Worker processes [EDGEPACK_WORKERS, WORKER_COUNT; default 1].")
@click.option("--max-body-size", metavar="SIZE", help="Largest request body, e.g. 100MB [EDGEPACK_MAX_BODY_SIZE].")
@click.option("--scoring-timeout", type=float, metavar="S", help="Seconds before a scoring call is answered 504 [60].")
@click.option(
    "--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN", help="Allowed CORS origin (repeatable)."
)
@click.option("--max-batch-size", type=click.IntRange(1), help="Adaptive batching for V2 infer (1 = off).")
@click.option("--max-batch-wait-ms", type=float, help="Longest a request waits for a batch to fill [2].")
@click.option("--token-auth", is_flag=True, default=None, help="Require tokens (secret in EDGEPACK_TOKEN_SECRET).")
@click.option("--access-log", is_flag=True, default=None, help="Log every request.")
@click.option(
    "--mqtt", metavar="URL", help="Also score over MQTT: mqtt://HOST:PORT or mqtts://HOST:PORT [EDGEPACK_MQTT_URL]."
)
@click.option("--mqtt-topic", metavar="FILTER", help="Request topic filter [edgepack/<service>/score/request/#].")
@click.option(
    "--mqtt-service",
    metavar="NAME",
    help="<service> in the MQTT topics [EDGEPACK_MQTT_SERVICE, SERVICE_NAME; else the first --model's name].",
)
@click.option("--mqtt-username", metavar="USER", help="MQTT user name [EDGEPACK_MQTT_USERNAME].")
@click.option(
    "--mqtt-password",
    metavar="PASSWORD",
    envvar="EDGEPACK_MQTT_PASSWORD",
    help="MQTT password [EDGEPACK_MQTT_PASSWORD; prefer it: flags show in ps].",
)
@click.option("--mqtt-ca", metavar="FILE", help="CA certificates for mqtts:// [EDGEPACK_MQTT_CA_FILE].")
@click.option("--mqtt-cert", metavar="FILE", help="Client certificate, PEM [EDGEPACK_MQTT_CERT_FILE].")
@click.option("--mqtt-key", metavar="FILE", help="The client certificate's key, PEM [EDGEPACK_MQTT_KEY_FILE].")
@click.option(
    "--mqtt-protocol", type=click.Choice(["5", "3.1.1"]), help="MQTT protocol version [EDGEPACK_MQTT_PROTOCOL; 5]."
)
@click.option(
    "--iotedge",
    is_flag=True,
    default=None,
    help="Also score messages on the IoT Edge hub (module client from the edge environment) [EDGEPACK_IOTEDGE].",
)
@click.pass_context
def serve(
    ctx: click.Context,
    models: tuple[str, ...],
    entry_script: str | None,
    source_dir: str | None,
    model_dir: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    max_body_size: str | None,
    scoring_timeout: float | None,
    cors_origins: tuple[str, ...],
    max_batch_size: int | None,
    max_batch_wait_ms: float | None,
    token_auth: bool | None,
    access_log: bool | None,
    iotedge: bool | None,
    **mqtt_flags: str | None,
) -> None:
    """Serve models over HTTP: Azure ML's /score and the V2 inference protocol; with --mqtt and
    --iotedge, over MQTT and the IoT Edge hub too (same process, same loaded model).

    Keys for key auth come from EDGEPACK_PRIMARY_KEY / EDGEPACK_SECONDARY_KEY (never the command
    line); every other setting also has an environment variable (see edge_module/settings.py and
    edge_module/transports/settings.py).
    """
    from edge_module.server.lifecycle import configure_logging
    from edge_module.server.lifecycle import serve as run_server
    from edge_module.server.main import TerminalReporter, app_factory, export_environment, transport_overrides
    from edge_module.settings import Settings, SettingsError

    if models and model_dir:
        raise InvalidInputError("give either --model (registered models) or --model-dir, not both")
    tmp: Path | None = None
    try:
        if models:
            tmp = Path(tempfile.mkdtemp(prefix="edgepack-serve-"))
            model_dir = resolve_models(ctx, models, tmp)
        if models and not mqtt_flags.get("mqtt_service") and not _env_service():
            mqtt_flags["mqtt_service"] = parse_ref(models[0])[0]
        try:
            transports = transport_overrides(iotedge=iotedge, **mqtt_flags)
            settings = Settings.from_env(
                entry_script=os.path.abspath(entry_script) if entry_script else None,
                source_dir=source_dir,
                model_dir=model_dir,
                host=host,
                port=port,
                workers=workers,
                max_body_size=max_body_size,
                scoring_timeout=scoring_timeout,
                cors_origins=cors_origins or None,
                max_batch_size=max_batch_size,
                max_batch_wait_ms=max_batch_wait_ms,
                token_auth=token_auth,
                access_log=access_log,
                **transports,
            )
        except SettingsError as exc:
            raise InvalidInputError(str(exc)) from None
        if not settings.entry_script and not settings.model_dir:
            raise InvalidInputError(
                "nothing to serve: give --model NAME[:VERSION], --model-dir DIR or --entry-script score.py"
            )
        configure_logging("DEBUG" if ctx.obj.get("debug") else settings.log_level)
        export_environment(settings)
        code = run_server(app_factory(settings), settings, on_state=TerminalReporter(settings))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if code:
        ctx.exit(code)


def _env_service() -> bool:
    return any(os.environ.get(name) for name in ("EDGEPACK_MQTT_SERVICE", "SERVICE_NAME"))


# -- the client ----------------------------------------------------------------------------------------
def load_data(data: str) -> tuple[bytes, Any]:
    """``--data``: a file path or inline JSON; returns the bytes and the parsed JSON (None when not JSON)."""
    path = Path(data)
    try:
        is_file = path.is_file()
    except OSError:  # a long inline JSON is not a valid path
        is_file = False
    raw = path.read_bytes() if is_file else data.encode("utf-8")
    try:
        return raw, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if not is_file:
            raise InvalidInputError(f"--data is neither a file nor valid JSON: {data[:80]!r}") from None
        return raw, None


def _endpoint(url: str, v2_model: str | None) -> str:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(f"invalid URL {url!r}: expected http://HOST:PORT[/score]")
    path = parts.path.rstrip("/")
    if v2_model:
        if not path.endswith("/infer"):
            path = f"{path}/v2/models/{urllib.parse.quote(v2_model)}/infer"
    elif not path:
        path = "/score"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _request(
    url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        detail = payload.decode("utf-8", "replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            doc = json.loads(payload)
            detail = doc.get("message") or doc.get("error") or detail
        raise EdgepackError(f"HTTP {exc.code} {exc.reason} from {url}: {detail}") from None
    except urllib.error.URLError as exc:
        raise EdgepackError(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise EdgepackError(f"no answer from {url} within {timeout:g} s") from None


def _v2_body(base_url: str, model: str, doc: Any, headers: dict[str, str], timeout: float) -> Any:
    """Wrap plain data (``{"data": ...}`` or a nested list) into a V2 request for the model's first input."""
    if isinstance(doc, dict) and "inputs" in doc:
        return doc
    data = doc.get("data") if isinstance(doc, dict) else doc
    if data is None:
        raise InvalidInputError('--data for --v2 must be a V2 request ({"inputs": [...]}), {"data": ...} or an array')
    meta_url = base_url.rsplit("/infer", 1)[0]
    _, _, raw = _request(meta_url, None, headers, timeout)
    meta = json.loads(raw)
    if len(meta.get("inputs", [])) != 1:
        raise InvalidInputError(f"model {model!r} has several inputs: send a full V2 request with --data")
    spec = meta["inputs"][0]
    import numpy as np

    arr = np.asarray(data)
    return {
        "inputs": [
            {"name": spec["name"], "shape": list(arr.shape), "datatype": spec["datatype"], "data": arr.ravel().tolist()}
        ]
    }


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
    endpoint = _endpoint(url, v2_model)
    raw, doc = load_data(data)
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if v2_model:
        if doc is None:
            raise InvalidInputError("--v2 needs JSON data")
        raw = json.dumps(_v2_body(endpoint, v2_model, doc, headers, timeout)).encode()
    headers["Content-Type"] = content_type or (
        "application/json" if doc is not None or v2_model else "application/octet-stream"
    )
    _, resp_headers, body = _request(endpoint, raw, headers, timeout)
    if "json" in resp_headers.get("content-type", ""):
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
