"""v1's naming rules: web service names and Kubernetes namespaces."""

from __future__ import annotations

import pytest

from cloud_targets.config import DeploymentConfigError, validate_service_name
from cloud_targets.config.rules import is_valid_namespace


@pytest.mark.parametrize("name", ["abc", "my-service", "svc-2", "a" * 32, "a1b"])
def test_valid_service_names(name: str):
    assert validate_service_name(name) == name


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("ab", None),  # too short
        ("a" * 33, "a" * 32),  # too long
        ("My_Service", "my-service"),  # uppercase and underscore
        ("1service", "service"),  # starts with a digit
        ("service-", "service"),  # ends with a dash
        ("-service", "service"),
        ("svc.prod", "svc-prod"),
        ("", None),
    ],
)
def test_invalid_service_names_state_v1s_rule_and_a_fix(name: str, hint: str | None):
    with pytest.raises(DeploymentConfigError) as err:
        validate_service_name(name)
    msg = str(err.value)
    assert f"service name {name!r} is invalid" in msg
    assert "lowercase letters, numbers, or dashes, start with a letter, end with a letter or number" in msg
    assert "between 3 and 32 characters long" in msg
    if hint:
        assert msg.endswith(f"for example {hint!r}")
        assert validate_service_name(hint) == hint
    else:
        assert "for example" not in msg


def test_service_name_must_be_a_string():
    with pytest.raises(DeploymentConfigError, match="service name 123 is invalid"):
        validate_service_name(123)


@pytest.mark.parametrize(
    ("namespace", "ok"),
    [("default", True), ("ml-prod", True), ("0ns", True), ("a" * 63, True), ("a" * 64, False), ("Prod", False),
     ("ns-", False), ("-ns", False), ("ns_1", False), ("ns.a", False)],
)  # fmt: skip
def test_namespace_is_a_dns_1123_label(namespace: str, ok: bool):
    assert is_valid_namespace(namespace) is ok
