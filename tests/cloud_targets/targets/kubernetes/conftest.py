"""Fixtures of the Kubernetes target tests."""

from tests.cloud_targets.targets.kubernetes.gateway_schema import gateway_schema

__all__ = ["gateway_schema"]
