"""A local HTTPS stand-in for IoT Hub's service REST API: records every request the SDK sends and answers
like IoT Hub (configurations: create/get/list/delete; devices/<id>/applyConfigurationContent).

TLS with a throwaway CA and a 127.0.0.1 certificate (``cryptography``); the SDK reaches it with
``HostName=127.0.0.1:<port>`` and the CA as its trust bundle. Nothing here talks to the network beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KEY = base64.b64encode(b"edgepack-test-shared-access-key!").decode()
KEY_NAME = "iothubowner"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 and localhost signed by it: (ca, cert, key) PEM paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgepack test IoT Hub CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "hub.pem", directory / "hub.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@dataclass
class FakeIotHub:
    """Plays IoT Hub's configuration and device endpoints over HTTPS on 127.0.0.1."""

    tls_dir: Path
    devices: set[str] = field(default_factory=lambda: {"edge-1"})
    requests: list[Recorded] = field(default_factory=list)
    configurations: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: tuple[int, dict[str, Any]] | None = None  # the next answer, whatever the request

    def __post_init__(self) -> None:
        self.ca, cert, key = make_tls(self.tls_dir)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.requests.append(
                    Recorded(self.command, url.path, urllib.parse.parse_qs(url.query), dict(self.headers), body)
                )
                status, answer = hub._answer(self.command, url.path, body)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"HostName={self.host};SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if self.fail_with is not None:
            status, answer = self.fail_with
            self.fail_with = None
            return status, answer
        parts = path.strip("/").split("/")
        if parts[0] == "configurations" and len(parts) == 1 and method == "GET":
            return 200, list(self.configurations.values())
        if parts[0] == "configurations" and len(parts) == 2:
            cid = urllib.parse.unquote(parts[1])
            if method == "PUT":
                if cid in self.configurations:
                    return 409, _error("ConfigurationAlreadyExists", f"Configuration with id '{cid}' already exists")
                record = json.loads(body)
                record.update(etag="MQ==", schemaVersion="1.0", createdTimeUtc="2026-12-03T08:00:00Z")
                record.setdefault("systemMetrics", {"results": {}, "queries": {}})
                self.configurations[cid] = record
                return 201, record
            if cid not in self.configurations:
                return 404, _error("ConfigurationNotFound", f"Configuration with id '{cid}' not found")
            if method == "GET":
                return 200, self.configurations[cid]
            if method == "DELETE":
                del self.configurations[cid]
                return 204, None
        if parts[0] == "devices" and len(parts) == 3 and parts[2] == "applyConfigurationContent" and method == "POST":
            if urllib.parse.unquote(parts[1]) not in self.devices:
                return 404, _error("DeviceNotFound", f"Device {parts[1]} not registered")
            return 204, None
        return 400, _error("InvalidRequest", f"unexpected {method} {path}")


def _error(code: str, message: str) -> dict[str, str]:
    return {"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": "Tracking ID:0-G:0-TimeStamp:12/03/2026"}


def check_sas(header: str, host: str, key: str = KEY, key_name: str = KEY_NAME) -> dict[str, str]:
    """Parse an ``Authorization: SharedAccessSignature ...`` header and check its signature; returns the fields."""
    scheme, _, token = header.partition(" ")
    assert scheme == "SharedAccessSignature"
    fields = dict(item.split("=", 1) for item in token.split("&"))
    assert set(fields) == {"sr", "sig", "se", "skn"}
    assert urllib.parse.unquote_plus(fields["sr"]) == host
    assert fields["skn"] == key_name
    message = (fields["sr"] + "\n" + fields["se"]).encode()
    expected = base64.b64encode(hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()).decode()
    assert urllib.parse.unquote(fields["sig"]) == expected
    return fields
