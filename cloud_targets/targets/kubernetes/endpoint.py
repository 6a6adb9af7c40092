"""``KubernetesEndpointTarget``: an endpoint's versions and its traffic split on one cluster, changed without
dropping a request.

``apply`` order: the versions that are new or changed are applied and waited for (rolled out, ready); then
the split is switched (the HTTPRoute, or the router's ConfigMap and Deployment); in router mode it waits until
every router pod reports the new routes revision (``GET /-/router`` through the API server's pod proxy), or,
where that cannot be observed (no ``pods/proxy`` rights), for a grace period covering the kubelet's ConfigMap
sync; only then are the versions no longer in the spec deleted. See :mod:`endpoint_objects` for the objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from cloud_targets.endpoints.registry import register_endpoint_target
from cloud_targets.endpoints.spec import EndpointDeployed, EndpointSpec
from cloud_targets.targets.base import FAILED, HEALTHY, TargetStatus
from cloud_targets.targets.compute import KubernetesCompute
from cloud_targets.targets.kubernetes.client import KubernetesError, KubernetesTarget
from cloud_targets.targets.kubernetes.endpoint_objects import (
    ENDPOINT_LABEL,
    GATEWAY_API,
    ROLE_LABEL,
    VERSION_LABEL,
    endpoint_namespace,
    endpoint_objects,
    object_name,
    parse_gateway,
    routes_config_name,
    split_objects,
    version_objects,
)
from cloud_targets.targets.kubernetes.objects import redacted, to_dict
from cloud_targets.targets.kubernetes.rollout import rollout_status, service_state, stuck_pods
from packager.errors import NotFoundError

log = logging.getLogger(__name__)

ENV_GATEWAY = "EDGEPACK_KUBE_GATEWAY"
ROUTER = "(router)"  # the router's key in state() and logs(), as for local endpoints
# the kubelet refreshes mounted ConfigMaps on its sync period plus its cache TTL (about 60 s + 60 s by default)
DEFAULT_PROPAGATION_GRACE = 120.0


def fingerprint(objects: list[Any]) -> str:
    """A hash of a version's objects (Secret values left out: the Deployment carries their salted hash)."""
    bodies = [redacted(to_dict(o)) for o in objects]
    return hashlib.sha256(json.dumps(bodies, sort_keys=True).encode()).hexdigest()[:16]


class KubernetesEndpointTarget:
    """Endpoints on the cluster ``compute`` names; implements :class:`cloud_targets.endpoints.spec.EndpointTarget`.

    ``gateway`` (``namespace/name``, default ``compute.gateway`` or $EDGEPACK_KUBE_GATEWAY) selects the
    Gateway API mode; without it the edgepack router carries the split.
    """

    compute_type: ClassVar[str] = "AKS"

    def __init__(
        self,
        compute: KubernetesCompute | None = None,
        *,
        gateway: str | None = None,
        kube: KubernetesTarget | None = None,
        rollout_timeout: float = 600.0,
        poll_seconds: float = 2.0,
        propagation_grace: float = DEFAULT_PROPAGATION_GRACE,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.compute = (compute or KubernetesCompute()).resolved()
        self.gateway = gateway or getattr(self.compute, "gateway", None) or os.environ.get(ENV_GATEWAY) or None
        self.kube = kube or KubernetesTarget(context=self.compute.context, kubeconfig=self.compute.kubeconfig)
        self.rollout_timeout = rollout_timeout
        self.poll_seconds = poll_seconds
        self.propagation_grace = propagation_grace
        self.progress = progress or (lambda line: log.info("%s", line))

    @property
    def mode(self) -> str:
        return "gateway" if self.gateway else "router"

    # -- apply -------------------------------------------------------------------------------------------------
    def plan(self, spec: EndpointSpec, previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every object :meth:`apply` would write for ``spec`` (``--dry-run``): nothing is read or sent."""
        namespace = endpoint_namespace(spec, current=(previous or {}).get("namespace"))
        return endpoint_objects(spec, namespace, self.mode, self.gateway, service_type=self.compute.service_type)

    def apply(self, spec: EndpointSpec, previous: Mapping[str, Any] | None = None) -> EndpointDeployed:
        previous = previous or {}
        namespace = endpoint_namespace(spec, current=previous.get("namespace"))
        before: dict[str, Any] = dict(previous.get("versions") or {})
        per_version = version_objects(spec, namespace, mode=self.mode)
        routed = bool(spec.versions)  # no version: nothing to route to (and no image to run a router from)
        split = (
            split_objects(spec, namespace, self.mode, self.gateway, service_type=self.compute.service_type)
            if routed
            else []
        )
        if namespace != "default":
            self.kube.apply_one({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        # 1. versions that are new or changed, each waited for
        versions: dict[str, dict[str, str]] = {}
        for name, objects in per_version.items():
            service = object_name(spec.name, name)
            mark = fingerprint(objects)
            versions[name] = {"service": service, "fingerprint": mark}
            if (before.get(name) or {}).get("fingerprint") == mark and self._has_deployment(service, namespace):
                continue
            self.progress(f"version {name}: applying {service}")
            self.kube.apply(objects)
        for name in per_version:
            if (before.get(name) or {}).get("fingerprint") != versions[name]["fingerprint"]:
                self.kube.wait_for_rollout(
                    versions[name]["service"],
                    namespace,
                    self.rollout_timeout,
                    self.progress,
                    poll_seconds=self.poll_seconds,
                )
        # 2. the split
        self.progress(f"endpoint {spec.name}: switching the split ({self.mode}, revision {spec.revision})")
        if not routed:
            # the split comes with the first version
            self._delete_router(spec.name, namespace)
            self.kube.delete_custom(GATEWAY_API, "HTTPRoute", object_name(spec.name), namespace)
        elif self.mode == "gateway":
            self.kube.apply(split, prune=False)
            self._delete_router(spec.name, namespace)
        else:
            self.kube.apply(split)
            router = object_name(spec.name)
            self.kube.wait_for_rollout(
                router, namespace, self.rollout_timeout, self.progress, poll_seconds=self.poll_seconds
            )
            self._wait_for_routes(spec, namespace)
            self.kube.delete_custom(GATEWAY_API, "HTTPRoute", object_name(spec.name), namespace)
        # 3. versions no longer in the spec
        for name, service in sorted(self._deployed_versions(spec.name, namespace).items()):
            if name not in per_version:
                self.progress(f"version {name}: deleting {service}")
                self.kube.delete(service, namespace)
        handle = {
            "endpoint": spec.name,
            # a version-less endpoint is not bound to a namespace yet: its first version's config picks it
            "namespace": namespace if spec.versions else previous.get("namespace"),
            "mode": self.mode,
            "gateway": self.gateway,
            "server": self.kube.host,
            "revision": spec.revision,
            "versions": versions,
            **self.compute.handle(),
        }
        uris = {n: self.kube.scoring_uri(v["service"], namespace) for n, v in versions.items()}
        scoring = self._scoring_uri(spec.name, namespace, bool(spec.versions))
        swagger = scoring[: -len("/score")] + "/swagger.json" if scoring.endswith("/score") else None
        return EndpointDeployed(scoring, handle, uris, swagger)

    def _has_deployment(self, service: str, namespace: str) -> bool:
        try:
            self.kube.deployment(service, namespace)
        except NotFoundError:
            return False
        return True

    def _deployed_versions(self, endpoint: str, namespace: str) -> dict[str, str]:
        """version -> service name of every version Deployment labelled as the endpoint's."""
        items = (
            self.kube.apps.list_namespaced_deployment(namespace, label_selector=f"{ENDPOINT_LABEL}={endpoint}").items
            or []
        )
        out = {}
        for item in items:
            labels = item.metadata.labels or {}
            if VERSION_LABEL in labels and labels.get(ROLE_LABEL) is None:
                out[labels[VERSION_LABEL]] = item.metadata.name
        return out

    def _delete_router(self, endpoint: str, namespace: str) -> None:
        self.kube.delete(object_name(endpoint), namespace)

    def _wait_for_routes(self, spec: EndpointSpec, namespace: str) -> None:
        """Until every router pod serves ``spec.revision`` (pod proxy), else for the grace period."""
        router = object_name(spec.name)
        # no endpoint key is sent: Authorization carries the kubeconfig's credential to the API server; a router
        # that answers 401 here counts as unobservable (grace period)
        deadline = time.monotonic() + max(self.propagation_grace, self.poll_seconds)
        while True:
            pods = [p.metadata.name for p in self.kube.pods(router, namespace)]
            try:
                if not pods:
                    raise KubernetesError("no router pod listed")
                seen = [json.loads(self.kube.pod_get(p, namespace, "/-/router")).get("revision") for p in pods]
            except (KubernetesError, ValueError) as err:
                self.progress(f"cannot read the routers' revision ({err}); waiting {self.propagation_grace:g} s")
                time.sleep(max(0.0, deadline - time.monotonic()))
                return
            if pods and all(isinstance(r, int) and r >= spec.revision for r in seen):
                self.progress(f"routes revision {spec.revision} in force on {len(pods)} router pod(s)")
                return
            if time.monotonic() >= deadline:
                raise KubernetesError(
                    f"the routers of endpoint {spec.name!r} still serve revisions {seen} after "
                    f"{self.propagation_grace:g} s, not {spec.revision}; versions were not removed. Check the "
                    f"ConfigMap {routes_config_name(spec.name)} and retry"
                )
            time.sleep(self.poll_seconds)

    def _scoring_uri(self, endpoint: str, namespace: str, has_router: bool = True) -> str:
        if self.mode == "router":
            if not has_router:  # the router Service's in-cluster name, once the first version brings it
                return f"http://{object_name(endpoint)}.{namespace}.svc.cluster.local/score"
            return self.kube.scoring_uri(object_name(endpoint), namespace)
        gw_ns, gw_name = parse_gateway(str(self.gateway), namespace)
        gateway = self.kube.read_custom(GATEWAY_API, "Gateway", gw_name, gw_ns) or {}
        for address in (gateway.get("status") or {}).get("addresses") or []:
            if address.get("value"):
                return f"http://{address['value']}/score"
        return f"http://{gw_name}.{gw_ns}.gateway/score"  # no address yet: the Gateway's, once it has one

    # -- state, logs, delete -----------------------------------------------------------------------------------
    def state(self, handle: Mapping[str, Any]) -> dict[str, TargetStatus]:
        """Each version's state, and the router's under ``"(router)"`` (router mode, once a version exists)."""
        namespace = str(handle.get("namespace") or "default")
        out = {name: self._status(info["service"], namespace) for name, info in (handle.get("versions") or {}).items()}
        if handle.get("mode") != "gateway" and out:
            out[ROUTER] = self._status(object_name(str(handle["endpoint"])), namespace)
        return out

    def _status(self, service: str, namespace: str) -> TargetStatus:
        try:
            deployment = self.kube.deployment(service, namespace)
        except NotFoundError as err:
            return TargetStatus(FAILED, str(err))
        pods = self.kube.pods(service, namespace)
        state = service_state(deployment, pods)
        detail = None if state == HEALTHY else "; ".join(stuck_pods(pods)) or rollout_status(deployment).message
        return TargetStatus(state, detail)

    def logs(self, handle: Mapping[str, Any], version: str | None = None, num_lines: int = 5000) -> str:
        """A version's pods' last lines; ``version`` None (or ``"(router)"``): the router's pods' in router mode,
        every version's (one header each) in gateway mode, where no router runs."""
        namespace = str(handle.get("namespace") or "default")
        versions = handle.get("versions") or {}
        if version in (None, ROUTER):
            if handle.get("mode") != "gateway":
                return self._tail(object_name(str(handle["endpoint"])), namespace, num_lines)
            return "".join(f"==> version {n} <==\n{self._tail(v['service'], namespace, num_lines)}\n"
                           for n, v in versions.items())  # fmt: skip
        info = versions.get(version)
        if info is None:
            raise NotFoundError(f"endpoint {handle.get('endpoint')!r} has no version {version!r}")
        return self._tail(info["service"], namespace, num_lines)

    def _tail(self, service: str, namespace: str, num_lines: int) -> str:
        try:
            return self.kube.logs(service, namespace, num_lines)
        except NotFoundError:
            return ""

    def delete(self, handle: Mapping[str, Any]) -> None:
        """Everything labelled as the endpoint's: the split first (no request routed to a version going away),
        then the versions. The namespace stays."""
        endpoint, namespace = str(handle["endpoint"]), str(handle.get("namespace") or "default")
        self.kube.delete_custom(GATEWAY_API, "HTTPRoute", object_name(endpoint), namespace)
        self._delete_router(endpoint, namespace)
        names = set(self._deployed_versions(endpoint, namespace).values())
        names |= {v["service"] for v in (handle.get("versions") or {}).values()}
        for service in sorted(names):
            with contextlib.suppress(NotFoundError):
                self.kube.delete(service, namespace)


def kubernetes_endpoint_target(deployment_target: Any = None, **kw: Any) -> KubernetesEndpointTarget:
    """The endpoint registry's factory for compute type AKS (a KubernetesCompute, a context name or a handle)."""
    if isinstance(deployment_target, KubernetesCompute) or deployment_target is None:
        compute = deployment_target
    elif isinstance(deployment_target, str):
        compute = KubernetesCompute(context=deployment_target)
    else:
        compute = KubernetesCompute.from_handle(deployment_target)
        kw.setdefault("gateway", deployment_target.get("gateway"))
    return KubernetesEndpointTarget(compute, **kw)


def _registry_factory(workspace: Any, endpoint_dir: Any, deployment_target: Any) -> KubernetesEndpointTarget:
    """The endpoint registry's signature (workspace, state folder, v1's deployment_target)."""
    return kubernetes_endpoint_target(deployment_target)


register_endpoint_target("AKS", _registry_factory)

__all__ = ["ENV_GATEWAY", "KubernetesEndpointTarget", "kubernetes_endpoint_target"]
