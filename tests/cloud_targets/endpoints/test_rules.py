"""v1's rules on versions and splits: refused with an error naming the fix, before anything is built or changed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_targets import Endpoint, WebserviceException
from cloud_targets.endpoints import EndpointInputError, EndpointNotFoundError
from cloud_targets.endpoints.store import EndpointStore
from packager import Workspace
from packager.errors import ConflictError
from tests.cloud_targets.endpoints.support import app, register


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("EDGEPACK_LOCAL_MODE", "process")
    workspace = Workspace.from_path(tmp_path / "ws")
    yield workspace
    for ep in Endpoint.list(workspace):
        ep.delete()


@pytest.fixture
def ep(ws: Workspace, tmp_path: Path) -> Endpoint:
    """blue (default, control) at 60 %, green at 30 %: 10 % unassigned goes to blue."""
    ep = Endpoint.create(ws, "rules-ep", auth_mode="none")
    model = register(ws, tmp_path, 2)
    ep.create_version("blue", [model], app(tmp_path, "blue"), traffic_percentile=60, is_control_version_type=True)
    ep.create_version("green", [model], app(tmp_path, "green"), traffic_percentile=30)
    return ep


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(WebserviceException) as exc:
        call(*args, **kwargs)
    assert isinstance(exc.value, EndpointInputError | EndpointNotFoundError)
    return str(exc.value)


def test_bad_splits_and_flags_change_nothing(ep: Endpoint, ws: Workspace, tmp_path: Path) -> None:
    before = EndpointStore(ws).read(ep.name)
    model = register(ws, tmp_path, 4)
    ic = app(tmp_path, "red")
    assert "give a number from 0 to 100, not 120" in refused(ep.create_version, "red", [model], ic,
                                                              traffic_percentile=120)  # fmt: skip
    assert "not -1" in refused(ep.update_version, "green", traffic_percentile=-1)
    assert "traffic shares add up to 110 (> 100)" in refused(ep.create_version, "red", [model], ic,
                                                              traffic_percentile=20)  # fmt: skip
    assert "lower some" in refused(ep.update_version, "green", traffic_percentile=50)
    assert "at most one control version per endpoint: blue, green" in refused(
        ep.update_version, "green", is_control_version_type=True
    )
    assert "make another version the default" in refused(ep.update_version, "blue", is_default=False)
    assert "sums to exactly 100" in refused(ep.set_traffic, {"blue": 50, "green": 40})
    assert "no version purple" in refused(ep.set_traffic, {"purple": 100})
    assert "no version 'purple'" in refused(ep.delete_version, "purple")
    assert "version name 'Red_1' is invalid" in refused(ep.create_version, "Red_1", [model], ic)
    with pytest.raises(ConflictError, match="already has a version 'green'"):
        ep.create_version("green", [model], ic)
    after = EndpointStore(ws).read(ep.name)
    assert after.revision == before.revision and after.target == before.target  # nothing was applied
    assert {v.name: (v.traffic, v.default, v.control) for v in after.versions} == {
        "blue": (60.0, True, True),
        "green": (30.0, False, False),
    }


def test_flags_move_and_default_heir(ep: Endpoint, caplog: pytest.LogCaptureFixture) -> None:
    ep.update_version("blue", is_control_version_type=False)
    ep.update_version("green", traffic_percentile=40, is_default=True, is_control_version_type=True)  # v1's docs
    assert {n: (v.traffic_percentile, v.is_default, v.is_control_version_type) for n, v in ep.versions.items()} == {
        "blue": (60.0, False, False),
        "green": (40.0, True, True),
    }
    ep.set_traffic({"blue": 70, "green": 30})
    with caplog.at_level(logging.WARNING, logger="cloud_targets"):
        ep.delete_version("green")  # the default: the flag moves to the remaining version with the largest share
    assert "blue is the default now" in caplog.text
    assert ep.versions["blue"].is_default and ep.run({"x": 3}) == {"version": "blue", "weight": 2, "y": 6}


def test_missing_and_duplicate_endpoints(ws: Workspace) -> None:
    with pytest.raises(EndpointNotFoundError, match=r"no endpoint named 'nope'.*edgepack endpoint list"):
        Endpoint(ws, "nope")
    Endpoint.create(ws, "twice", auth_mode="none")
    with pytest.raises(ConflictError, match="already exists"):
        Endpoint.create(ws, "twice")
    with pytest.raises(EndpointInputError, match="auth_mode 'secret'"):
        Endpoint.create(ws, "other", auth_mode="secret")
    assert [e.name for e in Endpoint.list(ws)] == ["twice"]
