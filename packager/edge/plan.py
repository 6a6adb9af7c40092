"""What ``edgepack edge run`` starts: a deployment manifest read into modules, twins and routes.

Only a full deployment (``modulesContent`` with ``$edgeAgent`` and ``$edgeHub``) runs; it is checked
with :func:`packager.iotedge.validate.validate_manifest` first, so a broken manifest starts nothing.
``systemModules`` (edgeAgent, edgeHub) are played by the runtime itself and not started.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError
from packager.iotedge.create_options import from_settings
from packager.iotedge.routes import Route, parse_routes
from packager.iotedge.validate import MAX_FILE_BYTES, validate_manifest

RESTART_POLICIES = ("always", "on-failure", "on-unhealthy", "never")


@dataclass(frozen=True)
class ModulePlan:
    name: str
    image: str
    env: dict[str, str]
    create_options: dict[str, Any]
    restart_policy: str = "always"
    status: str = "running"
    startup_order: int = 4294967295  # the edge agent's default: after every module that has one
    image_pull_policy: str = "on-create"


@dataclass(frozen=True)
class Plan:
    modules: dict[str, ModulePlan]  # in startup order
    desired: dict[str, dict[str, Any]]  # module twin desired properties
    routes: dict[str, Route]
    ttl: float = 7200.0
    route_texts: dict[str, Any] = field(default_factory=dict)


def load_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInputError(f"{p}: {size} bytes; a deployment manifest is at most {MAX_FILE_BYTES}")
        doc = json.loads(p.read_bytes())
    except OSError as e:
        raise InvalidInputError(f"cannot read {p}: {e.strerror or e}") from e
    except ValueError as e:
        raise InvalidInputError(f"{p} is not JSON: {e}") from e
    return doc


def plan_from_manifest(doc: Any, where: str = "manifest") -> Plan:
    """The :class:`Plan` of a full deployment; :class:`InvalidInputError` listing problems otherwise."""
    problems = validate_manifest(doc)
    if problems:
        shown = "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidInputError(f"{where} is not a valid deployment: {shown}{more} (see `edgepack manifest validate`)")
    content = doc.get("modulesContent") if isinstance(doc, dict) else None
    if not isinstance(content, dict) or "$edgeAgent" not in content or "$edgeHub" not in content:
        raise InvalidInputError(f"{where}: only a full deployment (modulesContent with $edgeAgent and $edgeHub) runs")
    agent = content["$edgeAgent"]["properties.desired"]
    hub = content["$edgeHub"]["properties.desired"]
    modules = []
    for name, m in (agent.get("modules") or {}).items():
        settings = m.get("settings") or {}
        env = {k: str(v.get("value", "")) for k, v in (m.get("env") or {}).items() if isinstance(v, dict)}
        policy = m.get("restartPolicy", "always")
        if policy not in RESTART_POLICIES:
            raise InvalidInputError(
                f"{where}: module {name}: restartPolicy {policy!r} is not one of {RESTART_POLICIES}"
            )
        modules.append(
            ModulePlan(
                name=name,
                image=settings["image"],
                env=env,
                create_options=from_settings(settings, f"module {name} settings"),
                restart_policy=policy,
                status=m.get("status", "running"),
                startup_order=int(m.get("startupOrder", 4294967295)),
                image_pull_policy=m.get("imagePullPolicy", "on-create"),
            )
        )
    modules.sort(key=lambda mp: mp.startup_order)  # stable: manifest order within one startupOrder
    desired = {}
    for name in (mp.name for mp in modules):
        twin = content.get(name, {}).get("properties.desired", {})
        desired[name] = {k: copy.deepcopy(v) for k, v in twin.items() if not k.startswith("$")}
    routes_doc = hub.get("routes") or {}
    ttl = float((hub.get("storeAndForwardConfiguration") or {}).get("timeToLiveSecs", 7200))
    return Plan({mp.name: mp for mp in modules}, desired, parse_routes(routes_doc), ttl, dict(routes_doc))
