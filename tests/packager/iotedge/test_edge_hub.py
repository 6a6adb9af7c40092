"""The local edgeHub with the real azure-iot-device module client (a process, no container)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from packager.edge.certs import ensure_certs
from packager.edge.hub import EdgeHub, check_sas, diff_patch, free_hub_address
from packager.iotedge.routes import parse_routes

DEVICE = "dev1"


def _wait(check, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.fixture
def hub_setup(tmp_path: Path):
    host = free_hub_address()
    certs = ensure_certs(tmp_path / "certs", host)
    keys = {m: base64.b64encode(os.urandom(32)).decode() for m in ("gen", "scorer")}
    routes = parse_routes(
        {
            "toScorer": "FROM /messages/modules/gen/outputs/samples"
            ' INTO BrokeredEndpoint("/modules/scorer/inputs/input1")',
            "up": "FROM /messages/modules/scorer/outputs/* WHERE above_threshold = 'true' INTO $upstream",
        }
    )
    hub = EdgeHub(
        DEVICE,
        keys,
        {"scorer": {"threshold": 0.5}},
        routes,
        certs.cert,
        certs.key,
        tmp_path / "up.jsonl",
        host=host,
        twin_hold=0.5,
    ).start()
    yield hub, keys, certs, tmp_path
    hub.stop()


def _client(hub: EdgeHub, module: str, key: str, ca: Path, monkeypatch):
    from azure.iot.device import IoTHubModuleClient

    monkeypatch.setenv(
        "EdgeHubConnectionString",
        f"HostName={hub.hostname};GatewayHostName={hub.host};DeviceId={DEVICE};ModuleId={module};SharedAccessKey={key}",
    )
    monkeypatch.setenv("EdgeModuleCACertificateFile", str(ca))
    return IoTHubModuleClient.create_from_edge_environment(connection_retry=False)


def test_module_client_twin_routes_upstream(hub_setup, monkeypatch):
    from azure.iot.device import Message

    hub, keys, certs, tmp = hub_setup
    gen = _client(hub, "gen", keys["gen"], certs.ca, monkeypatch)
    scorer = _client(hub, "scorer", keys["scorer"], certs.ca, monkeypatch)
    got, patches = [], []
    scorer.on_message_received = got.append
    scorer.on_twin_desired_properties_patch_received = patches.append
    try:
        gen.connect()
        scorer.connect()
        # twin: each connection is its module, though the twin topics do not say so
        assert scorer.get_twin()["desired"] == {"threshold": 0.5, "$version": 1}
        assert gen.get_twin()["desired"] == {"$version": 1}
        scorer.patch_twin_reported_properties({"status": "ready", "settings": {"threshold": 0.5}})
        assert hub.snapshot()["modules"]["scorer"]["reported"]["status"] == "ready"
        assert hub.snapshot()["modules"]["gen"]["reported"] == {"$version": 1}
        assert hub.set_desired("scorer", {"threshold": 0.9}) == 2
        _wait(lambda: patches == [{"threshold": 0.9, "$version": 2}])
        # route module output -> module input, properties kept
        msg = Message(b'{"x": 1}', message_id="m1", content_type="application/json")
        msg.custom_properties["k"] = "v w&="
        gen.send_message_to_output(msg, "samples")
        gen.send_message_to_output(Message(b"other"), "elsewhere")  # no route
        _wait(lambda: len(got) == 1)
        assert got[0].input_name == "input1" and got[0].data == b'{"x": 1}'
        assert got[0].custom_properties == {"k": "v w&="} and got[0].message_id == "m1"
        # WHERE on application properties; $upstream in the JSONL sink
        for flag in ("true", "false", "true"):
            out = Message(json.dumps({"flag": flag}))
            out.custom_properties["above_threshold"] = flag
            scorer.send_message_to_output(out, "output1")
        _wait(lambda: hub.snapshot()["upstream"] == 2)
        lines = [json.loads(x) for x in (tmp / "up.jsonl").read_text().splitlines()]
        assert [x["properties"]["above_threshold"] for x in lines] == ["true", "true"]
        assert {x["module"] for x in lines} == {"scorer"} and lines[0]["output"] == "output1"
    finally:
        gen.shutdown()
        scorer.shutdown()


def test_wrong_key_or_unknown_module_refused(hub_setup, monkeypatch):
    from azure.iot.device.exceptions import ClientError, ConnectionFailedError, CredentialError

    hub, keys, certs, _ = hub_setup
    bad = _client(hub, "gen", keys["scorer"], certs.ca, monkeypatch)
    unknown = _client(hub, "nope", keys["gen"], certs.ca, monkeypatch)
    for client in (bad, unknown):
        with pytest.raises((CredentialError, ConnectionFailedError, ClientError)):
            client.connect()
        client.shutdown()
    assert not any(m["connected"] for m in hub.snapshot()["modules"].values())


def test_store_and_forward_and_ttl(hub_setup, monkeypatch):
    """Messages for a module that is down wait in the hub; past their time to live they are dropped."""
    from azure.iot.device import Message

    hub, keys, certs, _ = hub_setup
    gen = _client(hub, "gen", keys["gen"], certs.ca, monkeypatch)
    try:
        gen.connect()
        for i in range(20):
            gen.send_message_to_output(Message(str(i)), "samples")
        assert hub.snapshot()["modules"]["scorer"]["queued"] == 20
        scorer = _client(hub, "scorer", keys["scorer"], certs.ca, monkeypatch)
        got = []
        scorer.on_message_received = got.append
        scorer.connect()
        _wait(lambda: len(got) == 20)
        assert [int(m.data) for m in got] == list(range(20))
        scorer.shutdown()
        _wait(lambda: not hub.snapshot()["modules"]["scorer"]["connected"])
        hub.ttl = 0.2
        gen.send_message_to_output(Message(b"late"), "samples")
        time.sleep(0.4)
        scorer = _client(hub, "scorer", keys["scorer"], certs.ca, monkeypatch)
        got.clear()
        scorer.on_message_received = got.append
        scorer.connect()
        _wait(lambda: hub.snapshot()["modules"]["scorer"]["counts"]["expired"] == 1)
        assert got == []
        scorer.shutdown()
    finally:
        gen.shutdown()


def test_sas_and_diff():
    key = os.urandom(32)
    import hashlib
    import hmac
    import urllib.parse

    sr = urllib.parse.quote("h/devices/d/modules/m", safe="")
    se = str(int(time.time()) + 60)
    sig = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    token = f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}".encode()
    assert check_sas(token, "h/devices/d/modules/m", key, time.time())
    assert not check_sas(token, "h/devices/d/modules/other", key, time.time())
    assert not check_sas(token, "h/devices/d/modules/m", os.urandom(32), time.time())
    assert not check_sas(token, "h/devices/d/modules/m", key, time.time() + 120)
    assert diff_patch({"a": 1, "b": {"c": 1, "d": 2}, "$version": 3}, {"a": 1, "b": {"c": 2}, "e": 5}) == {
        "b": {"c": 2, "d": None},
        "e": 5,
    }
