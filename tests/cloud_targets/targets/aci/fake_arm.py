"""A local HTTPS stand-in for Azure Resource Manager's container group API (api-version 2023-05-01).

Records every request the SDK sends and answers as ARM does: PUT creates or updates a group (at once, or
``Creating`` with an ``Azure-AsyncOperation`` to poll), GET returns it with its instance view (secure values
stripped, as ARM does), DELETE removes it, ``.../containers/NAME/logs`` returns the log tail. ``fail_with``
makes the next answer an ARM error. TLS with a throwaway CA (``make_tls``); 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.cloud_targets.fake_iothub import Recorded, make_tls

GROUP_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerInstance/"
    r"containerGroups/(?P<name>[^/]+)(?P<rest>/containers/(?P<container>[^/]+)/logs)?$"
)


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@dataclass
class FakeArm:
    """Plays ARM's Microsoft.ContainerInstance/containerGroups endpoints over HTTPS on 127.0.0.1."""

    tls_dir: Path
    asynchronous: bool = False  # PUT answers 201 Creating + Azure-AsyncOperation, polled to Succeeded
    container_state: str = "Running"  # the container's instanceView.currentState.state once provisioned
    provisioning_result: str = "Succeeded"  # or "Failed": the group's provisioningState once provisioned
    logs: list[str] = field(default_factory=lambda: [f"line {i}" for i in range(1, 11)])
    requests: list[Recorded] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_with: tuple[int, dict[str, Any]] | None = None
    _operations: dict[str, list[str]] = field(default_factory=dict)  # id -> statuses still to answer
    _operation_group: dict[str, str] = field(default_factory=dict)  # id -> group name
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.ca, cert, key = make_tls(self.tls_dir)
        arm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                query = urllib.parse.parse_qs(url.query)
                arm.requests.append(Recorded(self.command, url.path, query, dict(self.headers), body))
                status, answer, headers = arm._answer(self.command, url.path, query, body)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any, dict]:
        if self.fail_with is not None:
            status, answer = self.fail_with
            self.fail_with = None
            return status, answer, {}
        if path.startswith("/asyncops/") and method == "GET":
            steps = self._operations[path.rsplit("/", 1)[1]]
            status = steps.pop(0) if len(steps) > 1 else steps[0]
            if status != "InProgress":
                self._provisioned(self._operation_group[path.rsplit("/", 1)[1]])
            answer: dict[str, Any] = {"status": status}
            if status == "Failed":
                answer["error"] = {"code": "ContainerGroupDeploymentFailed", "message": "image pull failed"}
            return 200, answer, {"Retry-After": "0"}
        match = GROUP_PATH.match(path)
        if not match or query.get("api-version") != ["2023-05-01"]:
            return 400, arm_error("InvalidRequest", f"unexpected {method} {path}"), {}
        name = match["name"]
        if match["rest"]:
            if name not in self.groups or match["container"] != name:
                return 404, arm_error("ResourceNotFound", f"container {match['container']} not found"), {}
            tail = int(query.get("tail", ["0"])[0]) or len(self.logs)
            return 200, {"content": "\n".join(self.logs[-tail:]) + "\n"}, {}
        if method == "PUT":
            request = json.loads(body)
            existed = name in self.groups
            group = self._stored(path, name, request)
            self.groups[name] = group
            if self.asynchronous:
                group["properties"]["provisioningState"] = "Creating"
                op = str(next(self._ids))
                self._operations[op] = ["InProgress", self.provisioning_result]
                self._operation_group[op] = name
                headers = {"Azure-AsyncOperation": f"{self.base_url}/asyncops/{op}", "Retry-After": "0"}
                return 201, self._public(group), headers
            self._provisioned(name)
            return (200 if existed else 201), self._public(group), {}
        if name not in self.groups:
            if method == "DELETE":
                return 204, None, {}
            return 404, arm_error("ResourceNotFound", f"The Resource '.../containerGroups/{name}' was not found."), {}
        if method == "GET":
            return 200, self._public(self.groups[name]), {}
        if method == "DELETE":
            return 200, self._public(self.groups.pop(name)), {}
        return 405, arm_error("MethodNotAllowed", method), {}

    def _stored(self, path: str, name: str, request: dict[str, Any]) -> dict[str, Any]:
        group = copy.deepcopy(request)
        group.update(id=path, name=name, type="Microsoft.ContainerInstance/containerGroups")
        props = group["properties"]
        props["provisioningState"] = "Pending"
        address = props.get("ipAddress")
        if address is not None:
            address["ip"] = "20.1.2.3" if address.get("type") == "Public" else "10.0.0.4"
            if address.get("dnsNameLabel"):
                address["fqdn"] = f"{address['dnsNameLabel']}.{group['location']}.azurecontainer.io"
        return group

    def _provisioned(self, name: str) -> None:
        group = self.groups.get(name)
        if group is None:
            return
        props = group["properties"]
        props["provisioningState"] = self.provisioning_result
        props["instanceView"] = {"state": "Running" if self.container_state == "Running" else "Pending"}
        for container in props["containers"]:
            container["properties"]["instanceView"] = {
                "restartCount": 0 if self.container_state == "Running" else 3,
                "currentState": {"state": self.container_state, "detailStatus": ""},
                "events": [] if self.container_state == "Running" else [{"message": "Back-off restarting"}],
            }

    @staticmethod
    def _public(group: dict[str, Any]) -> dict[str, Any]:
        """The group as ARM returns it: secure values and registry passwords never come back."""
        shown = copy.deepcopy(group)
        for container in shown["properties"]["containers"]:
            for variable in container["properties"].get("environmentVariables", []):
                variable.pop("secureValue", None)
        for credential in shown["properties"].get("imageRegistryCredentials", []):
            credential.pop("password", None)
        return shown
