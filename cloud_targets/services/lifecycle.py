"""What services (:mod:`cloud_targets.webservice`) and endpoints (:mod:`cloud_targets.endpoints.endpoint`)
share in their lifecycle: keys and token secrets, the record's attributes, waiting for Healthy, the
inference config kept for rebuilds, and the image built and pushed for remote targets."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets as pysecrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cloud_targets.services.store import ServiceSecrets
from cloud_targets.targets.base import FAILED, HEALTHY
from packager.errors import EdgepackError, InvalidInputError
from packager.image.environment import Environment
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets")

MIN_KEY_LENGTH = 16


# -- secrets -------------------------------------------------------------------------------------------------
def new_secrets(
    mode: str, old: ServiceSecrets | None = None, primary_key: str | None = None, secondary_key: str | None = None
) -> ServiceSecrets:
    """Keys (given, kept from ``old``, or generated) for key auth; a signing secret for token auth; nothing
    otherwise."""
    old = old or ServiceSecrets()
    if mode == "key":
        return ServiceSecrets(
            primary_key=primary_key or old.primary_key or pysecrets.token_urlsafe(32),
            secondary_key=secondary_key or old.secondary_key or pysecrets.token_urlsafe(32),
        )
    if mode == "token":
        return ServiceSecrets(token_secret=old.token_secret or pysecrets.token_urlsafe(32))
    return ServiceSecrets()


def key_choice(key: str, set_key: str | None, error: type[EdgepackError]) -> str:
    """``regen_key``'s arguments checked: ``'primary'`` or ``'secondary'`` (``error`` when bad)."""
    which = str(key).strip().lower()
    if which not in ("primary", "secondary"):
        raise error(f"key must be 'Primary' or 'Secondary', not {key!r}")
    if set_key is not None and len(set_key) < MIN_KEY_LENGTH:
        raise error(f"set_key must be at least {MIN_KEY_LENGTH} characters")
    return which


class RecordHandle:
    """A handle on a stored service or endpoint record: its attributes, keys and tokens.

    Subclasses set ``name``, ``_record`` (with ``compute_type``, ``scoring_uri``, ``swagger_uri``, ``auth``,
    ``tags``, ``properties``, ``description``, ``error``) and ``_store`` (``read_secrets``/``write_secrets``)."""

    _kind: ClassVar[str] = "service"
    #: how to get a token secret back when none is stored
    _recreate_hint: ClassVar[str] = "deploy it again"

    name: str
    _record: Any
    _store: Any

    @property
    def compute_type(self) -> str:
        return self._record.compute_type

    @property
    def scoring_uri(self) -> str | None:
        return self._record.scoring_uri

    @property
    def swagger_uri(self) -> str | None:
        return self._record.swagger_uri

    @property
    def description(self) -> str | None:
        return self._record.description

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._record.tags)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._record.properties)

    @property
    def error(self) -> str | None:
        return self._record.error

    @property
    def auth_enabled(self) -> bool:
        return self._record.auth == "key"

    @property
    def token_auth_enabled(self) -> bool:
        return self._record.auth == "token"

    def _public(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``serialize()``: the record's name, state and URIs, then ``fields``, then its metadata (no secrets)."""
        r = self._record
        return {
            "name": r.name,
            "computeType": r.compute_type,
            "state": r.state,
            "error": r.error,
            "scoringUri": r.scoring_uri,
            "swaggerUri": r.swagger_uri,
            **fields,
            "tags": dict(r.tags),
            "properties": dict(r.properties),
            "description": r.description,
            "createdTime": r.created_time,
            "updatedTime": r.updated_time,
        }

    def _auth_error(self, auth: str, wanted: str) -> EdgepackError:
        from cloud_targets.webservice import WebserviceException

        return WebserviceException(f"{self._kind} {self.name} does not use {wanted} auth (auth mode {auth})")

    def get_keys(self) -> tuple[str, str]:
        """``(primary, secondary)``; only with key auth."""
        if self._record.auth != "key":
            raise self._auth_error(self._record.auth, "key")
        s = self._store.read_secrets(self.name)
        return s.primary_key or "", s.secondary_key or ""

    def get_token(self) -> tuple[str, dt.datetime]:
        """``(token, refresh_after)`` minted with the record's secret; only with token auth."""
        from cloud_targets.webservice import WebserviceException
        from edge_module.server.auth import mint_token

        if self._record.auth != "token":
            raise self._auth_error(self._record.auth, "token")
        secret = self._store.read_secrets(self.name).token_secret
        if not secret:
            raise WebserviceException(f"{self._kind} {self.name} has no token secret stored; {self._recreate_hint}")
        token = mint_token(secret, subject=self.name)
        return token.access_token, dt.datetime.fromtimestamp(token.refresh_after, dt.UTC)

    def credential(self) -> str | None:
        """What a client sends as ``Authorization: Bearer``: the primary key, a fresh token, or None."""
        if self._record.auth == "key":
            return self.get_keys()[0]
        if self._record.auth == "token":
            return self.get_token()[0]
        return None

    def _rotate_key(self, record: Any, which: str, set_key: str | None) -> ServiceSecrets:
        """Replace the ``which`` key (``set_key`` or a new random one) and store it (call under the lock)."""
        if record.auth != "key":
            raise self._auth_error(record.auth, "key")
        s = self._store.read_secrets(self.name)
        setattr(s, f"{which}_key", set_key or pysecrets.token_urlsafe(32))
        self._store.write_secrets(self.name, s)
        return s


# -- waiting -------------------------------------------------------------------------------------------------
def wait_healthy(
    name: str,
    poll: Callable[[], str],
    fail: Callable[[str], BaseException],
    deadline: float | None,
    show_output: bool,
    poll_s: float,
) -> None:
    """Poll ``poll()`` until Healthy (printing each new state when ``show_output``); raise ``fail(state)``
    when it is Failed or the monotonic ``deadline`` passes."""
    last = None
    while True:
        state = poll()
        if show_output and state != last:
            print(f"{name}: {state}", file=sys.stdout, flush=True)
            last = state
        if state == HEALTHY:
            return
        if state == FAILED or (deadline is not None and time.monotonic() > deadline):
            raise fail(state)
        time.sleep(poll_s)


# -- what a rebuild needs ------------------------------------------------------------------------------------
def app_of(config: InferenceConfig) -> dict[str, Any]:
    """What reload/update need to rebuild ``config``: absolute paths and the base image."""
    entry = config.entry_script_file
    app: dict[str, Any] = {
        "entry_script": str(entry) if entry else None,
        "source_directory": config.source_directory,
        "conda_file": config.conda_file,
        "base_image": config.base_image_ref(),
    }
    env = config.environment
    if env is not None:  # v1's Environment (packages, base image, variables): kept for update/reload
        app["environment"] = env.to_dict()
        if env.docker.base_image_registry.password:
            log.warning(
                "environment %s: the base image registry's password is not kept; pass the inference config "
                "again to update the service",
                env.name,
            )
    return app


def config_of(app: Mapping[str, Any]) -> InferenceConfig:
    """The inference config :func:`app_of` kept."""
    if app.get("environment"):  # the base image, conda packages and variables are the environment's
        return InferenceConfig(
            entry_script=app.get("entry_script"),
            source_directory=app.get("source_directory"),
            environment=Environment.from_dict(app["environment"], Path.cwd()),
        )
    return InferenceConfig(
        entry_script=app.get("entry_script"),
        source_directory=app.get("source_directory"),
        conda_file=app.get("conda_file"),
        base_image=app.get("base_image"),
    )


def resolve_models(workspace: Workspace, models: Sequence[Model | str] | Model | str) -> list[Model]:
    """Registered models (``Model`` objects or ``NAME[:VERSION]``), one or many."""
    from packager.image.builder import resolve_models as resolve

    if isinstance(models, Model | str):
        models = [models]
    return resolve(workspace, list(models))


# -- images for remote targets -------------------------------------------------------------------------------
def image_registry(deployment_target: Any) -> str:
    """Where remote targets pull from: ``deployment_target.image_registry`` or ``$EDGEPACK_IMAGE_REGISTRY``."""
    from cloud_targets.targets.compute import image_registry_of

    registry = image_registry_of(deployment_target)
    if not registry:
        raise InvalidInputError(
            "remote targets pull the image from a registry: pass deployment_target with image_registry, or set "
            "EDGEPACK_IMAGE_REGISTRY (e.g. myacr.azurecr.io/models)"
        )
    return registry


def push_image(
    workspace: Workspace, name: str, models: Sequence[Model], config: InferenceConfig, deployment_target: Any
) -> tuple[str, str]:
    """Remote targets pull from a registry: build for linux/amd64 and push to :func:`image_registry`;
    returns the reference pinned by digest and the digest."""
    from cloud_targets.targets.local.docker_mode import ENV_BASE
    from packager.image import builder
    from packager.image.spec import Platform

    registry = image_registry(deployment_target)
    tag = f"{int(time.time())}"
    base = None if config.base_image_ref() else os.environ.get(ENV_BASE)
    request = builder.BuildRequest(
        list(models), builder.Destination.registry(f"{registry.rstrip('/')}/{name}:{tag}"), config,
        [Platform("linux", "amd64")], base=base,
    )  # fmt: skip
    doc = builder.run(workspace, request)
    return f"{registry.rstrip('/')}/{name}@{doc['index_digest']}", doc["index_digest"]


__all__ = [
    "RecordHandle",
    "app_of",
    "config_of",
    "image_registry",
    "key_choice",
    "new_secrets",
    "push_image",
    "resolve_models",
    "wait_healthy",
]
