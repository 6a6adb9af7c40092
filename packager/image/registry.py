"""An OCI distribution client, in the style of crane: manifests, platforms, blobs, mounts, uploads.

One :class:`RegistryClient` talks to one registry over a pooled ``requests.Session``. Idempotent
calls retry with backoff on connection errors, 5xx and 429; uploads restart from a fresh session
(a blob is pushed whole, so an interrupted push simply runs again: :meth:`RegistryClient.push_blobs`
HEADs every blob first and sends only what the registry lacks, cross-repository mounting what it
already holds elsewhere). Auth (anonymous, Basic, Bearer tokens) is :mod:`packager.image.auth`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from packager.errors import EdgepackError, IntegrityError, InvalidInputError, NotFoundError
from packager.fs import publish_file
from packager.image.auth import Credentials, RegistryAuth, pull_scope, push_scope
from packager.image.oci import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, BlobSpec
from packager.image.reference import ImageRef, is_insecure, is_loopback, normalize_registry, validate_digest
from packager.image.spec import NullReporter, Platform, Reporter, cache_dir

ALL_MANIFEST_TYPES = (*INDEX_TYPES, *MANIFEST_TYPES)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1 << 20
MAX_SMALL_BLOB = 64 << 20
FALLBACK_CHUNK = 8 << 20  # chunked upload when a registry refuses a whole blob (413)


@dataclass
class PushStats:
    """What :meth:`RegistryClient.push_blobs` did: blobs that existed, were mounted or uploaded, bytes sent."""

    blobs: int = 0
    existed: int = 0
    mounted: int = 0
    uploaded: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    uploaded_digests: list[str] = field(default_factory=list)

    def add(self, other: PushStats) -> PushStats:
        for name in ("blobs", "existed", "mounted", "uploaded", "bytes_sent", "seconds", "uploaded_digests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hasher(digest: str) -> Any:
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise EdgepackError(f"digest algorithm {algorithm!r} of {digest} is not supported (sha256, sha512 are)")
    return hashlib.new(algorithm)


def _platform_key(os_: str, arch: str, variant: str = "") -> tuple[str, str, str]:
    """Compare platforms as OCI tools do: arm64 means arm64/v8, arm means arm/v7."""
    if arch == "arm64" and variant in ("", "v8"):
        variant = "v8"
    elif arch == "arm" and not variant:
        variant = "v7"
    return os_, arch, variant


def _platform_args(doc: dict[str, Any]) -> dict[str, str]:
    return {"os_": doc.get("os", ""), "arch": doc.get("architecture", ""), "variant": doc.get("variant", "")}


def _platform_text(doc: dict[str, Any]) -> str:
    return "/".join(p for p in (doc.get("os", ""), doc.get("architecture", ""), doc.get("variant", "")) if p)


def _network_reason(exc: BaseException) -> str:
    """The root cause of a requests connection error, in a few words."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "unknown host name"
        if isinstance(e, ssl.SSLError):
            return f"TLS failed ({e.reason or e})"
        if isinstance(e, TimeoutError | socket.timeout):
            return "timed out"
        nxt = [getattr(e, "reason", None), e.__cause__, e.__context__, *getattr(e, "args", ())]
        todo.extend(n for n in nxt if isinstance(n, BaseException))
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return type(exc).__name__


class _Retry(Exception):
    """An upload attempt failed in a way a fresh attempt may fix."""


class _CountingReader:
    """A file-like upload body that reports every chunk read (bytes actually sent) to ``on_read``."""

    def __init__(self, f: IO[bytes], length: int, on_read: Callable[[int], None]) -> None:
        self._f, self._length, self._on_read = f, length, on_read

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        if data:
            self._on_read(len(data))
        return data


class RegistryClient:
    """Talk to one registry (``127.0.0.1:5000``, ``registry-1.docker.io``...): pull and push by digest."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | tuple[str, str] | dict[str, str] | None = None,
        insecure: bool | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        retries: int = 3,
        backoff: float = 0.25,
        max_workers: int = 4,
        chunk_size: int | None = None,
        cache: Path | None = None,
        docker_config: Path | None = None,
    ) -> None:
        self.registry = normalize_registry(registry)
        self.insecure = is_insecure(self.registry) if insecure is None else insecure
        self.base_url = f"{'http' if self.insecure else 'https'}://{self.registry}"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_workers = max(1, max_workers)
        self.chunk_size = chunk_size
        self.cache = Path(cache) if cache else cache_dir() / "blobs"
        self.docker_config = docker_config
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=self.max_workers + 4, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "edgepack"
        self._proxies = {"http": None, "https": None} if is_loopback(self.registry) else {}
        self.auth = RegistryAuth(
            self.registry, self.session, Credentials.coerce(credentials), (timeout[0], timeout[1]), docker_config
        )
        self._auth_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._top: dict[str, tuple[bytes, str, str]] = {}
        self._others: dict[str, RegistryClient] = {}
        self.bytes_sent = 0  # every blob and manifest byte this client pushed

    @classmethod
    def for_ref(
        cls, ref: ImageRef | str, credentials: Credentials | tuple[str, str] | dict[str, str] | None = None, **kw: Any
    ) -> RegistryClient:
        """A client for the registry ``ref`` lives on."""
        ref = ImageRef.parse(ref) if isinstance(ref, str) else ref
        return cls(ref.registry, credentials=credentials, **kw)

    def close(self) -> None:
        for other in self._others.values():
            other.close()
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------- HTTP core
    def _url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path}"

    def _address(self) -> str:
        if self.registry.endswith("]") or ":" not in self.registry:
            return f"{self.registry}:{80 if self.insecure else 443}"
        return self.registry

    def unreachable(self, exc: BaseException, url: str) -> EdgepackError:
        reason = _network_reason(exc)
        hint = "check the host and port and that the registry is running"
        if reason.startswith("TLS") and not self.insecure:
            hint += f"; if it serves plain HTTP, add it to EDGEPACK_INSECURE_REGISTRIES={self.registry}"
        return EdgepackError(f"cannot reach registry {self._address()} ({reason}) at {url}: {hint}")

    def _sleep(self, attempt: int, response: requests.Response | None = None) -> None:
        delay = self.backoff * (2**attempt)
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            delay = max(delay, float(response.headers["Retry-After"]))
        time.sleep(min(delay, 10.0))

    def _request(
        self,
        method: str,
        url: str,
        *,
        scopes: Sequence[str],
        what: str,
        ok: Iterable[int] = (200,),
        headers: dict[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        idempotent: bool = True,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """Send with auth, retrying idempotent requests; return a response whose status is in ``ok``."""
        ok = tuple(ok)
        same_host = urlsplit(url).netloc == urlsplit(self.base_url).netloc
        challenged = False
        attempt = 0
        while True:
            sent = dict(headers or {})
            if same_host:
                sent.update(self.auth.headers(scopes))
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=sent,
                    data=data,
                    stream=stream,
                    timeout=timeout or self.timeout,
                    proxies=self._proxies,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if idempotent and attempt < self.retries:
                    self._sleep(attempt)
                    attempt += 1
                    continue
                if not idempotent:
                    raise _Retry(self.unreachable(exc, url)) from exc
                raise self.unreachable(exc, url) from None
            if resp.status_code == 401 and same_host and not challenged:
                challenged = True
                resp.close()
                with self._auth_lock:
                    if self.auth.headers(scopes).get("Authorization") == sent.get("Authorization"):
                        self.auth.challenged(resp, scopes, what)
                if data is not None and not isinstance(data, bytes | str):
                    raise _Retry(EdgepackError(f"registry {self.registry} asked for auth in the middle of {what}"))
                continue
            if resp.status_code == 401:
                resp.close()
                raise self.auth.refused(what, scopes)
            if resp.status_code in RETRY_STATUS and resp.status_code not in ok:
                if idempotent and attempt < self.retries:
                    resp.close()
                    self._sleep(attempt, resp)
                    attempt += 1
                    continue
                if not idempotent:
                    raise _Retry(self.error(resp, what))
            if resp.status_code not in ok:
                raise self.error(resp, what)
            return resp

    def error(self, resp: requests.Response, what: str) -> EdgepackError:
        """An error naming the registry, the operation and what the registry said."""
        codes, detail = [], ""
        try:
            body = resp.json() if resp.content else {}
            for err in body.get("errors") or []:
                codes.append(str(err.get("code", "")))
                detail = detail or str(err.get("message", ""))
        except (ValueError, AttributeError):
            detail = resp.text[:200].strip() if resp.text else ""
        said = ", ".join(c for c in codes if c) or str(resp.status_code)
        if detail:
            said += f": {detail}"
        status = resp.status_code
        error: EdgepackError
        if status == 404:
            error = NotFoundError(
                f"{what} not found on registry {self.registry} ({said}): check the name, tag or digest"
            )
        elif status == 403:
            error = EdgepackError(
                f"registry {self.registry} denied {what} ({said}): the account needs pull/push access to the repository"
            )
        elif "DIGEST_INVALID" in codes or "SIZE_INVALID" in codes:
            error = IntegrityError(
                f"registry {self.registry} rejected {what} ({said}): the content does not match its digest"
            )
        elif status == 413:
            error = EdgepackError(f"registry {self.registry} refused {what} as too large ({said})")
        else:
            error = EdgepackError(f"registry {self.registry} answered {status} for {what} ({said})")
        error.status = status  # type: ignore[attr-defined]
        return error

    def _check_ref(self, ref: ImageRef) -> None:
        if ref.registry != self.registry:
            raise InvalidInputError(
                f"{ref} is on registry {ref.registry}, not {self.registry}: use RegistryClient.for_ref"
            )

    def ping(self) -> int:
        """GET ``/v2/``: the status (200 open, 401 needs auth); raises if the registry does not answer."""
        resp = self._request("GET", self._url(""), scopes=(), what="the API check /v2/", ok=(200, 401))
        resp.close()
        return resp.status_code

    # --------------------------------------------------------------------------------- manifests
    def get_manifest(self, ref: ImageRef, accept: Sequence[str] = ALL_MANIFEST_TYPES) -> tuple[bytes, str, str]:
        """The manifest or index ``ref`` names: ``(bytes, media type, digest)``, digest verified if pinned."""
        self._check_ref(ref)
        resp = self._request(
            "GET",
            self._url(f"{ref.repository}/manifests/{ref.reference}"),
            scopes=(pull_scope(ref.repository),),
            what=f"image {ref}",
            headers={"Accept": ", ".join(accept)},
        )
        data = resp.content
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            doc = json.loads(data)
        except ValueError:
            raise EdgepackError(f"registry {self.registry} sent a manifest for {ref} that is not JSON") from None
        if isinstance(doc, dict) and doc.get("mediaType"):
            media_type = str(doc["mediaType"])
        elif isinstance(doc, dict) and media_type not in ALL_MANIFEST_TYPES:
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        if media_type in SCHEMA1_TYPES or (isinstance(doc, dict) and doc.get("schemaVersion") == 1):
            raise EdgepackError(f"{ref} has a Docker schema 1 manifest, which is obsolete: use a newer image")
        if media_type not in accept:
            raise EdgepackError(f"{ref} is a {media_type}, expected one of {', '.join(accept)}")
        digest = ref.digest or resp.headers.get("Docker-Content-Digest") or sha256_digest(data)
        h = _hasher(digest)
        h.update(data)
        actual = f"{digest.partition(':')[0]}:{h.hexdigest()}"
        if actual != digest:
            raise IntegrityError(
                f"registry {self.registry} sent a manifest for {ref} whose digest is {actual}, not {digest}"
            )
        return data, media_type, digest

    def head_manifest(self, ref: ImageRef) -> str | None:
        """The digest ``ref`` points at, or ``None`` if the registry does not have it."""
        self._check_ref(ref)
        resp = self._request(
            "HEAD",
            self._url(f"{ref.repository}/manifests/{ref.reference}"),
            scopes=(pull_scope(ref.repository),),
            what=f"image {ref}",
            headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
            ok=(200, 404),
        )
        resp.close()
        if resp.status_code == 404:
            return None
        return resp.headers.get("Docker-Content-Digest") or ref.digest or None

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest."""
        digest = sha256_digest(data)
        resp = self._request(
            "PUT",
            self._url(f"{repo}/manifests/{reference}"),
            scopes=(push_scope(repo),),
            what=f"the manifest {reference} of {self.registry}/{repo}",
            headers={"Content-Type": media_type},
            data=data,
            ok=(200, 201, 202),
        )
        resp.close()
        self._count(len(data))
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise IntegrityError(f"registry {self.registry} stored manifest {reference} as {said}, expected {digest}")
        return digest

    def _top_level(self, ref: ImageRef) -> tuple[bytes, str, str]:
        key = str(ref)
        if key not in self._top:
            self._top[key] = self.get_manifest(ref)
        return self._top[key]

    def last_index_digest(self, ref: ImageRef) -> str | None:
        """The digest of what ``ref`` names (the index of a multi-arch image): pin a base with it."""
        return self._top_level(ref)[2]

    resolve_digest = last_index_digest

    def platforms(self, ref: ImageRef) -> list[str]:
        """The platforms ``ref`` offers (``linux/amd64``, ``linux/arm64/v8``...)."""
        data, media_type, _ = self._top_level(ref)
        doc = json.loads(data)
        if media_type in INDEX_TYPES:
            return [_platform_text(m.get("platform") or {}) for m in doc.get("manifests", []) if _usable(m)]
        config = json.loads(self.get_blob(ref.repository, doc["config"]["digest"]))
        return [_platform_text(config)]

    def resolve_platform(self, ref: ImageRef, platform: Platform) -> tuple[bytes, str, dict[str, Any]]:
        """``ref``'s image for ``platform``: ``(manifest bytes, manifest digest, config)``."""
        data, media_type, digest = self._top_level(ref)
        doc = json.loads(data)
        want = _platform_key(platform.os, platform.architecture, platform.variant)
        if media_type in INDEX_TYPES:
            entries = [m for m in doc.get("manifests", []) if _usable(m)]
            match = [m for m in entries if _platform_key(**_platform_args(m["platform"])) == want]
            if not match:
                have = ", ".join(_platform_text(m["platform"]) for m in entries) or "none"
                raise NotFoundError(
                    f"base image {ref} has no {platform} image (it has {have}): "
                    "build for one of those platforms or pick a base image that has this one"
                )
            data, media_type, digest = self.get_manifest(ref.with_digest(match[0]["digest"]), accept=MANIFEST_TYPES)
            config = json.loads(self.get_blob(ref.repository, json.loads(data)["config"]["digest"]))
            return data, digest, config
        config = json.loads(self.get_blob(ref.repository, doc["config"]["digest"]))
        got = _platform_key(**_platform_args(config))
        if got[:2] != want[:2] or (config.get("variant") and got != want):
            raise NotFoundError(
                f"base image {ref} is a single {_platform_text(config)} image, not {platform}: "
                f"build for {_platform_text(config)} or pick a multi-arch base image"
            )
        return data, digest, config

    # --------------------------------------------------------------------------------- blobs
    def blob_exists(self, repo: str, digest: str, scopes: Sequence[str] | None = None) -> bool:
        """HEAD the blob: does ``repo`` hold ``digest``?"""
        resp = self._request(
            "HEAD",
            self._url(f"{repo}/blobs/{digest}"),
            scopes=scopes or (pull_scope(repo),),
            what=f"blob {digest} of {self.registry}/{repo}",
            ok=(200, 404),
        )
        resp.close()
        return resp.status_code == 200

    def get_blob(self, repo: str, digest: str, max_size: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob (a config) in memory, digest verified."""
        resp = self._request(
            "GET", self._url(f"{repo}/blobs/{digest}"), scopes=(pull_scope(repo),), what=f"blob {digest} of {repo}"
        )
        if int(resp.headers.get("Content-Length") or 0) > max_size:
            resp.close()
            raise EdgepackError(f"blob {digest} of {repo} is larger than {max_size} bytes: use fetch_blob")
        data = resp.content
        h = _hasher(digest)
        h.update(data)
        if f"{digest.partition(':')[0]}:{h.hexdigest()}" != digest:
            raise IntegrityError(f"registry {self.registry} sent blob {digest} of {repo} with other content")
        return data

    def fetch_blob(
        self, repo: str, digest: str, dest_dir: Path, reporter: Reporter | None = None, size: int | None = None
    ) -> Path:
        """Download a blob into the content-addressed folder ``dest_dir/<algorithm>/<hex>`` (kept if cached)."""
        validate_digest(digest)
        algorithm, _, hexpart = digest.partition(":")
        dest = Path(dest_dir) / algorithm / hexpart
        if dest.is_file() and (size is None or dest.stat().st_size == size):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        reporter = reporter or NullReporter()
        task = f"pull {hexpart[:12]}"
        url = self._url(f"{repo}/blobs/{digest}")
        for attempt in range(self.retries + 1):
            resp = self._request("GET", url, scopes=(pull_scope(repo),), what=f"blob {digest} of {repo}", stream=True)
            total = int(resp.headers.get("Content-Length") or 0) or size
            reporter.start(task, total)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{hexpart[:16]}.", dir=dest.parent)
            tmp = Path(tmp_name)
            h = _hasher(digest)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_content(CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        reporter.advance(task, len(chunk))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                tmp.unlink(missing_ok=True)
                if attempt < self.retries:
                    self._sleep(attempt)
                    continue
                raise self.unreachable(exc, url) from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                resp.close()
            actual = f"{algorithm}:{h.hexdigest()}"
            if actual != digest:
                tmp.unlink(missing_ok=True)
                raise IntegrityError(
                    f"blob {digest} of {self.registry}/{repo} downloaded as {actual}: the registry sent other content"
                )
            publish_file(tmp, dest, mode=0o644)
            reporter.done(task, "downloaded")
            return dest
        raise AssertionError("unreachable")

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Ask the registry to link ``digest`` from ``from_repo`` into ``repo``; ``False`` if it did not."""
        resp = self._request(
            "POST",
            self._url(f"{repo}/blobs/uploads/?mount={quote(digest, safe='')}&from={quote(from_repo, safe='/')}"),
            scopes=(push_scope(repo), pull_scope(from_repo)),
            what=f"mounting blob {digest} from {from_repo} into {repo}",
            ok=(201, 202),
        )
        resp.close()
        if resp.status_code == 201:
            return True
        location = resp.headers.get("Location")
        if location:  # the registry opened an upload session instead: cancel it
            with contextlib.suppress(EdgepackError):
                self._request(
                    "DELETE",
                    urljoin(self.base_url + "/", location),
                    scopes=(push_scope(repo),),
                    what="cancelling an upload",
                    ok=(200, 202, 204, 404),
                ).close()
        return False

    def _count(self, n: int) -> None:
        with self._stats_lock:
            self.bytes_sent += n

    def upload_blob(
        self,
        repo: str,
        digest: str,
        content: Path | bytes,
        size: int,
        reporter: Reporter | None = None,
        task: str | None = None,
    ) -> int:
        """Upload a file (or bytes) as ``digest`` (POST, then PUT or chunked PATCHes + PUT); returns bytes sent."""
        if isinstance(content, bytes):
            if len(content) != size:
                raise IntegrityError(f"blob {digest} has {len(content)} bytes in memory, expected {size}")
        else:
            content = Path(content)
            try:
                actual_size = content.stat().st_size
            except FileNotFoundError:
                raise NotFoundError(
                    f"blob {digest} should be at {content}, which does not exist: rebuild the image"
                ) from None
            if actual_size != size:
                raise IntegrityError(
                    f"blob {digest} at {content} has {actual_size} bytes, expected {size}: rebuild the image"
                )
        reporter = reporter or NullReporter()
        task = task or f"push {digest.partition(':')[2][:12]}"
        sent = 0
        last: EdgepackError | None = None
        chunk_size = self.chunk_size
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(attempt - 1)
            reporter.start(task, size)

            def on_read(n: int) -> None:
                nonlocal sent
                sent += n
                self._count(n)
                reporter.advance(task, n)

            try:
                self._upload_once(repo, digest, content, size, on_read, chunk_size)
            except _Retry as exc:
                last = exc.args[0] if exc.args and isinstance(exc.args[0], EdgepackError) else EdgepackError(str(exc))
                if getattr(last, "status", None) == 413 and not chunk_size:
                    chunk_size = FALLBACK_CHUNK  # the registry (or a proxy) limits request bodies: send chunks
                continue
            reporter.done(task, "pushed")
            return sent
        assert last is not None
        raise last

    def _upload_once(
        self,
        repo: str,
        digest: str,
        content: Path | bytes,
        size: int,
        on_read: Callable[[int], None],
        chunk_size: int | None = None,
    ) -> None:
        scopes = (push_scope(repo),)
        what = f"uploading blob {digest} to {self.registry}/{repo}"
        resp = self._request("POST", self._url(f"{repo}/blobs/uploads/"), scopes=scopes, what=what, ok=(202,))
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise _Retry(EdgepackError(f"registry {self.registry} started an upload without a Location header"))
        url = urljoin(self.base_url + "/", location)
        send = {
            "scopes": scopes,
            "what": what,
            "idempotent": False,
            "timeout": (self.timeout[0], max(self.timeout[1], 300.0)),
        }
        try:
            with _open(content) as f:
                body: Any = _CountingReader(f, size, on_read)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
                if chunk_size and size > chunk_size:
                    for offset in range(0, size, chunk_size):
                        n = min(chunk_size, size - offset)
                        part = {"Content-Range": f"{offset}-{offset + n - 1}", "Content-Length": str(n)}
                        resp = self._request("PATCH", url, headers=headers | part, data=f.read(n), ok=(202,), **send)
                        resp.close()
                        on_read(n)
                        url = urljoin(url, resp.headers.get("Location") or url)
                    body, headers = b"", {"Content-Length": "0"}
                sep = "&" if urlsplit(url).query else "?"
                url = f"{url}{sep}digest={quote(digest, safe='')}"
                self._request("PUT", url, headers=headers, data=body, ok=(201, 204), **send).close()
        except EdgepackError as exc:
            if isinstance(exc, IntegrityError):
                raise IntegrityError(f"{exc} ({_describe(content)})") from None
            if getattr(exc, "status", None) in (404, 408, 413):  # upload session gone, slow, body too large
                raise _Retry(exc) from exc
            raise

    # --------------------------------------------------------------------------------- push
    def _client_for(self, registry: str) -> RegistryClient:
        if registry == self.registry:
            return self
        if registry not in self._others:
            self._others[registry] = RegistryClient(
                registry, timeout=self.timeout, retries=self.retries, cache=self.cache, docker_config=self.docker_config
            )
        return self._others[registry]

    def push_blobs(
        self,
        repo: str,
        blobs: Sequence[BlobSpec],
        reporter: Reporter | None = None,
        max_workers: int | None = None,
    ) -> PushStats:
        """Make ``repo`` hold every blob: HEAD first (skip what exists), then mount or upload the rest.

        A blob in another repository of this registry (its :attr:`BlobSpec.source`) is mounted; one
        with neither a local file nor bytes in memory is fetched from its source into the blob cache,
        then uploaded.
        """
        reporter = reporter or NullReporter()
        t0 = time.perf_counter()
        stats = PushStats()
        unique: dict[str, BlobSpec] = {}
        for spec in blobs:
            unique.setdefault(validate_digest(spec.digest), spec)
        stats.blobs = len(unique)
        lock = threading.Lock()
        # one token for the whole push: push on the target, pull on every repository we may mount from
        sources = sorted(
            {b.source for b in unique.values() if isinstance(b.source, str) and b.source and b.source != repo}
            | {
                b.source.repository
                for b in unique.values()
                if isinstance(b.source, ImageRef) and b.source.registry == self.registry and b.source.repository != repo
            }
        )
        scopes = (push_scope(repo), *(pull_scope(src) for src in sources))
        workers = max(1, min(max_workers or self.max_workers, len(unique) or 1))

        def one(spec: BlobSpec) -> None:
            digest, size, source, task = spec.digest, spec.size, spec.source, spec.task
            if self.blob_exists(repo, digest, scopes):
                reporter.start(task, size)
                reporter.done(task, "exists")
                with lock:
                    stats.existed += 1
                return
            src_ref = source if isinstance(source, ImageRef) else None
            src_registry = src_ref.registry if src_ref else self.registry
            src_repo = src_ref.repository if src_ref else (source or None)
            if src_repo and src_registry == self.registry and src_repo != repo:
                try:
                    mounted = self.mount_blob(repo, digest, src_repo)
                except EdgepackError:
                    mounted = False  # no access to the source, or no mount support: upload instead
                if mounted:
                    reporter.start(task, size)
                    reporter.done(task, f"mounted from {src_repo}")
                    with lock:
                        stats.mounted += 1
                    return
            content: Path | bytes | None = spec.data
            if content is None and spec.path is not None and Path(spec.path).is_file():
                content = Path(spec.path)
            if content is None:
                if not src_repo:
                    raise NotFoundError(
                        f"blob {digest} is neither in {self.registry}/{repo} nor in a local file: rebuild the image"
                    )
                content = self._client_for(src_registry).fetch_blob(src_repo, digest, self.cache, reporter, size)
            sent = self.upload_blob(repo, digest, content, size, reporter, task)
            with lock:
                stats.uploaded += 1
                stats.bytes_sent += sent
                stats.uploaded_digests.append(digest)

        items = list(unique.values())
        if workers == 1 or len(items) <= 1:
            for spec in items:
                one(spec)
        else:
            one(items[0])  # the first request settles auth (one token) before the rest run in parallel
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(one, spec) for spec in items[1:]]:
                    future.result()
        stats.seconds = time.perf_counter() - t0
        return stats


def _open(content: Path | bytes) -> IO[bytes]:
    return io.BytesIO(content) if isinstance(content, bytes) else content.open("rb")


def _describe(content: Path | bytes) -> str:
    return f"{len(content)} bytes in memory" if isinstance(content, bytes) else f"local file {content}"


def _usable(entry: dict[str, Any]) -> bool:
    """An index entry that is an image for a real platform (not an attestation or ``unknown/unknown``)."""
    platform = entry.get("platform") or {}
    if not platform.get("os") or platform.get("os") == "unknown" or platform.get("architecture") == "unknown":
        return False
    return entry.get("mediaType", OCI_MANIFEST) in MANIFEST_TYPES
