"""v1's ``deployment_target`` for the remote targets: which cluster or resource group a service goes to.

``Model.deploy(..., deployment_target=KubernetesCompute(context="aks-prod"))`` or
``AciCompute(subscription_id, resource_group, location)``; left out, both are read from the environment
(:meth:`KubernetesCompute.from_env`, :meth:`AciCompute.from_env`). What a service needs to be found again
(context, kubeconfig path, resource group...) is kept in its record as plain data (:meth:`handle`); the
Azure credential object is not: later calls in the same process reuse the one given at deploy time, a new
process signs in with ``DefaultAzureCredential``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packager.errors import InvalidInputError

ENV_KUBE_CONTEXT = "EDGEPACK_KUBE_CONTEXT"
ENV_KUBE_GATEWAY = "EDGEPACK_KUBE_GATEWAY"
ENV_IMAGE_REGISTRY = "EDGEPACK_IMAGE_REGISTRY"
ENV_SUBSCRIPTION = "AZURE_SUBSCRIPTION_ID"
ENV_RESOURCE_GROUP = "EDGEPACK_ACI_RESOURCE_GROUP"
ENV_LOCATION = "EDGEPACK_ACI_LOCATION"
SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "NodePort")


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


@dataclass
class KubernetesCompute:
    """A Kubernetes cluster (AKS or any other): a kubeconfig context and the registry its nodes pull from.

    ``context`` defaults to the kubeconfig's current one ($EDGEPACK_KUBE_CONTEXT), ``kubeconfig`` to
    $KUBECONFIG or ~/.kube/config, ``image_registry`` (where the image is pushed, e.g.
    ``myacr.azurecr.io/models``) to $EDGEPACK_IMAGE_REGISTRY. ``service_type`` is the Kubernetes Service's
    type (``LoadBalancer`` gives the service a public address of its own). ``gateway`` (``namespace/name`` of a
    Gateway API Gateway, default $EDGEPACK_KUBE_GATEWAY) makes endpoints split traffic with an HTTPRoute
    attached to it instead of the edgepack router.
    """

    context: str | None = None
    kubeconfig: str | None = None
    image_registry: str | None = None
    service_type: str = "ClusterIP"
    gateway: str | None = None

    def __post_init__(self) -> None:
        if self.service_type not in SERVICE_TYPES:
            raise InvalidInputError(
                f"service_type {self.service_type!r} is not a Kubernetes Service type: use {', '.join(SERVICE_TYPES)}"
            )
        if self.kubeconfig:
            self.kubeconfig = os.path.abspath(os.path.expanduser(self.kubeconfig))

    @classmethod
    def from_env(cls) -> KubernetesCompute:
        return cls(context=_env(ENV_KUBE_CONTEXT), image_registry=_env(ENV_IMAGE_REGISTRY))

    def resolved(self) -> KubernetesCompute:
        """This compute with the values it leaves out taken from the environment."""
        return KubernetesCompute(
            context=self.context or _env(ENV_KUBE_CONTEXT),
            kubeconfig=self.kubeconfig,
            image_registry=self.image_registry or _env(ENV_IMAGE_REGISTRY),
            service_type=self.service_type,
            gateway=self.gateway or _env(ENV_KUBE_GATEWAY),
        )

    def handle(self) -> dict[str, Any]:
        """What the service record keeps (no secret)."""
        return {
            "context": self.context,
            "kubeconfig": self.kubeconfig,
            "image_registry": self.image_registry,
            "service_type": self.service_type,
            "gateway": self.gateway,
        }

    @classmethod
    def from_handle(cls, handle: Mapping[str, Any]) -> KubernetesCompute:
        return cls(
            context=handle.get("context"),
            kubeconfig=handle.get("kubeconfig"),
            image_registry=handle.get("image_registry"),
            service_type=handle.get("service_type") or "ClusterIP",
            gateway=handle.get("gateway"),
        )


# credentials given at deploy time, reused by later calls in this process (never written anywhere)
_CREDENTIALS: dict[tuple[str, str, str | None], Any] = {}


@dataclass
class AciCompute:
    """An Azure subscription and resource group for ACI container groups, and the registry ACI pulls from.

    Left out: ``subscription_id`` from $AZURE_SUBSCRIPTION_ID, ``resource_group`` from
    $EDGEPACK_ACI_RESOURCE_GROUP, ``location`` from the deployment configuration or $EDGEPACK_ACI_LOCATION,
    ``image_registry`` from $EDGEPACK_IMAGE_REGISTRY, ``credential`` is azure-identity's
    ``DefaultAzureCredential``; ``base_url`` is ARM's endpoint (Azure's public cloud by default).
    """

    subscription_id: str | None = None
    resource_group: str | None = None
    location: str | None = None
    image_registry: str | None = None
    credential: Any = field(default=None, repr=False)
    base_url: str | None = None

    @classmethod
    def from_env(cls) -> AciCompute:
        return cls().resolved()

    def resolved(self) -> AciCompute:
        """This compute with the values it leaves out taken from the environment (checked: both ids are needed)."""
        out = AciCompute(
            subscription_id=self.subscription_id or _env(ENV_SUBSCRIPTION),
            resource_group=self.resource_group or _env(ENV_RESOURCE_GROUP),
            location=self.location or _env(ENV_LOCATION),
            image_registry=self.image_registry or _env(ENV_IMAGE_REGISTRY),
            credential=self.credential,
            base_url=self.base_url,
        )
        missing = [
            what
            for what, value, env in (
                ("subscription_id", out.subscription_id, ENV_SUBSCRIPTION),
                ("resource_group", out.resource_group, ENV_RESOURCE_GROUP),
            )
            if not value
        ]
        if missing:
            raise InvalidInputError(
                f"an ACI deployment needs {' and '.join(missing)}: pass deployment_target=AciCompute(subscription_id="
                f"..., resource_group=...), or set {ENV_SUBSCRIPTION} and {ENV_RESOURCE_GROUP}"
            )
        if out.credential is not None:
            _CREDENTIALS[out._key()] = out.credential
        else:
            out.credential = _CREDENTIALS.get(out._key())
        return out

    def _key(self) -> tuple[str, str, str | None]:
        return (str(self.subscription_id), str(self.resource_group), self.base_url)

    def handle(self) -> dict[str, Any]:
        """What the service record keeps (never the credential)."""
        return {
            "subscription_id": self.subscription_id,
            "resource_group": self.resource_group,
            "location": self.location,
            "image_registry": self.image_registry,
            "base_url": self.base_url,
        }

    @classmethod
    def from_handle(cls, handle: Mapping[str, Any]) -> AciCompute:
        return cls(
            subscription_id=handle.get("subscription_id"),
            resource_group=handle.get("resource_group"),
            location=handle.get("location"),
            image_registry=handle.get("image_registry"),
            base_url=handle.get("base_url"),
        ).resolved()


def image_registry_of(deployment_target: Any) -> str | None:
    """Where a remote service's image is pushed: the target's ``image_registry``, else $EDGEPACK_IMAGE_REGISTRY."""
    if isinstance(deployment_target, Mapping):
        registry = deployment_target.get("image_registry")
    else:
        registry = getattr(deployment_target, "image_registry", None)
    return registry or _env(ENV_IMAGE_REGISTRY)


__all__ = ["AciCompute", "KubernetesCompute", "image_registry_of"]
