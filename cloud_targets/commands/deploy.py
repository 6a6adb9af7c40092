"""``edgepack deploy -n NAME -m MODEL[:VER]... --ic FILE --dc FILE``: v1's ``az ml model deploy``.

Everything is checked before anything is built (name, models, inference and deployment configs, an
existing service); ``--dry-run`` stops there and prints what would be deployed: the plan (Local), the
Kubernetes objects as YAML (AKS) or the container group body (ACI), secrets redacted.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import sys
from dataclasses import dataclass
from typing import Any

import click

from cloud_targets.commands.common import (
    Stages,
    Warnings,
    check_file,
    deployment_config,
    first_line,
    open_ws,
    print_log_tail,
    print_report,
    public_record,
)
from cloud_targets.config import DeploymentConfig, validate_service_name
from packager.cli.output import console, print_json, printable
from packager.errors import ConflictError, EdgepackError, InvalidInputError
from packager.image.inference_config import InferenceConfig

REGISTRY_ENV = "EDGEPACK_IMAGE_REGISTRY"
DRY_RUN_TAG = "dry-run"  # the image tag shown by --dry-run (a deploy pins the pushed image by digest)


@dataclass
class TargetFlags:
    """The flags that say where a remote service goes (``--ct``, ``--kubeconfig``, Azure ids, registry)."""

    compute_target: str | None = None
    kubeconfig: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    location: str | None = None
    image_registry: str | None = None


def deployment_target(compute_type: str, flags: TargetFlags) -> Any:
    """v1's ``deployment_target`` for ``Model.deploy`` from the CLI flags (``None`` for LOCAL).

    AKS: ``--ct`` is the kubeconfig context (``--kubeconfig`` the file); ACI: ``--subscription-id``,
    ``--resource-group``, ``--location``. Both pull from ``--image-registry``; what is left out comes from
    the environment (see :mod:`cloud_targets.targets.compute`).
    """
    if compute_type == "LOCAL":
        return None
    from cloud_targets.targets.compute import AciCompute, KubernetesCompute

    if compute_type == "AKSENDPOINT" and not (
        flags.compute_target or flags.kubeconfig or os.environ.get("EDGEPACK_KUBE_CONTEXT")
    ):
        return None  # no Kubernetes target: the endpoint runs on this machine (a warning says so)
    if compute_type in ("AKS", "AKSENDPOINT"):
        return KubernetesCompute(
            context=flags.compute_target, kubeconfig=flags.kubeconfig, image_registry=flags.image_registry
        )
    return AciCompute(
        subscription_id=flags.subscription_id,
        resource_group=flags.resource_group,
        location=flags.location,
        image_registry=flags.image_registry,
    )


@dataclass
class Request:
    """A checked deploy request: nothing has been built or sent yet."""

    workspace: Any
    name: str
    models: list[Any]
    inference_config: InferenceConfig
    config: DeploymentConfig
    target: Any
    overwrite: bool

    @property
    def compute_type(self) -> str:
        return type(self.config).compute_type


def check_request(
    ctx: click.Context,
    name: str,
    models: tuple[str, ...],
    ic: InferenceConfig | None,
    dc: str | None,
    flags: TargetFlags,
    overwrite: bool,
    warnings: Warnings,
) -> Request:
    """Every check a deploy makes before it builds anything; config warnings are printed."""
    from cloud_targets.services.store import ServiceStore
    from packager.image.builder import resolve_models

    validate_service_name(name)
    check_file(dc, "--dc")
    config, config_warnings = deployment_config(dc)
    warnings.add(config_warnings)
    compute_type = type(config).compute_type
    if compute_type == "LOCAL" and any(
        (flags.compute_target, flags.kubeconfig, flags.subscription_id, flags.resource_group)
    ):
        warnings.add(["--ct/--kubeconfig/--subscription-id/--resource-group are ignored for a LOCAL deployment"])
    ws = open_ws(ctx)
    resolved = resolve_models(ws, list(models))
    if not resolved:
        raise InvalidInputError("no model to deploy: give -m NAME[:VERSION]")
    if compute_type == "AKSENDPOINT":
        _check_endpoint_version(ws, name, config, overwrite)
    elif ServiceStore(ws).exists(name) and not overwrite:
        raise ConflictError(
            f"service {name!r} already exists: pass --overwrite to replace it, or change it with "
            f"`edgepack service update {name} ...`"
        )
    return Request(ws, name, resolved, ic or InferenceConfig(), config, deployment_target(compute_type, flags),
                   overwrite)  # fmt: skip


def _check_endpoint_version(ws: Any, name: str, config: Any, overwrite: bool) -> None:
    """AKSENDPOINT: the endpoint may exist (the version is added); the version may not, unless ``overwrite``."""
    from cloud_targets.endpoints.store import EndpointStore

    store = EndpointStore(ws)
    version = config.version_name or name
    if store.exists(name) and store.read(name).version(version) is not None and not overwrite:
        raise ConflictError(
            f"endpoint {name!r} already has a version {version!r}: pass --overwrite to replace it, or set "
            "another versionName in the deployment config"
        )


# -- deploy ---------------------------------------------------------------------------------------------------
def run_deploy(req: Request, wait: bool, as_json: bool, warnings: Warnings) -> None:
    """Build, push (remote targets), start and (unless ``wait`` is off) wait for Healthy; print the result."""
    from cloud_targets import Model, WebserviceException

    if req.compute_type == "AKSENDPOINT":
        run_endpoint_deploy(req, as_json, warnings)
        return

    where = {"LOCAL": "building and starting", "ACI": "building, pushing and creating the container group"}
    with Stages() as stages:
        with stages.stage(f"{req.name}: {where.get(req.compute_type, 'building, pushing and applying')}"):
            service = Model.deploy(req.workspace, req.name, req.models, req.inference_config, req.config,
                                   deployment_target=req.target, overwrite=req.overwrite)  # fmt: skip
        for message in service.warnings:  # the settings the target cannot honour
            warnings.add([message])
        if wait:
            with stages.stage(f"{req.name}: waiting for Healthy"):
                try:
                    service.wait_for_deployment()
                except WebserviceException as exc:
                    fail(req.name, exc)
    report(service, service.state if wait else None, as_json, warnings)


def run_endpoint_deploy(req: Request, as_json: bool, warnings: Warnings) -> None:
    """AKSENDPOINT: create the endpoint with this version, or add the version; the version serves when it returns."""
    from cloud_targets import Model

    version = getattr(req.config, "version_name", None) or req.name
    with Stages() as stages, stages.stage(f"{req.name}: building and starting version {version}"):
        endpoint = Model.deploy(req.workspace, req.name, req.models, req.inference_config, req.config,
                                deployment_target=req.target, overwrite=req.overwrite)  # fmt: skip
    doc = endpoint.serialize()
    doc["state"] = endpoint.state
    lines = [
        f"endpoint {doc['name']} ({doc['computeType']}): {doc['state']}",
        f"  scoring URI  {doc.get('scoringUri') or '-'}",
        f"  auth         {doc['authMode']}",
    ]
    for v in doc["versions"]:
        flags = ", ".join(f for f, on in (("default", v["isDefault"]), ("control", v["isControlVersionType"])) if on)
        lines.append(f"  version {v['name']:<12} {v['trafficPercentile']:g}%{f' ({flags})' if flags else ''}")
    print_report(doc, lines, as_json, warnings)


def fail(name: str, exc: Any) -> None:
    """A failed deployment: the service's last log lines on stderr, then the one-line error."""
    print_log_tail(exc)
    raise EdgepackError(f"{first_line(exc)} (more with `edgepack service logs {name}`)") from None


def report(service: Any, state: str | None, as_json: bool, warnings: Warnings) -> None:
    doc = public_record(service, state)
    lines = [
        f"service {doc['name']} ({doc['computeType']}): {doc['state']}",
        f"  scoring URI  {doc.get('scoringUri') or '-'}",
        f"  swagger URI  {doc.get('swaggerUri') or '-'}",
        f"  models       {', '.join(doc.get('models') or [])}",
    ]
    if doc.get("authEnabled"):
        lines.append(f"  auth         key (`edgepack service keys {doc['name']}` prints them)")
    elif doc.get("tokenAuthEnabled"):
        lines.append(f"  auth         token (`edgepack service token {doc['name']}`)")
    if state is None:
        lines.append(f"  not waiting: `edgepack service show {doc['name']}` tells when it is Healthy")
    print_report(doc, lines, as_json, warnings)


# -- dry run --------------------------------------------------------------------------------------------------
def _placeholder_secrets(config: DeploymentConfig) -> dict[str, str]:
    """The secret env a deploy would give the service, with throwaway values (the output redacts them)."""
    from cloud_targets.services import configs
    from cloud_targets.targets.base import secret_env

    mode = configs.auth_mode(config)
    if mode == "key":
        return secret_env(config.primary_key or pysecrets.token_urlsafe(32),
                          config.secondary_key or pysecrets.token_urlsafe(32), None)  # fmt: skip
    if mode == "token":
        return secret_env(None, None, pysecrets.token_urlsafe(32))
    return {}


def dry_run_image(registry: str | None, repository: str) -> str:
    """The image --dry-run shows for one not built: ``<registry>/<repository>:dry-run``."""
    return f"{(registry or '<registry>').rstrip('/')}/{repository}:{DRY_RUN_TAG}"


def _remote_spec(req: Request, flags: TargetFlags) -> tuple[Any, str | None]:
    from cloud_targets.services import configs
    from cloud_targets.targets.base import ServiceSpec, module_env

    registry = flags.image_registry or os.environ.get(REGISTRY_ENV)
    image = dry_run_image(registry, req.name)
    spec = ServiceSpec(
        name=req.name,
        image=image,
        config=req.config,
        env=module_env(req.config, token_auth=configs.auth_mode(req.config) == "token"),
        secrets=_placeholder_secrets(req.config),
        labels={"edgepack.service": req.name},
    )
    return spec, registry


def _endpoint_objects(req: Request, service: Any) -> list[dict[str, Any]]:
    """AKSENDPOINT on Kubernetes: the endpoint with this version (its share, default when it is the first or
    says so) as :func:`endpoint_objects` applies it: the version's objects, then the router's or the HTTPRoute."""
    import dataclasses

    from cloud_targets.endpoints.spec import EndpointSpec, VersionSpec
    from cloud_targets.services import configs
    from cloud_targets.targets.kubernetes.endpoint_objects import endpoint_objects

    config = req.config
    version = config.version_name or req.name  # type: ignore[attr-defined]
    service = dataclasses.replace(service, image=service.image.replace(f"/{req.name}:", f"/{req.name}-{version}:"))
    spec = EndpointSpec(
        req.name,
        [VersionSpec(version, service, float(config.traffic_percentile or 0), True,  # type: ignore[attr-defined]
                     bool(config.is_control_version_type))],  # type: ignore[attr-defined]
        configs.auth_mode(config),
        service.secrets,
        1,
    )  # fmt: skip
    gateway = req.target.resolved().gateway if req.target is not None else None
    return endpoint_objects(spec, mode="gateway" if gateway else "router", gateway=gateway)


def _redact_group(body: dict[str, Any]) -> dict[str, Any]:
    """The ACI body with every secure value and registry password emptied."""
    body = json.loads(json.dumps(body))
    for container in body.get("properties", {}).get("containers", []):
        for env in container.get("properties", {}).get("environmentVariables", []) or []:
            if "secureValue" in env:
                env["secureValue"] = ""
    for cred in body.get("properties", {}).get("imageRegistryCredentials", []) or []:
        if "password" in cred:
            cred["password"] = ""
    return body


def dry_run(req: Request, flags: TargetFlags, as_json: bool, warnings: Warnings) -> None:
    """Print what would be deployed; nothing is built or sent."""
    head = {
        "dryRun": True,
        "name": req.name,
        "computeType": req.compute_type,
        "models": [m.id for m in req.models],
        "inferenceConfig": req.inference_config.serialize(),
        "deploymentConfig": req.config.to_dict(),
    }
    if req.compute_type == "AKSENDPOINT":
        from cloud_targets.endpoints.store import EndpointStore

        if EndpointStore(req.workspace).exists(req.name):  # the endpoint as it would be with this version
            from cloud_targets.commands.endpoint_dry_run import endpoint_dry_run
            from cloud_targets.endpoints import Endpoint

            config = req.config
            endpoint_dry_run(
                Endpoint(req.workspace, req.name),
                config.version_name or req.name,  # type: ignore[attr-defined]
                config,
                models=head["models"],
                as_json=as_json,
                warnings=warnings,
                head=head,
                traffic_percentile=float(config.traffic_percentile or 0),  # type: ignore[attr-defined]
                is_default=bool(config.is_default),  # type: ignore[attr-defined]
                is_control_version_type=bool(config.is_control_version_type),  # type: ignore[attr-defined]
            )
            return
    if req.compute_type == "AKSENDPOINT" and req.target is None:
        from cloud_targets.targets.local import resolve_mode

        version = req.config.version_name or req.name  # type: ignore[attr-defined]
        traffic = req.config.traffic_percentile or 0  # type: ignore[attr-defined]
        plan = {**head, "endpointCompute": "LOCAL", "mode": resolve_mode(), "version": version, "traffic": traffic}
        if as_json:
            print_json({**plan, "warnings": list(warnings.seen)})
            return
        console.print(
            printable(f"would add version {version} ({traffic:g}% of the traffic) to endpoint {req.name} on this "
                      f"machine ({plan['mode']} mode); nothing was built or started (--dry-run)"),
            markup=False, soft_wrap=True,
        )  # fmt: skip
        return
    if req.compute_type == "LOCAL":
        from cloud_targets.services import configs
        from cloud_targets.targets.local import resolve_mode

        mode = resolve_mode(req.config)
        plan = {**head, "mode": mode, "port": getattr(req.config, "port", None), "auth": configs.auth_mode(req.config)}
        if as_json:
            print_json({**plan, "warnings": list(warnings.seen)})
            return
        port = plan["port"] or "a free port"
        text = [
            f"would deploy {req.name} (LOCAL, {mode} mode) on http://localhost:{port}/score" if plan["port"]
            else f"would deploy {req.name} (LOCAL, {mode} mode) on {port} of localhost",
            f"  models            {', '.join(plan['models'])}",
            f"  entry script      {req.inference_config.entry_script or '(none: ONNX auto-scoring)'}",
            f"  source directory  {req.inference_config.source_directory or '-'}",
            f"  auth              {plan['auth']}",
            "nothing was built or started (--dry-run)",
        ]  # fmt: skip
        for line in text:
            console.print(printable(line), markup=False, soft_wrap=True)
        return
    spec, registry = _remote_spec(req, flags)
    if not registry:
        warnings.add(
            [f"no image registry: set --image-registry or ${REGISTRY_ENV} before deploying (shown as <registry>)"]
        )
    if req.compute_type == "ACI":
        from cloud_targets.targets.aci import container_group_plan

        location = getattr(req.config, "location", None) or flags.location or ""
        plan = container_group_plan(spec, location)
        warnings.add(plan.warnings)
        body = _redact_group(plan.group.serialize())
        print_json({**head, "containerGroup": body, "warnings": list(warnings.seen)} if as_json else body)
        return
    from cloud_targets.targets.kubernetes import build_objects, to_dict, to_yaml, unhonoured_settings
    from cloud_targets.targets.kubernetes.objects import redacted

    warnings.add(unhonoured_settings(req.config))
    objects = _endpoint_objects(req, spec) if req.compute_type == "AKSENDPOINT" else build_objects(spec)
    if as_json:
        print_json({**head, "objects": [redacted(to_dict(o)) for o in objects], "warnings": list(warnings.seen)})
    else:
        sys.stdout.write(to_yaml(objects))


__all__ = [
    "TargetFlags",
    "check_request",
    "deployment_target",
    "dry_run",
    "dry_run_image",
    "fail",
    "report",
    "run_deploy",
    "run_endpoint_deploy",
]
