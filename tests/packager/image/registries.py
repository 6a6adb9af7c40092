"""Throwaway registries for auth tests: the real CNCF ``docker-registry`` on a free loopback port.

:func:`start_registry` runs ``/usr/bin/docker-registry serve CONFIG`` with a temporary storage
folder; :func:`htpasswd_registry` adds Basic auth (bcrypt htpasswd) and :func:`token_registry`
Bearer-token auth against a :class:`TokenServer`: a tiny ``http.server`` that checks Basic
credentials (or a refresh token) and signs ES256 JWTs with a key whose self-signed certificate is
the registry's ``rootcertbundle`` and travels in the token's ``x5c`` header.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SERVICE = "edgepack-test-registry"
ISSUER = "edgepack-test-issuer"


def free_port() -> int:
    """A loopback TCP port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd: the ``bcrypt`` module, else the stdlib ``crypt`` (≤3.12), else ``htpasswd``."""
    try:
        import bcrypt

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13

        if crypt.METHOD_BLOWFISH in crypt.methods:
            return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    except ImportError:
        pass
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbB", "u", password], capture_output=True, text=True, check=True)
        return out.stdout.strip().split(":", 1)[1]
    raise RuntimeError("no bcrypt implementation: pip install bcrypt, or apt-get install apache2-utils")


@dataclass
class Registry:
    """A running throwaway registry: ``address`` is ``127.0.0.1:PORT``."""

    address: str
    process: subprocess.Popen[bytes]
    root: Path
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_registry(root: Path, auth: dict[str, Any] | None = None) -> Registry:
    """Start ``docker-registry`` with storage under ``root`` (and ``auth`` config); wait until it answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": address, "secret": uuid.uuid4().hex},
    }
    if auth:
        config["auth"] = auth
    conf = root / "config.yml"
    conf.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    registry = Registry(address, proc, root, log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            requests.get(f"http://{address}/v2/", timeout=1)
            return registry
        except requests.ConnectionError:
            time.sleep(0.05)
    registry.stop()
    raise RuntimeError(f"docker-registry did not answer on {address}: {log.read_text()[-2000:]}")


def htpasswd_registry(root: Path, users: dict[str, str]) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    htpasswd = root / "htpasswd"
    htpasswd.write_text("".join(f"{user}:{bcrypt_hash(pw)}\n" for user, pw in users.items()))
    return start_registry(root, {"htpasswd": {"realm": "edgepack-test", "path": str(htpasswd)}})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens: full access to known users, none to anonymous callers.

    ``requests`` records ``(user or "", scopes)`` per token issued; ``refresh_tokens`` maps an
    identity token to its user (the OAuth ``refresh_token`` grant).
    """

    users: dict[str, str]
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgepack test token signer")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def count(self, scope: str) -> int:
        """How many tokens were issued whose request named ``scope``."""
        return sum(1 for _, scopes in self.requests if scope in scopes)

    def issue(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes if user else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _answer(self, handler: BaseHTTPRequestHandler, user: str | None, scopes: list[str]) -> None:
        if user is None:
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"details":"incorrect username or password"}')
            return
        self.requests.append((user, tuple(scopes)))
        token = self.issue(user, scopes)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _basic_user(self, header: str) -> str | None:
        """The user of a valid Basic header, "" for none, ``None`` for wrong credentials."""
        if not header:
            return ""
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user if scheme.lower() == "basic" and self.users.get(user) == password else None

    def start(self) -> TokenServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                outer._answer(self, outer._basic_user(self.headers.get("Authorization", "")), scopes)

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                scopes = [s for value in form.get("scope", []) for s in value.split()]
                if form.get("grant_type") == ["refresh_token"]:
                    user = outer.refresh_tokens.get((form.get("refresh_token") or [""])[0])
                else:
                    user = outer.users.get((form.get("username") or [""])[0])
                outer._answer(self, user, scopes)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def token_registry(root: Path, server: TokenServer) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    bundle = root / "token-ca.pem"
    bundle.write_bytes(server.cert_pem)
    auth = {"token": {"realm": server.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)}}
    return start_registry(root, auth)


@contextmanager
def running(registry: Registry) -> Iterator[Registry]:
    try:
        yield registry
    finally:
        registry.stop()


def write_docker_config(directory: Path, config: dict[str, Any]) -> Path:
    """A ``config.json`` in ``directory`` (point ``DOCKER_CONFIG`` at it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def basic_auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
