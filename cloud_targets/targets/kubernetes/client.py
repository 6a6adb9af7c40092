"""``KubernetesTarget``: one cluster (a kubeconfig context), driven with the official client's typed APIs.

Every write is standard: objects go in by server-side apply (``PATCH`` with
``Content-Type: application/apply-patch+yaml``, ``fieldManager``, ``force=true``), so re-applying is an update
and fields another manager set on purpose (an HPA's ``replicas``) are left alone. Objects of the service that a
new apply no longer contains (the HPA when autoscaling is turned off, the pull secret when credentials go away)
are pruned by label. A namespace is created only when it is missing (never patched: it may be someone else's
and writing it needs cluster-wide rights) and ``delete`` leaves it in place.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from cloud_targets.targets.kubernetes.labels import SERVICE_LABEL, selector_string
from cloud_targets.targets.kubernetes.objects import to_dict
from cloud_targets.targets.kubernetes.rollout import RolloutStatus, rollout_status, service_state, stuck_pods
from packager.errors import EdgepackError, InvalidInputError, NotFoundError

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

# kinds this target manages, in delete order (dependents first)
_KINDS = ("HorizontalPodAutoscaler", "Service", "Deployment", "ConfigMap", "Secret")


class KubernetesError(EdgepackError):
    """The API server refused a request, or a rollout failed / timed out."""


class RolloutFailed(KubernetesError):
    """The rollout cannot finish: progress deadline exceeded or pods stuck (crash loop, image pull...)."""


class RolloutTimeout(KubernetesError):
    """The rollout did not finish within the time given."""


def _api_error(action: str, err: ApiException) -> KubernetesError:
    detail = err.reason or ""
    with contextlib.suppress(ValueError, AttributeError):
        detail = json.loads(err.body or "{}").get("message") or detail
    return KubernetesError(f"{action}: the API server answered {err.status}: {detail}")


F = TypeVar("F", bound=Callable[..., Any])


def _reaching(method: F) -> F:
    """Transport failures (refused connection, untrusted certificate...) as a KubernetesError naming the server."""

    @functools.wraps(method)
    def wrapper(self: KubernetesTarget, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except urllib3.exceptions.HTTPError as err:
            reason = getattr(err, "reason", None) or err
            raise KubernetesError(
                f"cannot reach the Kubernetes API server at {self.host}: {reason}; check the kubeconfig context "
                "(`kubectl config current-context`, --context), its certificate authority and the network"
            ) from err

    return wrapper  # type: ignore[return-value]


def load_api_client(context: str | None = None, kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient for ``context`` (default: the current one) of ``kubeconfig``.

    Without ``kubeconfig``: $KUBECONFIG as it is now (a list of files is merged, as kubectl does), else
    ~/.kube/config; in a pod with neither, the pod's service account.
    """
    files = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    present = any(os.path.exists(os.path.expanduser(f)) for f in files.split(os.pathsep) if f)
    if not kubeconfig and not present and os.environ.get("KUBERNETES_SERVICE_HOST"):
        conf = client.Configuration()
        config.load_incluster_config(client_configuration=conf)
        return client.ApiClient(configuration=conf)
    try:
        return config.new_client_from_config(config_file=files, context=context)
    except ConfigException as err:
        hint = f"context {context!r} of " if context else ""
        raise InvalidInputError(
            f"cannot use {hint}kubeconfig {files}: {err}; check `kubectl config get-contexts` or pass --context"
        ) from err


# API groups served by CRDs (not the typed client): applied through CustomObjectsApi
CUSTOM_GROUPS = ("gateway.networking.k8s.io", "networking.istio.io")


def plural_of(kind: str) -> str:
    """The resource name of a custom kind (``HTTPRoute`` -> ``httproutes``), as CRDs declare it."""
    return kind.lower() + ("es" if kind.lower().endswith(("s", "x", "ch", "sh")) else "s")


class KubernetesTarget:
    """One Kubernetes cluster: apply a service's objects, follow its rollout, read logs, delete it."""

    def __init__(
        self,
        context: str | None = None,
        kubeconfig: str | None = None,
        field_manager: str = "edgepack",
        *,
        api_client: client.ApiClient | None = None,
    ) -> None:
        self.api_client = api_client or load_api_client(context, kubeconfig)
        self.field_manager = field_manager
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.autoscaling = client.AutoscalingV2Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    @property
    def host(self) -> str:
        """The API server's address."""
        return self.api_client.configuration.host

    # -- apply ------------------------------------------------------------------------------------------------
    def _patch_fn(self, kind: str) -> Callable[..., Any]:
        return {
            "Namespace": self.core.patch_namespace,
            "Secret": self.core.patch_namespaced_secret,
            "ConfigMap": self.core.patch_namespaced_config_map,
            "Service": self.core.patch_namespaced_service,
            "Deployment": self.apps.patch_namespaced_deployment,
            "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        }[kind]

    @_reaching
    def apply_one(self, obj: Any) -> Any:
        """Server-side apply of one object; returns the object as the server stored it."""
        body = to_dict(obj)
        kind, meta = body.get("kind"), body.get("metadata", {})
        group = str(body.get("apiVersion", "")).rpartition("/")[0]
        if group in CUSTOM_GROUPS:
            return self.apply_custom(body)
        try:
            patch = self._patch_fn(kind)
        except KeyError:
            raise InvalidInputError(f"the Kubernetes target does not apply objects of kind {kind!r}") from None
        if kind == "Namespace":
            existing = self._existing_namespace(meta["name"])
            if existing is not None:
                return existing
        args = (meta["name"],) if kind == "Namespace" else (meta["name"], meta["namespace"])
        try:
            return patch(*args, body, field_manager=self.field_manager, force=True, _content_type=APPLY_PATCH)
        except ApiException as err:
            raise _api_error(f"applying {kind} {meta['name']}", err) from err

    @_reaching
    def apply_custom(self, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of a custom resource (``HTTPRoute``...); a clear error when its CRD is not installed."""
        group, _, version = body["apiVersion"].rpartition("/")
        kind, meta = body["kind"], body["metadata"]
        try:
            return self.custom.patch_namespaced_custom_object(
                group,
                version,
                meta["namespace"],
                plural_of(kind),
                meta["name"],
                body,
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY_PATCH,
            )
        except ApiException as err:
            if err.status == 404:
                raise KubernetesError(
                    f"applying {kind} {meta['name']}: the cluster does not serve {group}/{version} {kind} (404); "
                    f"install its CRDs (for the Gateway API: the standard channel's install YAML) or use the "
                    "router mode (no gateway)"
                ) from err
            raise _api_error(f"applying {kind} {meta['name']}", err) from err

    @_reaching
    def read_custom(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """A custom resource, or None when it (or its CRD) is not there."""
        group, _, version = api_version.rpartition("/")
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural_of(kind), name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(f"reading {kind} {name}", err) from err

    @_reaching
    def delete_custom(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        """Delete a custom resource; False when it (or its CRD) is not there."""
        group, _, version = api_version.rpartition("/")
        try:
            self.custom.delete_namespaced_custom_object(group, version, namespace, plural_of(kind), name)
        except ApiException as err:
            if err.status == 404:
                return False
            raise _api_error(f"deleting {kind} {name}", err) from err
        return True

    @_reaching
    def pod_get(self, pod: str, namespace: str, path: str, headers: dict[str, str] | None = None) -> str:
        """``GET`` ``path`` on a pod through the API server's pod proxy (needs ``pods/proxy`` rights)."""
        try:
            response = self.core.connect_get_namespaced_pod_proxy(  # PodProxyOptions.path: not URL-escaped
                pod, namespace, path=path, _preload_content=False, _headers=headers or None
            )
        except ApiException as err:
            raise _api_error(f"reading {path} of pod {pod}", err) from err
        return response.data.decode("utf-8", "replace")

    def _existing_namespace(self, name: str) -> Any:
        """The namespace when it exists (or cannot be read: a namespace-scoped user's), so that it is only
        created, never patched: it may belong to someone else and needs cluster-wide rights to write."""
        try:
            return self.core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return None
            if err.status == 403:
                return client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
            raise _api_error(f"reading namespace {name}", err) from err

    @_reaching
    def apply(self, objects: list[Any], *, prune: bool = True) -> list[Any]:
        """Apply every object in order; then delete the service's objects that are no longer in ``objects``."""
        applied = [self.apply_one(o) for o in objects]
        if prune:
            bodies = [to_dict(o) for o in objects]
            keep = {(b["kind"], b["metadata"]["name"]) for b in bodies}
            services = {
                (b["metadata"]["labels"][SERVICE_LABEL], b["metadata"]["namespace"])
                for b in bodies
                if SERVICE_LABEL in b["metadata"].get("labels", {})
            }
            for name, namespace in services:
                for kind, item_name in self._owned(name, namespace):
                    if (kind, item_name) not in keep:
                        self._delete_one(kind, item_name, namespace)
        return applied

    # -- listing and deleting -----------------------------------------------------------------------------------
    def _list_fn(self, kind: str) -> Callable[..., Any]:
        return {
            "HorizontalPodAutoscaler": self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            "Service": self.core.list_namespaced_service,
            "Deployment": self.apps.list_namespaced_deployment,
            "ConfigMap": self.core.list_namespaced_config_map,
            "Secret": self.core.list_namespaced_secret,
        }[kind]

    def _delete_fn(self, kind: str) -> Callable[..., Any]:
        return {
            "HorizontalPodAutoscaler": self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            "Service": self.core.delete_namespaced_service,
            "Deployment": self.apps.delete_namespaced_deployment,
            "ConfigMap": self.core.delete_namespaced_config_map,
            "Secret": self.core.delete_namespaced_secret,
        }[kind]

    def _owned(self, name: str, namespace: str) -> list[tuple[str, str]]:
        """(kind, name) of every object labelled as the service's."""
        found = []
        for kind in _KINDS:
            try:
                items = self._list_fn(kind)(namespace, label_selector=selector_string(name)).items
            except ApiException as err:
                raise _api_error(f"listing {kind}s of service {name}", err) from err
            found += [(kind, item.metadata.name) for item in items or []]
        return found

    def _delete_one(self, kind: str, item_name: str, namespace: str) -> bool:
        body = client.V1DeleteOptions(propagation_policy="Foreground")
        try:
            # the raw answer: servers send the object (foreground) or a Status, which the typed client cannot
            # always read back as the kind's model
            self._delete_fn(kind)(item_name, namespace, body=body, _preload_content=False).release_conn()
        except ApiException as err:
            if err.status == 404:
                return False
            raise _api_error(f"deleting {kind} {item_name}", err) from err
        return True

    @_reaching
    def delete(self, name: str, namespace: str = "default") -> list[str]:
        """Delete every object of the service (foreground: pods go before the Deployment does); the namespace
        stays. Returns ``Kind/name`` of what was deleted."""
        return [
            f"{kind}/{item}" for kind, item in self._owned(name, namespace) if self._delete_one(kind, item, namespace)
        ]

    # -- status ------------------------------------------------------------------------------------------------
    @_reaching
    def deployment(self, name: str, namespace: str = "default") -> client.V1Deployment:
        """The service's Deployment (NotFoundError when there is none)."""
        return self._deployment(name, namespace)

    def _deployment(self, name: str, namespace: str) -> client.V1Deployment:
        try:
            return self.apps.read_namespaced_deployment(name, namespace)
        except ApiException as err:
            if err.status == 404:
                raise NotFoundError(
                    f"no deployment {name!r} in namespace {namespace!r} of {self.host}; check the name, "
                    "the namespace and the kubeconfig context"
                ) from err
            raise _api_error(f"reading deployment {name}", err) from err

    @_reaching
    def pods(self, name: str, namespace: str = "default") -> list[client.V1Pod]:
        """The service's pods (by label)."""
        try:
            return self.core.list_namespaced_pod(namespace, label_selector=selector_string(name)).items or []
        except ApiException as err:
            raise _api_error(f"listing pods of {name}", err) from err

    @_reaching
    def state(self, name: str, namespace: str = "default") -> str:
        """One of v1's Webservice states: Transitioning, Healthy, Unhealthy or Failed."""
        return service_state(self._deployment(name, namespace), self.pods(name, namespace))

    @_reaching
    def wait_for_rollout(
        self,
        name: str,
        namespace: str = "default",
        timeout: float = 600.0,
        progress: Callable[[str], None] | None = None,
        *,
        poll_seconds: float = 2.0,
        fail_fast: bool = True,
    ) -> RolloutStatus:
        """Poll the Deployment until it has rolled out, as ``kubectl rollout status`` does.

        ``progress`` gets each new status line. Raises :class:`RolloutFailed` past the progress deadline or,
        with ``fail_fast``, when a pod is stuck (crash loop, image pull error...), and :class:`RolloutTimeout`
        after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            status = rollout_status(self._deployment(name, namespace))
            if status.message != last and progress:
                progress(status.message)
            last = status.message
            if status.failed:
                raise RolloutFailed(f"{status.message}; see `edgepack service logs {name}`")
            if status.done:
                return status
            if fail_fast:
                problems = stuck_pods(self.pods(name, namespace))
                if problems:
                    raise RolloutFailed(f"deployment {name!r} cannot roll out: " + "; ".join(problems))
            if time.monotonic() >= deadline:
                raise RolloutTimeout(f"deployment {name!r} did not roll out within {timeout:g} s: {status.message}")
            time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))

    @_reaching
    def logs(self, name: str, namespace: str = "default", num_lines: int = 5000) -> str:
        """The last ``num_lines`` log lines of each of the service's pods (a header per pod when several)."""
        pods = sorted(self.pods(name, namespace), key=lambda p: p.metadata.name)
        parts = []
        for pod in pods:
            try:
                text = self.core.read_namespaced_pod_log(
                    pod.metadata.name, namespace, container=name, tail_lines=num_lines
                )
            except ApiException as err:
                text = f"(no logs: {_api_error('reading logs', err)})\n"
            parts.append(text if len(pods) == 1 else f"==> pod/{pod.metadata.name} <==\n{text}")
        return "\n".join(parts)

    @_reaching
    def roll_pods(self, name: str, namespace: str, annotations: dict[str, str]) -> None:
        """Set ``annotations`` on the Deployment's pod template: new pods replace the old ones (a rollout)."""
        try:
            self.apps.patch_namespaced_deployment(
                name,
                namespace,
                {"spec": {"template": {"metadata": {"annotations": annotations}}}},
                field_manager=self.field_manager,
                _content_type=MERGE_PATCH,
            )
        except ApiException as err:
            raise _api_error(f"rolling the pods of {name}", err) from err

    # -- addresses ---------------------------------------------------------------------------------------------
    @_reaching
    def scoring_uri(self, name: str, namespace: str = "default") -> str:
        """``http://<load balancer>/score`` once a LoadBalancer has an address, else the in-cluster DNS name."""
        try:
            svc = self.core.read_namespaced_service(name, namespace)
        except ApiException as err:
            raise _api_error(f"reading service {name}", err) from err
        port = svc.spec.ports[0].port if svc.spec and svc.spec.ports else 80
        suffix = "" if port == 80 else f":{port}"
        ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
        for entry in ingress:
            host = entry.ip or entry.hostname
            if host:
                return f"http://{host}{suffix}/score"
        return f"http://{name}.{namespace}.svc.cluster.local{suffix}/score"
