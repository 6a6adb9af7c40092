"""Key and token auth for the scoring server, as Azure ML v1 did it.

- Key auth: ``Authorization: Bearer <primary or secondary key>``.
- Token auth: ``Authorization: Bearer <token>`` where the token is
  ``base64url(payload JSON) "." base64url(HMAC-SHA256(secret, first part))`` and the payload holds
  ``exp`` (expiry, Unix seconds), ``iat`` and ``refresh_after`` (when a client should fetch a new
  one). :func:`mint_token` makes one, :func:`verify_token` checks it.

Comparisons are constant-time (:func:`hmac.compare_digest`). Failures answer 401 with a
``WWW-Authenticate: Bearer`` challenge (RFC 6750).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

REALM = "edgepack"
DEFAULT_TOKEN_TTL = 3600.0
DEFAULT_REFRESH_FRACTION = 0.75


class TokenError(ValueError):
    """A token that does not verify (malformed, bad signature, expired)."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _secret(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


@dataclass(frozen=True)
class Token:
    """A minted token, shaped like Azure ML v1's ``service.get_token()`` answer."""

    access_token: str
    expiry_on: float
    refresh_after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "accessToken": self.access_token,
            "tokenType": "Bearer",
            "expiryOn": int(self.expiry_on),
            "refreshAfter": int(self.refresh_after),
        }


def mint_token(
    secret: str | bytes,
    ttl: float = DEFAULT_TOKEN_TTL,
    refresh_after: float | None = None,
    subject: str | None = None,
    now: float | None = None,
) -> Token:
    """Sign a token valid for ``ttl`` seconds; clients should refresh after ``refresh_after`` seconds
    (default three quarters of ``ttl``)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = time.time() if now is None else now
    refresh = ttl * DEFAULT_REFRESH_FRACTION if refresh_after is None else refresh_after
    if not 0 <= refresh <= ttl:
        raise ValueError("refresh_after must be between 0 and ttl")
    payload: dict[str, Any] = {"iat": int(issued), "exp": int(issued + ttl), "refresh_after": int(issued + refresh)}
    if subject:
        payload["sub"] = subject
    body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64e(hmac.digest(_secret(secret), body.encode("ascii"), hashlib.sha256))
    return Token(f"{body}.{sig}", payload["exp"], payload["refresh_after"])


def verify_token(secret: str | bytes, token: str, now: float | None = None) -> dict[str, Any]:
    """Return the payload of a valid token; raise :class:`TokenError` saying why not."""
    body, sep, sig = token.partition(".")
    if not sep or not body or not sig:
        raise TokenError("malformed token")
    expected = _b64e(hmac.digest(_secret(secret), body.encode("ascii", "replace"), hashlib.sha256))
    if not hmac.compare_digest(expected.encode(), sig.encode("ascii", "replace")):
        raise TokenError("bad token signature")
    try:
        payload = json.loads(_b64d(body))
        exp = float(payload["exp"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TokenError("malformed token payload") from None
    if (time.time() if now is None else now) >= exp:
        raise TokenError("token expired")
    return payload


def authenticator_for(settings: Any) -> Authenticator | None:
    """The authenticator a settings object asks for (its ``auth_mode``, keys, token secret), or None: auth off."""
    mode = settings.auth_mode
    if mode == "key":
        return Authenticator("key", keys=tuple(k for k in (settings.primary_key, settings.secondary_key) if k))
    if mode == "token":
        return Authenticator("token", secret=settings.token_secret)
    return None


class Authenticator:
    """Checks the ``Authorization`` header (bytes, as parsed) on protected routes.

    ``check`` returns ``None`` when the request may go on, else the ``WWW-Authenticate`` value
    and a message for the 401.
    """

    def __init__(self, mode: str, keys: tuple[str, ...] = (), secret: str | None = None, cache_size: int = 4096):
        if mode not in ("key", "token"):
            raise ValueError(f"unknown auth mode {mode!r}")
        self.mode = mode
        self._keys = tuple(k.encode("utf-8") for k in keys if k)
        self._secret = _secret(secret) if secret else None
        if mode == "key" and not self._keys:
            raise ValueError("key auth needs a primary key")
        if mode == "token" and not self._secret:
            raise ValueError("token auth needs a secret")
        self._verified: dict[bytes, float] = {}  # token -> expiry; signature already checked
        self._cache_size = cache_size

    def check(self, authorization: bytes | None) -> tuple[str, str] | None:
        if not authorization:
            return f'Bearer realm="{REALM}"', "missing Authorization header: send 'Authorization: Bearer <key>'"
        scheme, _, credential = authorization.strip().partition(b" ")
        credential = credential.strip()
        if scheme.lower() != b"bearer" or not credential:
            return (
                f'Bearer realm="{REALM}", error="invalid_request"',
                "the Authorization header must be 'Bearer <key or token>'",
            )
        if self.mode == "key":
            ok = False
            for key in self._keys:  # compare against every key: the time does not say which one matched
                ok |= hmac.compare_digest(credential, key)
            if ok:
                return None
            return f'Bearer realm="{REALM}", error="invalid_token"', "invalid key"
        expiry = self._verified.get(credential)
        now = time.time()
        if expiry is not None and now < expiry:
            return None
        try:
            payload = verify_token(self._secret, credential.decode("ascii", "replace"), now=now)  # type: ignore[arg-type]
        except TokenError as exc:
            self._verified.pop(credential, None)
            return f'Bearer realm="{REALM}", error="invalid_token", error_description="{exc}"', str(exc)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[credential] = float(payload["exp"])
        return None
