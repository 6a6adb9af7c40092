"""createOptions: written as the edge agent reads them (512-character chunks, at most 8) and joined back."""

from __future__ import annotations

import json

import pytest

from packager.errors import InvalidInputError
from packager.iotedge import create_options as co


def test_small_options_stay_in_one_string() -> None:
    settings = co.to_settings(co.host_network())
    assert list(settings) == ["createOptions"]
    assert json.loads(settings["createOptions"]) == co.host_network()


def test_large_options_are_split_and_joined_back() -> None:
    options = co.merge(co.host_network(), co.port_bindings({5001: 8080}), {"Env": ["A=" + "x" * 1500]})
    settings = co.to_settings(options)
    assert list(settings) == ["createOptions", "createOptions01", "createOptions02", "createOptions03"]
    assert all(len(v) <= 512 for v in settings.values())
    assert co.from_settings(settings) == options


def test_more_than_eight_chunks_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at most 8 chunks"):
        co.to_settings({"Env": ["A=" + "x" * 4100]})


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"createOptions": "{", "image": "x"}, "not valid JSON"),
        ({"createOptions": {"HostConfig": {}}}, "must be a JSON string"),
        ({"createOptions": "{}", "createOptions02": "x"}, "createOptions02 without createOptions01"),
        ({"createOptions": "[]"}, "must be a JSON object"),
        ({"createOptions": "{}", "createOptions08": "x"}, "not a createOptions chunk"),
        ({"createOptions": "x" * 513}, "513 characters"),
    ],
)
def test_bad_chunks_name_the_problem(settings: dict, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        co.from_settings(settings, "modules.scorer.settings")


def test_helpers() -> None:
    merged = co.merge(co.binds(["/data:/data:ro"]), co.devices(["/dev/xdma0"]), co.limits(memory_mb=256, cpus=0.5))
    host = merged["HostConfig"]
    assert host["Binds"] == ["/data:/data:ro"]
    device = {"PathOnHost": "/dev/xdma0", "PathInContainer": "/dev/xdma0", "CgroupPermissions": "rwm"}
    assert host["Devices"] == [device]
    assert host["Memory"] == 256 * 2**20 and host["NanoCpus"] == 500_000_000
    with pytest.raises(InvalidInputError):
        co.devices(["xdma0"])
    with pytest.raises(InvalidInputError):
        co.binds(["nocolon"])
