"""Registry credentials and the distribution auth handshake (anonymous, Basic, Bearer token).

Credentials come from an explicit username/password, else the docker CLI's config
(``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``): ``credHelpers``, ``credsStore``
(``docker-credential-<name> get``) and ``auths`` (base64 ``auth``, ``username``/``password``,
``identitytoken``, ``registrytoken``). They are looked up only when a registry asks for them.

The handshake is the one docker and crane use: a request answered ``401`` carries
``WWW-Authenticate``; for ``Basic`` the request is resent with the credentials; for ``Bearer`` a
token is fetched from the ``realm`` (GET with Basic credentials, or anonymously; POST with a
refresh token for identity tokens), cached for its scopes until it expires, and reused for every
later request whose scopes it covers. Credentials go to a token realm over HTTPS only (plain HTTP
only when the realm is loopback or in ``$EDGEPACK_INSECURE_REGISTRIES``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from packager.errors import EdgepackError, InvalidInputError
from packager.image.reference import DOCKER_HUB, is_insecure, normalize_registry

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
TOKEN_TTL_DEFAULT = 60  # seconds, the token spec's default for a missing expires_in
TOKEN_MARGIN = 10  # renew this many seconds before a token expires

_CHALLENGE_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True)
class Credentials:
    """What to log in with. ``identity_token`` is an OAuth refresh token; ``registry_token`` a bearer token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    source: str = ""

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def describe(self) -> str:
        who = f"user {self.username!r}" if self.username and self.username != "<token>" else "a token"
        return f"{who} (from {self.source})" if self.source else who

    @classmethod
    def coerce(cls, value: Credentials | Mapping[str, Any] | tuple[str, str] | None) -> Credentials | None:
        """Accept ``Credentials``, ``(username, password)`` or ``{"username":..., "password":...}``."""
        if value is None or isinstance(value, Credentials):
            return value if value is None or not value.anonymous else None
        if isinstance(value, Mapping):
            user, password = str(value.get("username") or ""), str(value.get("password") or "")
        elif isinstance(value, tuple | list) and len(value) == 2:
            user, password = str(value[0] or ""), str(value[1] or "")
        else:
            raise InvalidInputError("registry credentials must be (username, password)")
        if not user and not password:
            return None
        if not user or not password:
            raise InvalidInputError("give both a registry username and a password (or neither, to use docker login's)")
        return cls(user, password, source="--username/--password")


# ----------------------------------------------------------------------------------------- docker config
def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def _config_host(key: str) -> str:
    """The registry a config.json key names: ``https://index.docker.io/v1/`` -> ``registry-1.docker.io``."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc
    return normalize_registry(key.split("/", 1)[0])


def load_docker_config(path: Path | None = None) -> dict[str, Any]:
    """The docker CLI config as a dict (empty when there is none)."""
    path = path or docker_config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EdgepackError(f"cannot read docker config {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"docker config {path} is not valid JSON ({exc.msg} at line {exc.lineno}): fix it or remove it"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"docker config {path} is not a JSON object: fix it or remove it")
    return doc


def _server_url(registry: str) -> str:
    return DOCKER_HUB_SERVER if registry == DOCKER_HUB else registry


def run_credential_helper(helper: str, server: str, source: str = "") -> Credentials | None:
    """``docker-credential-<helper> get`` for ``server``; ``None`` when it has nothing stored."""
    exe = f"docker-credential-{helper}"
    path = shutil.which(exe)
    if not path:
        raise EdgepackError(
            f"the docker credential helper {exe} ({source or 'docker config'}) is not installed: "
            f"install it, or remove it from {docker_config_path()} and run `docker login {server}`"
        )
    try:
        proc = subprocess.run([path, "get"], input=server, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise EdgepackError(f"the docker credential helper {exe} did not answer within 60 s") from None
    out = (proc.stdout or "").strip()
    if proc.returncode != 0:
        text = out or (proc.stderr or "").strip()
        if "not found" in text.lower():
            return None
        raise EdgepackError(f"the docker credential helper {exe} failed for {server}: {text or proc.returncode}")
    try:
        doc = json.loads(out)
    except json.JSONDecodeError:
        raise EdgepackError(f"the docker credential helper {exe} printed something that is not JSON") from None
    user, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    where = f"{exe}{f' via {source}' if source else ''}"
    if user == "<token>":
        return Credentials(identity_token=secret, source=where) if secret else None
    return Credentials(user, secret, source=where) if (user or secret) else None


def _from_auth_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=False).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidInputError(f"the 'auth' value in {source} is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidInputError(f"the 'auth' value in {source} is not base64 of user:password")
    creds = Credentials(
        username=user,
        password=password,
        identity_token=str(entry.get("identitytoken") or ""),
        registry_token=str(entry.get("registrytoken") or ""),
        source=source,
    )
    return None if creds.anonymous else creds


def credentials_from_docker_config(registry: str, path: Path | None = None) -> Credentials | None:
    """The credentials ``docker login`` stored for ``registry`` (credHelpers, credsStore, then auths)."""
    path = path or docker_config_path()
    config = load_docker_config(path)
    registry = normalize_registry(registry)
    helpers = config.get("credHelpers") or {}
    for key, helper in helpers.items() if isinstance(helpers, dict) else ():
        if _config_host(key) == registry and helper:
            return run_credential_helper(str(helper), key if registry != DOCKER_HUB else DOCKER_HUB_SERVER, str(path))
    if config.get("credsStore"):
        found = run_credential_helper(str(config["credsStore"]), _server_url(registry), f"credsStore in {path}")
        if found:
            return found
    auths = config.get("auths") or {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        if _config_host(key) == registry and isinstance(entry, dict):
            found = _from_auth_entry(entry, str(path))
            if found:
                return found
    return None


# ----------------------------------------------------------------------------------------- challenges
def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., "service": ...})``."""
    header = (header or "").strip()
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _scope_map(scopes: Iterable[str]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        out.setdefault((kind, name), set()).update(a for a in actions.split(",") if a)
    return out


def covers(granted: Iterable[str], wanted: Iterable[str]) -> bool:
    """True when a token asked for ``granted`` scopes also serves a request needing ``wanted``."""
    have = _scope_map(granted)
    return all(actions <= have.get(key, set()) for key, actions in _scope_map(wanted).items())


@dataclass
class _Token:
    value: str
    scopes: tuple[str, ...]
    expires_at: float


class RegistryAuth:
    """Auth state for one registry: credentials (looked up lazily), the last challenge, bearer tokens."""

    def __init__(
        self,
        registry: str,
        session: requests.Session,
        credentials: Credentials | None = None,
        timeout: float | tuple[float, float] = (10, 60),
        docker_config: Path | None = None,
    ) -> None:
        self.registry = registry
        self.session = session
        self.timeout = timeout
        self.docker_config = docker_config
        self._credentials = credentials
        self._looked_up = credentials is not None
        self._scheme = ""  # "basic" or "bearer" once the registry has said so
        self._params: dict[str, str] = {}
        self._tokens: list[_Token] = []
        self._lock = threading.Lock()
        self.token_requests = 0  # how many tokens were fetched (tests check reuse)

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._looked_up:
                self._credentials = credentials_from_docker_config(self.registry, self.docker_config)
                self._looked_up = True
            return self._credentials

    def headers(self, scopes: Iterable[str]) -> dict[str, str]:
        """The Authorization header to send up front for ``scopes`` (none until a challenge was seen)."""
        scopes = tuple(scopes)
        if self._scheme == "basic":
            creds = self.credentials
            return {"Authorization": creds.basic_header()} if creds and creds.username else {}
        if self._scheme == "bearer":
            creds = self.credentials
            if creds and creds.registry_token:
                return {"Authorization": f"Bearer {creds.registry_token}"}
            token = self._cached(scopes)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _cached(self, scopes: tuple[str, ...]) -> str | None:
        now = time.monotonic()
        with self._lock:
            self._tokens = [t for t in self._tokens if t.expires_at > now]
            for token in self._tokens:
                if covers(token.scopes, scopes):
                    return token.value
        return None

    def challenged(self, response: requests.Response, scopes: Iterable[str], what: str) -> None:
        """Handle a 401: learn the scheme and get what the retry needs; raise if nothing can help."""
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        scopes = tuple(scopes)
        if scheme not in ("basic", "bearer"):
            raise EdgepackError(
                f"registry {self.registry} answered 401 for {what} with an auth scheme edgepack does not speak "
                f"({response.headers.get('WWW-Authenticate') or 'no WWW-Authenticate header'})"
            )
        self._scheme, self._params = scheme, params
        creds = self.credentials
        if scheme == "basic":
            if not creds or not creds.username:
                raise self.refused(what, scopes)
            return
        if creds and creds.registry_token:
            return
        extra = tuple(s for s in params.get("scope", "").split() if s)
        self.fetch_token(tuple(dict.fromkeys(scopes + extra)), key=scopes, what=what)

    def fetch_token(self, scopes: tuple[str, ...], key: tuple[str, ...] | None = None, what: str = "") -> str:
        """Get a bearer token for ``scopes`` from the challenge's realm and cache it under ``key``."""
        realm = self._params.get("realm")
        if not realm:
            raise EdgepackError(f"registry {self.registry} asked for a bearer token but named no realm to get it from")
        creds = self.credentials
        if creds and (creds.identity_token or creds.username):
            self._check_realm_transport(realm)
        query: list[tuple[str, str]] = []
        if self._params.get("service"):
            query.append(("service", self._params["service"]))
        query += [("scope", s) for s in scopes]
        try:
            if creds and creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "edgepack",
                    "service": self._params.get("service", ""),
                    "scope": " ".join(scopes),
                }
                resp = self.session.post(realm, data=form, timeout=self.timeout)
            else:
                headers = {"Authorization": creds.basic_header()} if creds and creds.username else {}
                if creds and creds.username:
                    query.append(("account", creds.username))
                resp = self.session.get(realm, params=query, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            host = urlsplit(realm).netloc
            raise EdgepackError(
                f"cannot reach the token service {host} of registry {self.registry} ({type(exc).__name__}): "
                "check the network and the registry's auth settings"
            ) from None
        self.token_requests += 1
        if resp.status_code in (401, 403):
            raise self.refused(what or " ".join(scopes), scopes)
        if resp.status_code != 200:
            raise EdgepackError(
                f"the token service of registry {self.registry} answered {resp.status_code} for {' '.join(scopes)}: "
                f"{resp.text[:200].strip()}"
            )
        try:
            doc = resp.json()
        except ValueError:
            raise EdgepackError(f"the token service of registry {self.registry} did not answer JSON") from None
        value = doc.get("token") or doc.get("access_token")
        if not value:
            raise EdgepackError(f"the token service of registry {self.registry} answered without a token")
        ttl = doc.get("expires_in") or TOKEN_TTL_DEFAULT
        expires = time.monotonic() + max(float(ttl) - TOKEN_MARGIN, 1.0)
        key = key or scopes
        with self._lock:  # the newest token for a scope replaces older ones (they may have been revoked)
            self._tokens = [_Token(str(value), key, expires), *(t for t in self._tokens if t.scopes != key)]
        return str(value)

    def _check_realm_transport(self, realm: str) -> None:
        """Refuse to send credentials to a token service over plain HTTP unless it is loopback or listed."""
        parts = urlsplit(realm)
        if parts.scheme == "https":
            return
        host = parts.netloc.rpartition("@")[2]
        if parts.scheme == "http" and is_insecure(host):
            return
        raise EdgepackError(
            f"registry {self.registry} names the token service {parts.scheme}://{host}, which is not HTTPS: "
            f"edgepack will not send credentials there in clear; fix the registry's auth realm, or add {host} "
            "to EDGEPACK_INSECURE_REGISTRIES if it is a trusted local service"
        )

    def refused(self, what: str, scopes: Iterable[str] = ()) -> EdgepackError:
        """The error for a registry that still says no: anonymous (log in) or refused credentials."""
        creds = self._credentials
        login = f"run `docker login {self.registry}` or pass --username/--password"
        if not creds or creds.anonymous:
            return EdgepackError(f"registry {self.registry} requires authentication for {what}: {login}")
        return EdgepackError(
            f"registry {self.registry} refused the credentials of {creds.describe()} for {what}: {login}"
        )
