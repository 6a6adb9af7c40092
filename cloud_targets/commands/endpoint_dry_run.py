"""``--dry-run`` for an endpoint version (``endpoint deployment create/update``, ``deploy`` with AKSENDPOINT).

The whole endpoint as the change would leave it: on Kubernetes every object (the versions' and the router's
or the HTTPRoute) as YAML with Secret values emptied, the new version's image as ``<registry>/<repo>:dry-run``;
locally the plan (versions, shares, ports when known). Nothing is built, started, pushed or sent.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from cloud_targets.commands.common import Warnings, echo
from cloud_targets.commands.deploy import REGISTRY_ENV, dry_run_image
from packager.cli.output import print_json


def endpoint_dry_run(
    ep: Any,
    version: str,
    config: Any,
    *,
    models: list[str],
    as_json: bool,
    warnings: Warnings,
    head: dict[str, Any] | None = None,
    all_traffic: bool = False,
    traffic_percentile: float | None = None,
    is_default: bool = False,
    is_control_version_type: bool | None = None,
) -> None:
    """Print endpoint ``ep`` as adding (or replacing) ``version`` with ``config`` would leave it."""
    record = ep._record
    registry = (record.deployment_target or {}).get("image_registry") or os.environ.get(REGISTRY_ENV)
    exists = record.version(version) is not None
    after, spec = ep.preview(
        version,
        config,
        dry_run_image(registry, f"{ep.name}-{version}"),
        models=models,
        traffic_percentile=traffic_percentile,
        is_default=is_default,
        is_control_version_type=is_control_version_type,
        all_traffic=all_traffic,
    )
    head = {"dryRun": True, "endpoint": ep.name, "version": version, "computeType": record.compute_type, **(head or {})}
    if record.compute_type != "LOCAL":
        if not registry:
            warnings.add([f"no image registry: set --image-registry or ${REGISTRY_ENV} before deploying (shown as "
                          "<registry>)"])  # fmt: skip
        _print_objects(ep.preview_objects(spec), head, as_json, warnings)
        return
    running = (record.target or {}).get("versions") or {}
    rows = [
        {
            "name": v.name,
            "traffic": v.traffic,
            "default": v.default,
            "change": ("replaced" if exists else "new") if v.name == version else "unchanged",
            "port": None if v.name == version else (running.get(v.name) or {}).get("port"),
        }
        for v in after.versions
    ]
    port = (record.target or {}).get("port") or record.port
    if as_json:
        print_json({**head, "mode": record.mode, "port": port, "versions": rows, "warnings": list(warnings.seen)})
        return
    echo(f"would {'replace' if exists else 'add'} deployment {version} of endpoint {ep.name} (LOCAL, "
         f"{record.mode or 'process'} mode, router on port {port or 'a free one'}):")  # fmt: skip
    for row in rows:
        where = f"port {row['port']}" if row["port"] else "a free port" if row["change"] != "unchanged" else "-"
        flag = " default" if row["default"] else ""
        echo(f"  {row['name']:<16} {row['traffic']:>5g}%  {row['change']:<9} {where}{flag}")
    echo("nothing was built or started (--dry-run)")


def _print_objects(objects: list[dict[str, Any]], head: dict[str, Any], as_json: bool, warnings: Warnings) -> None:
    from cloud_targets.targets.kubernetes import to_yaml
    from cloud_targets.targets.kubernetes.objects import redacted

    if as_json:
        print_json({**head, "objects": [redacted(o) for o in objects], "warnings": list(warnings.seen)})
    else:
        sys.stdout.write(to_yaml(objects))


__all__ = ["endpoint_dry_run"]
