"""Endpoints: several versions of a service behind one URI, each taking a share of the traffic.

v1's ``AksEndpoint`` (versions with ``traffic_percentile``, ``is_default``, ``is_control_version_type``)
and v2's managed online endpoints (``endpoint.yml`` + blue/green deployment YAMLs, a ``traffic`` map)
map onto one model: :class:`cloud_targets.endpoints.spec.EndpointSpec`. Each version is a web service
(its own image, settings and secrets); the split is done by the router
(:mod:`edge_module.router`) locally, and on Kubernetes by the cluster's Gateway API ``HTTPRoute``
weights or the same router as its own Deployment.
"""

from cloud_targets.endpoints.endpoint import (
    AksEndpoint,
    Endpoint,
    EndpointInputError,
    EndpointNotFoundError,
    EndpointVersion,
)
from cloud_targets.endpoints.registry import register_endpoint_target

__all__ = [
    "AksEndpoint",
    "Endpoint",
    "EndpointInputError",
    "EndpointNotFoundError",
    "EndpointVersion",
    "register_endpoint_target",
]
