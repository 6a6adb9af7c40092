"""A minimal Kubernetes API server on 127.0.0.1 for driving the official client for real.

It records every request (method, path, query, content type, Authorization header, body) and keeps objects in
memory: server-side apply ``PATCH`` stores the applied object (bumping ``metadata.generation`` when its spec
changes), merge-patch ``PATCH`` merges (RFC 7386), ``GET`` reads an object or lists a collection filtered by
``labelSelector``, ``DELETE`` removes. Deployment status, pods and pod logs are scripted by the test.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.cloud_targets.fake_iothub import make_tls

LIST_KINDS = {
    "secrets": ("v1", "SecretList"),
    "configmaps": ("v1", "ConfigMapList"),
    "httproutes": ("gateway.networking.k8s.io/v1", "HTTPRouteList"),
    "services": ("v1", "ServiceList"),
    "pods": ("v1", "PodList"),
    "deployments": ("apps/v1", "DeploymentList"),
    "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscalerList"),
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    authorization: str | None
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _labels_match(obj: dict, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))


@dataclass
class FakeApiServer:
    requests: list[Request] = field(default_factory=list)
    objects: dict[str, dict] = field(default_factory=dict)  # object path -> object
    deployment_status: dict[str, list[dict]] = field(default_factory=dict)  # path -> statuses, one per GET
    pods: dict[str, list[dict]] = field(default_factory=dict)  # namespace -> pods
    pod_logs: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, pod) -> text
    forbidden: set[str] = field(default_factory=set)  # paths answered 403 (RBAC)
    auto_rollout: bool = False  # unscripted Deployments read back as fully rolled out
    pod_proxy: dict[tuple[str, str, str], Any] = field(default_factory=dict)  # (ns, pod, path) -> JSON answer
    tls_dir: Path | None = None  # serve HTTPS with a throwaway CA written there (``ca`` is its PEM)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                req = Request(
                    self.command,
                    url.path,
                    query,
                    self.headers.get("Content-Type"),
                    self.headers.get("Authorization"),
                    body,
                )
                with server.lock:
                    server.requests.append(req)
                    status, payload, ctype = server.answer(req)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.ca: Path | None = None
        if self.tls_dir is not None:
            self.ca, cert, key = make_tls(self.tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the API --------------------------------------------------------------------------------------------
    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict, str]:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
        return code, {**body, "code": code}, "application/json"

    def answer(self, req: Request) -> tuple[int, Any, str]:
        if req.path in self.forbidden:
            return self._status(403, "Forbidden", f"{req.method} {req.path} is forbidden")
        if req.method == "PATCH":
            return self._patch(req)
        if req.method == "DELETE":
            if self.objects.pop(req.path, None) is None:
                return self._status(404, "NotFound", f"{req.path} not found")
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}, "application/json"
        if req.method == "GET":
            return self._get(req)
        return self._status(405, "MethodNotAllowed", req.method)

    def _patch(self, req: Request) -> tuple[int, Any, str]:
        current = self.objects.get(req.path)
        if req.content_type == "application/apply-patch+yaml":
            if not req.query.get("fieldManager"):
                return self._status(400, "BadRequest", "fieldManager is required for apply requests")
            new = copy.deepcopy(req.body)
        elif req.content_type == "application/merge-patch+json":
            if current is None:
                return self._status(404, "NotFound", f"{req.path} not found")
            new = merge_patch(current, req.body)
        else:
            return self._status(415, "UnsupportedMediaType", str(req.content_type))
        meta = new.setdefault("metadata", {})
        generation = (current or {}).get("metadata", {}).get("generation", 0)
        if current is None or current.get("spec") != new.get("spec"):
            generation += 1
        meta["generation"] = generation
        meta["resourceVersion"] = str(len(self.requests))
        meta.setdefault("uid", f"uid-{meta.get('name')}")
        self.objects[req.path] = new
        return (201 if current is None else 200), new, "application/json"

    def _get(self, req: Request) -> tuple[int, Any, str]:
        parts = req.path.strip("/").split("/")
        if "proxy" in parts and "pods" in parts:  # /api/v1/namespaces/{ns}/pods/{pod}/proxy[/{path}][?path=]
            at = parts.index("proxy")
            key = (parts[at - 3], parts[at - 1], req.query.get("path") or "/" + "/".join(parts[at + 1 :]))
            if key not in self.pod_proxy:
                return self._status(404, "NotFound", f"nothing proxied at {key}")
            return 200, self.pod_proxy[key], "application/json"
        if parts[-1] == "log" and "pods" in parts:
            namespace, pod = parts[-4], parts[-2]
            text = self.pod_logs.get((namespace, pod))
            if text is None:
                return self._status(404, "NotFound", f"pod {pod} not found")
            if "tailLines" in req.query:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(req.query["tailLines"]) :])
            return 200, text.encode(), "text/plain"
        if parts[-1] in LIST_KINDS:
            api_version, kind = LIST_KINDS[parts[-1]]
            namespace = parts[-2]
            if parts[-1] == "pods":
                items = self.pods.get(namespace, [])
            else:
                prefix = req.path + "/"
                items = [o for p, o in self.objects.items() if p.startswith(prefix) and "/" not in p[len(prefix) :]]
            items = [o for o in items if _labels_match(o, req.query.get("labelSelector"))]
            return 200, {"apiVersion": api_version, "kind": kind, "metadata": {}, "items": items}, "application/json"
        obj = self.objects.get(req.path)
        if obj is None:
            return self._status(404, "NotFound", f"{req.path} not found")
        obj = copy.deepcopy(obj)
        script = self.deployment_status.get(req.path)
        if script:
            obj["status"] = script.pop(0) if len(script) > 1 else script[0]
        elif self.auto_rollout and obj.get("kind") == "Deployment":
            n = obj.get("spec", {}).get("replicas") or 1
            gen = obj["metadata"].get("generation", 1)
            obj["status"] = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "availableReplicas": n}
        return 200, obj, "application/json"


def kubeconfig(path: str, contexts: dict[str, tuple[str, str]], current: str, ca: Path | None = None) -> str:
    """Write a kubeconfig with one cluster+user per context: ``{context: (server_url, token)}``; ``ca`` goes in
    as every cluster's ``certificate-authority-data``, as AKS writes it."""
    import yaml

    cluster: dict[str, str] = {}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [
            {"name": f"{c}-cluster", "cluster": {"server": url, **cluster}} for c, (url, _) in contexts.items()
        ],
        "users": [{"name": f"{c}-user", "user": {"token": tok}} for c, (_, tok) in contexts.items()],
        "contexts": [{"name": c, "context": {"cluster": f"{c}-cluster", "user": f"{c}-user"}} for c in contexts],
    }
    with open(path, "w") as fh:
        yaml.safe_dump(doc, fh)
    return path
