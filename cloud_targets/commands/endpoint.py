"""``edgepack endpoint ...``: v2 managed online endpoints (``az ml online-endpoint`` / ``online-deployment``).

\b
  edgepack endpoint create -f endpoint.yml --local
  edgepack endpoint deployment create -f blue-deployment.yml --all-traffic
  edgepack endpoint invoke -n my-endpoint --request-file sample-request.json
  edgepack endpoint deployment create -f green-deployment.yml --dry-run
  edgepack endpoint deployment create -f green-deployment.yml
  edgepack endpoint update -n my-endpoint --traffic "blue=90 green=10"
  edgepack endpoint get-logs -n my-endpoint --deployment green
  edgepack endpoint deployment delete -n blue -e my-endpoint --yes
  edgepack endpoint delete -n my-endpoint --yes

A deployment is a version of the endpoint (its own image and service); the endpoint's router splits the
traffic. Read commands take ``--json`` and print no secret; ``get-credentials`` is the one that prints keys.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from cloud_targets.commands.common import (
    Stages,
    Warnings,
    confirm,
    echo,
    json_body,
    json_option,
    logged_warnings,
    open_ws,
    print_log_tail,
    print_report,
    print_table,
)
from packager.cli.output import print_json, printable
from packager.errors import ConflictError, EdgepackError, InvalidInputError

file_option = click.option(
    "-f", "--file", "file", required=True, type=click.Path(dir_okay=False), help="The v2 YAML file."
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key of the YAML file, e.g. --set instance_count=2 (repeatable).",
)
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
endpoint_name_option = click.option("-e", "--endpoint-name", "endpoint_name", required=True, help="The endpoint.")


def _endpoint(ctx: click.Context, name: str) -> Any:
    from cloud_targets.endpoints import Endpoint

    return Endpoint(open_ws(ctx), name)


def _target(local: bool, context: str | None, kubeconfig: str | None, image_registry: str | None) -> tuple[str, Any]:
    """``("LOCAL", None)`` for ``--local``; else ``("AKS", KubernetesCompute)`` from the flags or the environment."""
    import os

    from cloud_targets.targets.compute import ENV_KUBE_CONTEXT, KubernetesCompute

    if local:
        if context or kubeconfig:
            raise click.UsageError("--local and --ct/--kubeconfig do not go together: pick one")
        return "LOCAL", None
    if not (context or kubeconfig or os.environ.get(ENV_KUBE_CONTEXT)):
        raise InvalidInputError(
            f"where should the endpoint run? pass --local, or a Kubernetes context with --ct CONTEXT "
            f"(or --kubeconfig FILE, or set ${ENV_KUBE_CONTEXT})"
        )
    return "AKS", KubernetesCompute(context=context, kubeconfig=kubeconfig, image_registry=image_registry)


def _version(ep: Any, name: str) -> Any:
    """The endpoint's deployment ``name`` (an error listing the deployments when there is none)."""
    if name not in ep.versions:
        raise InvalidInputError(
            f"endpoint {ep.name} has no deployment {name} (it has: {', '.join(ep.versions) or 'none'})"
        )
    return ep.versions[name]


def _endpoint_doc(ep: Any) -> dict[str, Any]:
    doc = ep.serialize()
    doc["traffic"] = {name: _pct(v.traffic_percentile) for name, v in ep.versions.items()}
    return doc


def _pct(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _version_doc(ep: Any, version: Any) -> dict[str, Any]:
    state = version.state
    return {
        "name": version.name,
        "endpoint_name": ep.name,
        "traffic": _pct(version.traffic_percentile),
        "state": state,
        "scoring_uri": version.scoring_uri,
        "models": [getattr(m, "id", str(m)) for m in (version.models or [])],
    }


def _report_endpoint(ep: Any, as_json: bool, warnings: Warnings | None = None) -> None:
    doc = _endpoint_doc(ep)
    traffic = " ".join(f"{k}={v}" for k, v in doc["traffic"].items()) or "(no deployment yet)"
    rows = [
        ("name", ep.name),
        ("compute type", doc.get("computeType") or doc.get("compute_type")),
        ("state", doc.get("state")),
        ("scoring URI", ep.scoring_uri),
        ("swagger URI", ep.swagger_uri),
        ("auth", doc.get("authMode") or doc.get("auth_mode")),
        ("traffic", traffic),
        ("description", doc.get("description")),
        ("tags", ", ".join(f"{k}={v}" for k, v in (doc.get("tags") or {}).items())),
    ]
    print_report(doc, [f"{key:<13} {value}" for key, value in rows if value not in (None, "")], as_json, warnings)


# -- endpoint -----------------------------------------------------------------------------------------------------
@click.group()
def endpoint() -> None:
    """v2 managed online endpoints: create, deployments (blue/green), traffic, invoke, logs, delete."""


endpoint.help = __doc__


@endpoint.command()
@file_option
@click.option("--local", is_flag=True, help="Run the endpoint on this machine (process or Docker).")
@click.option("-n", "--name", help="The endpoint's name [default: name in the file].")
@click.option("--ct", "--compute-target", "context", metavar="CONTEXT", help="Kubernetes: the kubeconfig context.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubernetes: kubeconfig file.")
@click.option(
    "--image-registry",
    envvar="EDGEPACK_IMAGE_REGISTRY",
    metavar="REGISTRY/PATH",
    help="Kubernetes: where images are pushed [env EDGEPACK_IMAGE_REGISTRY].",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Local: the endpoint's port [default: a free one].")
@set_option
@json_option
@click.pass_context
def create(
    ctx: click.Context,
    file: str,
    local: bool,
    name: str | None,
    context: str | None,
    kubeconfig: str | None,
    image_registry: str | None,
    port: int | None,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create an endpoint from endpoint.yml (no deployment yet: add them with `endpoint deployment create`)."""
    from cloud_targets.endpoints.v2 import load_endpoint, validate_name

    warnings = Warnings()
    with logged_warnings(warnings):
        spec = load_endpoint(file, overrides)
        warnings.add(spec.warnings)
        if name:
            spec.name = validate_name(name, "endpoint", "--name")
        compute_type, target = _target(local, context, kubeconfig, image_registry)
        if spec.traffic and any(spec.traffic.values()):
            warnings.add(
                [
                    f"endpoint {spec.name}: traffic is set once deployments exist (as in v2); ignored at "
                    "create: use `edgepack endpoint update --traffic` after `deployment create`"
                ]
            )
        from cloud_targets.endpoints import Endpoint
        from packager.cli.model import open_workspace

        ws = open_workspace(ctx, create=True)  # v2's flow registers no model before the endpoint
        if _exists(ws, spec.name):
            raise ConflictError(
                f"endpoint {spec.name} already exists: change it with `edgepack endpoint update`, or delete it first"
            )
        with Stages() as stages, stages.stage(f"{spec.name}: creating the endpoint"):
            ep = Endpoint.create(
                ws,
                spec.name,
                compute_type=compute_type,
                deployment_target=target,
                auth_mode=spec.auth_mode,
                description=spec.description,
                tags=spec.tags or None,
                port=port,
            )
        _report_endpoint(ep, as_json, warnings)


def _exists(ws: Any, name: str) -> bool:
    from cloud_targets.endpoints import Endpoint

    return any(e.name == name for e in Endpoint.list(ws))


@endpoint.command()
@click.option("-n", "--name", required=True, help="The endpoint.")
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show an endpoint: state, scoring URI, auth, traffic (no secrets)."""
    _report_endpoint(_endpoint(ctx, name), as_json)


@endpoint.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """List the workspace's endpoints."""
    from cloud_targets.endpoints import Endpoint

    found = Endpoint.list(open_ws(ctx))
    docs = [_endpoint_doc(e) for e in found]
    if as_json:
        print_json(docs)
        return
    if not docs:
        echo("no endpoints (create one with `edgepack endpoint create -f endpoint.yml --local`)")
        return
    rows = [
        (
            ep.name,
            d.get("computeType") or d.get("compute_type") or "",
            ep.scoring_uri or "-",
            " ".join(f"{k}={v}" for k, v in d["traffic"].items()) or "-",
        )
        for ep, d in zip(found, docs, strict=True)
    ]
    print_table(("NAME", "TYPE", "SCORING URI", "TRAFFIC"), rows)


@endpoint.command()
@click.option("-n", "--name", help="The endpoint [default: name in -f FILE].")
@click.option("--traffic", metavar='"BLUE=90 GREEN=10"', help="The split, in whole percents adding up to 100.")
@click.option(
    "-f", "--file", "file", type=click.Path(dir_okay=False), help="endpoint.yml (traffic, description, tags)."
)
@set_option
@json_option
@click.pass_context
def update(
    ctx: click.Context,
    name: str | None,
    traffic: str | None,
    file: str | None,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Change an endpoint's traffic split (and description/tags from endpoint.yml); no deployment restarts."""
    from cloud_targets.endpoints.v2 import load_endpoint, parse_traffic

    warnings = Warnings()
    with logged_warnings(warnings):
        spec = load_endpoint(file, overrides) if file else None
        if spec is not None:
            warnings.add(spec.warnings)
            if name and name != spec.name:
                raise InvalidInputError(f"-n {name} and {file}'s name {spec.name} differ: give one of them")
        name = name or (spec.name if spec else None)
        if not name:
            raise click.UsageError("give the endpoint with -n NAME (or -f endpoint.yml)")
        split = parse_traffic(traffic) if traffic else (spec.traffic if spec else None)
        if split is None and (spec is None or (spec.description is None and not spec.tags)):
            raise click.UsageError('nothing to update: give --traffic "blue=90 green=10" or -f endpoint.yml')
        ep = _endpoint(ctx, name)
        if split is not None:
            unknown = sorted(set(split) - set(ep.versions))
            if unknown:
                known = ", ".join(ep.versions) or "none yet"
                raise InvalidInputError(f"endpoint {name} has no deployment {', '.join(unknown)} (it has: {known})")
            full = {v: 0 for v in ep.versions} | split
            with Stages() as stages, stages.stage(f"{name}: setting traffic"):
                ep.set_traffic(full)
        if spec is not None and (spec.description is not None or spec.tags):
            ep.update(description=spec.description, tags=spec.tags or None)
        _report_endpoint(_endpoint(ctx, name), as_json, warnings)


@endpoint.command()
@click.option("-n", "--name", required=True, help="The endpoint.")
@click.option(
    "-r", "--request-file", required=True, type=click.Path(exists=True, dir_okay=False), help="The request body (JSON)."
)
@click.option("-d", "--deployment-name", help="Send it to this deployment, whatever the traffic split.")
@json_option
@click.pass_context
def invoke(ctx: click.Context, name: str, request_file: str, deployment_name: str | None, as_json: bool) -> None:
    """Score: POST the request file to the endpoint (or one deployment) and print the answer."""
    body = json_body(file=request_file)
    ep = _endpoint(ctx, name)
    if deployment_name:
        _version(ep, deployment_name)
    answer = ep.run(body, version=deployment_name)
    if as_json or not isinstance(answer, str):
        print_json(answer)
    else:
        sys.stdout.write(printable(answer) + "\n")


def _logs(ctx: click.Context, name: str, deployment: str, lines: int) -> None:
    ep = _endpoint(ctx, name)
    _version(ep, deployment)
    for line in ep.get_logs(version=deployment, num_lines=lines).splitlines():
        sys.stdout.write(printable(line) + "\n")


lines_option = click.option(
    "-l", "--lines", type=click.IntRange(min=1), default=5000, show_default=True, help="How many of the last lines."
)


@endpoint.command("get-logs")
@click.option("-n", "--name", required=True, help="The endpoint.")
@click.option("-d", "--deployment", "--deployment-name", "deployment", required=True, help="The deployment.")
@lines_option
@click.pass_context
def get_logs(ctx: click.Context, name: str, deployment: str, lines: int) -> None:
    """Print a deployment's last log lines (its process or container output)."""
    _logs(ctx, name, deployment, lines)


@endpoint.command("get-credentials")
@click.option("-n", "--name", required=True, help="The endpoint.")
@json_option
@click.pass_context
def get_credentials(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print the endpoint's keys (auth_mode key) or a token (aml_token). The one command that prints them."""
    ep = _endpoint(ctx, name)
    mode = ep.serialize().get("authMode") or ep.serialize().get("auth_mode")
    if mode == "token":
        access, refresh_after = ep.get_token()
        doc = {"accessToken": access, "expiryTimeUtc": refresh_after.isoformat()}
    elif mode == "none":
        raise InvalidInputError(f"endpoint {name} has no auth: there are no credentials")
    else:
        primary, secondary = ep.get_keys()
        doc = {"primaryKey": primary, "secondaryKey": secondary}
    if as_json:
        print_json(doc)
    else:
        for key, value in doc.items():
            echo(f"{key:<14} {value}")


@endpoint.command()
@click.option("-n", "--name", required=True, help="The endpoint.")
@yes_option
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete an endpoint and all its deployments: nothing is left running."""
    ep = _endpoint(ctx, name)
    confirm(yes, f"delete endpoint {name} and its deployments ({', '.join(ep.versions) or 'none'})")
    with Stages() as stages, stages.stage(f"{name}: deleting"):
        ep.delete()
    echo(f"deleted endpoint {name}")


# -- deployments --------------------------------------------------------------------------------------------------
@endpoint.group()
def deployment() -> None:
    """An endpoint's deployments (blue, green...): create, update, list, show, get-logs, delete."""


def _deploy(
    ctx: click.Context,
    file: str,
    overrides: tuple[str, ...],
    local: bool,
    update: bool,
    all_traffic: bool,
    as_json: bool,
    dry_run: bool = False,
) -> None:
    from cloud_targets.endpoints import v2_mapping
    from cloud_targets.endpoints.v2 import load_deployment

    warnings = Warnings()
    with logged_warnings(warnings):
        dep = load_deployment(file, overrides)
        warnings.add(dep.warnings)
        ep = _endpoint(ctx, dep.endpoint_name)
        compute_type = ep.serialize().get("computeType") or ep.serialize().get("compute_type") or "LOCAL"
        is_local = compute_type == "LOCAL"
        if local and not is_local:
            raise InvalidInputError(f"endpoint {ep.name} runs on {compute_type}, not locally: drop --local")
        exists = dep.name in ep.versions
        if update and not exists:
            raise InvalidInputError(
                f"endpoint {ep.name} has no deployment {dep.name}: create it with "
                f"`edgepack endpoint deployment create -f {file}`"
            )
        if not update and exists:
            raise ConflictError(
                f"endpoint {ep.name} already has a deployment {dep.name}: change it with "
                f"`edgepack endpoint deployment update -f {file}`"
            )
        ic, ic_warnings = v2_mapping.inference_config(dep, is_local)
        warnings.add(ic_warnings + list(ic.warnings))
        config, config_warnings = v2_mapping.deployment_config(dep, "LOCAL" if is_local else "AKSENDPOINT")
        warnings.add(config_warnings)
        if dry_run:
            from cloud_targets.commands.endpoint_dry_run import endpoint_dry_run

            endpoint_dry_run(ep, dep.name, config, models=_planned_models(ctx, dep), as_json=as_json,
                             warnings=warnings, all_traffic=all_traffic)  # fmt: skip
            return
        model = v2_mapping.resolve_model(open_ws(ctx), dep) if dep.model is not None else None
        models = [model] if model is not None else []
        with Stages() as stages, _failure(ep.name, dep.name):
            if update:
                with stages.stage(f"{ep.name}/{dep.name}: building and replacing"):
                    ep.update_version(dep.name, models=models or None, inference_config=ic, deployment_config=config)
            else:
                with stages.stage(f"{ep.name}/{dep.name}: building and starting"):
                    ep.create_version(
                        dep.name,
                        models,
                        ic,
                        deployment_config=config,
                        traffic_percentile=0,
                        description=dep.description,
                    )
            if all_traffic:
                with stages.stage(f"{ep.name}: all traffic to {dep.name}"):
                    ep.set_traffic({v: (100 if v == dep.name else 0) for v in ep.versions})
        ep = _endpoint(ctx, ep.name)
        doc = _version_doc(ep, ep.versions[dep.name])
        if as_json:
            print_json({**doc, "warnings": list(warnings.seen)})
            return
        echo(f"deployment {ep.name}/{dep.name}: {doc['state']}, {doc['traffic']}% of the traffic")
        echo(f"  models       {', '.join(doc['models']) or '-'}")
        echo(f"  scoring URI  {ep.scoring_uri}")
        if not all_traffic and not doc["traffic"]:
            echo(
                f'  no traffic yet: `edgepack endpoint update -n {ep.name} --traffic "{dep.name}=100"` (or a '
                f"share), or test it with `edgepack endpoint invoke -n {ep.name} -d {dep.name} -r FILE`"
            )


def _planned_models(ctx: click.Context, dep: Any) -> list[str]:
    """The model ids a deployment would use, registering nothing (``model.path``: ``NAME:next``)."""
    from cloud_targets.endpoints import v2_mapping
    from packager.registry.model import Model

    if dep.model is None:
        return []
    if dep.model.path is not None:
        return [f"{v2_mapping.model_name(dep)}:next"]
    return [Model(open_ws(ctx), dep.model.name, version=dep.model.version).id]


@contextmanager
def _failure(endpoint_name: str, deployment_name: str) -> Iterator[None]:
    """A deployment that does not start: its last log lines on stderr, then one error line."""
    from cloud_targets import WebserviceException
    from cloud_targets.commands.common import first_line

    try:
        yield
    except WebserviceException as exc:
        print_log_tail(exc)
        raise EdgepackError(
            f"{first_line(exc)} (more with `edgepack endpoint get-logs -n {endpoint_name} --deployment "
            f"{deployment_name}`)"
        ) from None


@deployment.command("create")
@file_option
@click.option("--dry-run", is_flag=True, help="Print the endpoint as it would be (objects or plan); change nothing.")
@click.option("--all-traffic", is_flag=True, help="Send all of the endpoint's traffic to it once it is ready.")
@click.option("--local", is_flag=True, help="The endpoint is a local one (checked; v2's flag).")
@set_option
@json_option
@click.pass_context
def deployment_create(
    ctx: click.Context,
    file: str,
    dry_run: bool,
    all_traffic: bool,
    local: bool,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a deployment from its YAML: register the model, build, start and wait until it is ready."""
    _deploy(ctx, file, overrides, local, False, all_traffic, as_json, dry_run)


@deployment.command("update")
@file_option
@click.option("--dry-run", is_flag=True, help="Print the endpoint as it would be (objects or plan); change nothing.")
@click.option("--local", is_flag=True, help="The endpoint is a local one (checked; v2's flag).")
@set_option
@json_option
@click.pass_context
def deployment_update(
    ctx: click.Context, file: str, dry_run: bool, local: bool, overrides: tuple[str, ...], as_json: bool
) -> None:
    """Replace a deployment's model, code or settings from its YAML; its traffic share stays."""
    _deploy(ctx, file, overrides, local, True, False, as_json, dry_run)


@deployment.command("list")
@endpoint_name_option
@json_option
@click.pass_context
def deployment_list(ctx: click.Context, endpoint_name: str, as_json: bool) -> None:
    """List an endpoint's deployments with their traffic and state."""
    ep = _endpoint(ctx, endpoint_name)
    docs = [_version_doc(ep, v) for v in ep.versions.values()]
    if as_json:
        print_json(docs)
        return
    if not docs:
        echo(f"endpoint {endpoint_name} has no deployment (`edgepack endpoint deployment create -f blue.yml`)")
        return
    rows = [(d["name"], f"{d['traffic']}%", d["state"], ", ".join(d["models"])) for d in docs]
    print_table(("NAME", "TRAFFIC", "STATE", "MODELS"), rows)


@deployment.command("show")
@click.option("-n", "--name", required=True, help="The deployment.")
@endpoint_name_option
@json_option
@click.pass_context
def deployment_show(ctx: click.Context, name: str, endpoint_name: str, as_json: bool) -> None:
    """Show one deployment: traffic, state, models, its own scoring URI."""
    ep = _endpoint(ctx, endpoint_name)
    doc = _version_doc(ep, _version(ep, name))
    if as_json:
        print_json(doc)
        return
    for key, value in doc.items():
        echo(f"{key:<14} {', '.join(value) if isinstance(value, list) else value}")


@deployment.command("get-logs")
@click.option("-n", "--name", required=True, help="The deployment.")
@endpoint_name_option
@lines_option
@click.pass_context
def deployment_get_logs(ctx: click.Context, name: str, endpoint_name: str, lines: int) -> None:
    """Print a deployment's last log lines."""
    _logs(ctx, endpoint_name, name, lines)


@deployment.command("delete")
@click.option("-n", "--name", required=True, help="The deployment.")
@endpoint_name_option
@yes_option
@click.pass_context
def deployment_delete(ctx: click.Context, name: str, endpoint_name: str, yes: bool) -> None:
    """Delete a deployment: it must take no traffic (shift it away first with `endpoint update --traffic`)."""
    ep = _endpoint(ctx, endpoint_name)
    version = _version(ep, name)
    if version.traffic_percentile and len(ep.versions) > 1:
        raise InvalidInputError(
            f"deployment {name} takes {_pct(version.traffic_percentile)}% of {endpoint_name}'s traffic: shift it "
            f'first, e.g. `edgepack endpoint update -n {endpoint_name} --traffic "OTHER=100"`'
        )
    confirm(yes, f"delete deployment {name} of endpoint {endpoint_name}")
    with Stages() as stages, stages.stage(f"{endpoint_name}/{name}: deleting"):
        ep.delete_version(name)
    echo(f"deleted deployment {name} of endpoint {endpoint_name}")


__all__ = ["endpoint"]
