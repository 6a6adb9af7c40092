"""Key auth and token auth: Bearer credentials, 401 challenges, open probe routes, token minting."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from edge_module.runtime import Response
from edge_module.server.auth import Authenticator, TokenError, mint_token, verify_token
from edge_module.server.lifecycle import BackgroundServer
from edge_module.settings import Settings, SettingsError
from tests.support.scorers import FunctionApp

SECRET = "s3cret-signing-key-for-tests"
OPEN = ["/", "/v2/health/live", "/v2/health/ready", "/swagger.json", "/openapi.json"]
PROTECTED = [("POST", "/score"), ("GET", "/metrics"), ("GET", "/v2"), ("POST", "/v2/repository/index")]


def app() -> FunctionApp:
    return FunctionApp(lambda req: Response(b'{"ok": true}'))


@pytest.fixture(scope="module")
def key_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(app(), Settings(port=0, primary_key="primary-key-1", secondary_key="second-key-2")) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def token_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(app(), Settings(port=0, token_auth=True, token_secret=SECRET)) as srv:
        srv.wait_ready()
        yield srv


def test_key_auth_primary_and_secondary(key_server: BackgroundServer) -> None:
    for key in ("primary-key-1", "second-key-2"):
        r = requests.post(key_server.url + "/score", json={}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    r = requests.post(key_server.url + "/score", json={}, headers={"Authorization": "bearer primary-key-1"})
    assert r.status_code == 200  # the scheme is case-insensitive


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Bearer primary-key-", "Basic cHJpbWFyeS1rZXktMQ==", "Bearer", "primary-key-1"]
)
def test_key_auth_rejects_with_a_challenge(key_server: BackgroundServer, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in PROTECTED:
        r = requests.request(method, key_server.url + path, headers=headers, json={})
        assert r.status_code == 401, (path, header)
        assert r.headers["www-authenticate"].startswith('Bearer realm="edgepack"')
        assert r.json()


def test_probe_routes_stay_open(key_server: BackgroundServer, token_server: BackgroundServer) -> None:
    for srv in (key_server, token_server):
        for path in OPEN:
            assert requests.get(srv.url + path).status_code == 200, path


def test_token_auth(token_server: BackgroundServer) -> None:
    tok = mint_token(SECRET, ttl=60)
    r = requests.post(token_server.url + "/score", json={}, headers={"Authorization": f"Bearer {tok.access_token}"})
    assert r.status_code == 200
    # a key is not a token
    r = requests.post(token_server.url + "/score", json={}, headers={"Authorization": "Bearer primary-key-1"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    # another secret's token
    other = mint_token("another-secret-of-16+chars", ttl=60)
    r = requests.post(token_server.url + "/score", json={}, headers={"Authorization": f"Bearer {other.access_token}"})
    assert r.status_code == 401 and "signature" in r.json()["message"]
    # an expired token
    old = mint_token(SECRET, ttl=10, now=time.time() - 20)
    r = requests.post(token_server.url + "/score", json={}, headers={"Authorization": f"Bearer {old.access_token}"})
    assert r.status_code == 401 and "expired" in r.json()["message"]
    # a token whose payload was edited (longer expiry) fails the signature
    _, sig = tok.access_token.split(".")
    forged = mint_token(SECRET, ttl=99999).access_token.split(".")[0] + "." + sig
    r = requests.post(token_server.url + "/score", json={}, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


def test_v2_401_uses_the_v2_error_shape(token_server: BackgroundServer) -> None:
    r = requests.get(token_server.url + "/v2")
    assert r.status_code == 401 and "error" in r.json()


def test_mint_and_verify_tokens() -> None:
    now = 1_700_000_000.0
    tok = mint_token(SECRET, ttl=3600, now=now)
    assert tok.expiry_on == now + 3600 and tok.refresh_after == now + 2700
    d = tok.to_dict()
    assert d["tokenType"] == "Bearer" and d["accessToken"] == tok.access_token and d["refreshAfter"] < d["expiryOn"]
    payload = verify_token(SECRET, tok.access_token, now=now + 10)
    assert payload["exp"] == now + 3600 and payload["refresh_after"] == now + 2700
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, tok.access_token, now=now + 3600)
    with pytest.raises(TokenError, match="signature"):
        verify_token("x" * 20, tok.access_token, now=now)
    with pytest.raises(TokenError, match="malformed"):
        verify_token(SECRET, "not-a-token", now=now)
    assert mint_token(SECRET, ttl=100, refresh_after=10, now=now).refresh_after == now + 10
    with pytest.raises(ValueError):
        mint_token(SECRET, ttl=100, refresh_after=200)


def test_verified_tokens_are_cached_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator("token", secret=SECRET)
    tok = mint_token(SECRET, ttl=1).access_token.encode()
    assert auth.check(b"Bearer " + tok) is None
    assert tok in auth._verified
    later = time.time() + 1.5
    monkeypatch.setattr("edge_module.server.auth.time.time", lambda: later)
    failure = auth.check(b"Bearer " + tok)
    assert failure is not None and "expired" in failure[1]


def test_key_and_token_auth_are_mutually_exclusive() -> None:
    with pytest.raises(SettingsError, match="mutually exclusive"):
        Settings(primary_key="k" * 20, token_auth=True, token_secret=SECRET)
    with pytest.raises(SettingsError, match="secret"):
        Settings(token_auth=True)
    with pytest.raises(SettingsError, match="primary"):
        Settings(secondary_key="k")
    assert Settings(primary_key="k").auth_mode == "key"
    assert Settings(token_auth=True, token_secret=SECRET).auth_mode == "token"
    assert Settings().auth_mode is None


def test_cors_preflight_needs_no_credentials_but_everything_else_does() -> None:
    """Browsers send preflights without credentials: an allowed origin's preflight on a served route is
    answered; any other OPTIONS, and the request itself, need the key."""
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    settings = Settings(port=0, primary_key="primary-key-1", cors_origins=("https://app.example.com",))
    with BackgroundServer(app(), settings) as srv:
        srv.wait_ready()
        r = requests.options(srv.url + "/score", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert requests.options(srv.url + "/score").status_code == 401
        assert (
            requests.options(srv.url + "/score", headers={**preflight, "Origin": "https://evil.test"}).status_code
            == 401
        )
        assert requests.options(srv.url + "/no-such-route", headers=preflight).status_code == 401
        assert requests.post(srv.url + "/score", headers={"Origin": "https://app.example.com"}).status_code == 401
    with BackgroundServer(app(), Settings(port=0, primary_key="primary-key-1")) as srv:  # CORS off
        srv.wait_ready()
        assert requests.options(srv.url + "/score", headers=preflight).status_code == 401
