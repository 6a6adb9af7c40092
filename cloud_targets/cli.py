"""``edgepack deploy``: web services (Local, ACI, AKS) and IoT Hub deployments.

``edgepack deploy -n NAME -m MODEL --ic FILE --dc FILE`` deploys a web service (v1's ``az ml model
deploy``, see :mod:`cloud_targets.commands.deploy`); ``edgepack deploy iotedge ...`` and its siblings
apply IoT Edge manifests. This group lives in cloud_targets (imports flow cloud_targets -> packager);
``packager.cli.main`` adds it with a lazy import guarded by ImportError, so the core install works
without this package's extras.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cloud_targets.commands.common import inference_options
from cloud_targets.commands.deploy import REGISTRY_ENV
from packager.cli.output import console, print_json, printable
from packager.errors import EdgepackError, InvalidInputError
from packager.fs import write_atomic
from packager.workspace import DEFAULT_DIR, ENV_WORKSPACE

_DEPLOY_HELP = """Deploy models as a web service (Local, ACI, AKS), or IoT Edge manifests (subcommands).

\b
  edgepack deploy -n digits-svc -m digits:1 --ic inferenceconfig.json --dc deploymentconfig.json
  edgepack deploy -n digits-svc -m digits --es score.py --sd app        # Local on a free port
  edgepack deploy -n digits-aks -m digits --ic ic.json --dc aks.yml --dry-run   # print the YAML
  edgepack deploy iotedge -f deployment.json --device edge-1

The flags are Azure ML v1's `az ml model deploy` ones; deploymentconfig.json's computeType picks the
target (no --dc: Local). Everything is checked before anything is built.
"""


@click.group(invoke_without_command=True, help=_DEPLOY_HELP)
@click.option("-n", "--name", help="Web service name (3-32 lowercase letters, digits, dashes).")
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:VERSION]",
    help="Registered model (repeatable; latest version when none is given).",
)
@inference_options
@click.option(
    "--dc",
    "--deploy-config-file",
    "dc",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="v1 deploymentconfig.json or YAML (computeType LOCAL, ACI, AKS) [default: Local, a free port].",
)
@click.option(
    "--ct",
    "--compute-target",
    "compute_target",
    metavar="CONTEXT",
    help="AKS: the kubeconfig context to deploy to [default: the current context].",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="AKS: kubeconfig file [default: $KUBECONFIG].")
@click.option(
    "--subscription-id", envvar="AZURE_SUBSCRIPTION_ID", help="ACI: Azure subscription [env AZURE_SUBSCRIPTION_ID]."
)
@click.option(
    "-g", "--resource-group", envvar="AZURE_RESOURCE_GROUP", help="ACI: resource group [env AZURE_RESOURCE_GROUP]."
)
@click.option("--location", help="ACI: Azure region when the config gives none.")
@click.option(
    "--image-registry",
    envvar=REGISTRY_ENV,
    metavar="REGISTRY/PATH",
    help=f"ACI/AKS: where the image is pushed, e.g. myacr.azurecr.io/models [env {REGISTRY_ENV}].",
)
@click.option("--overwrite", is_flag=True, help="Replace a service of the same name.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the service to be Healthy.")
@click.option("--dry-run", is_flag=True, help="Check everything and print what would be deployed; build nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (no secrets).")
@click.pass_context
def deploy(
    ctx: click.Context,
    name: str | None,
    models: tuple[str, ...],
    dc: str | None,
    overwrite: bool,
    no_wait: bool,
    dry_run: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    if ctx.invoked_subcommand is not None:
        own = (("-n", name), ("-m", models), ("--dc", dc), ("--dry-run", dry_run), ("--overwrite", overwrite),
               ("--no-wait", no_wait), ("--json", as_json))  # fmt: skip
        given = [f for f, v in own if v]
        given += [f"--{k.replace('_', '-')}" for k, v in flags.items() if v and k not in _ENV_FLAGS]
        if given:
            raise click.UsageError(f"{', '.join(given)} deploy a web service; they do not go with "
                                   f"'deploy {ctx.invoked_subcommand}'")  # fmt: skip
        return
    if not name or not models:
        missing = " and ".join(f for f, v in (("-n NAME", name), ("-m MODEL", models)) if not v)
        raise click.UsageError(f"give {missing} to deploy a web service, or a subcommand (iotedge, iotedge-list, ...)")
    from cloud_targets.commands import deploy as impl
    from cloud_targets.commands.common import Warnings, inference_config, logged_warnings

    target = impl.TargetFlags(**{k: flags.pop(k) for k in _TARGET_FLAGS})
    warnings = Warnings()
    with logged_warnings(warnings):
        ic = inference_config(**flags)
        if ic is not None:
            warnings.add(ic.warnings)
        request = impl.check_request(ctx, name, models, ic, dc, target, overwrite, warnings)
        if dry_run:
            impl.dry_run(request, target, as_json, warnings)
        else:
            impl.run_deploy(request, not no_wait, as_json, warnings)


_TARGET_FLAGS = ("compute_target", "kubeconfig", "subscription_id", "resource_group", "location", "image_registry")
_ENV_FLAGS = ("subscription_id", "resource_group", "image_registry")  # may come from the environment


def _workspace_dir(ctx: click.Context) -> Path:
    root = ctx.find_root().obj or {}
    return Path(root.get("workspace") or os.environ.get(ENV_WORKSPACE) or DEFAULT_DIR)


def _deployer(ctx: click.Context, env_var: str | None) -> tuple[Any, Any]:
    from cloud_targets.iothub.connection import resolve_connection_string
    from cloud_targets.iothub.deployer import IotHubDeployer

    connection = resolve_connection_string(env_var=env_var, workspace=_workspace_dir(ctx))
    return IotHubDeployer(connection), connection


_CS_HELP = (
    "Environment variable holding the service connection string "
    "[default EDGEPACK_IOTHUB_CONNECTION_STRING, IOTHUB_CONNECTION_STRING, then <workspace>/iothub.json]."
)


@deploy.command("iotedge")
@click.option(
    "-f", "--file", "file", required=True, type=click.Path(dir_okay=False), help="Deployment manifest (JSON)."
)
@click.option("--device", "device_id", help="Apply the manifest to one IoT Edge device (its modules are replaced).")
@click.option("--deployment-id", help="Create an automatic deployment with this id (lowercase).")
@click.option("--target-condition", help="Devices it targets, e.g. \"tags.environment='prod'\".")
@click.option("--priority", type=click.IntRange(min=0), help="Higher wins when deployments overlap.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Deployment label (repeatable).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=QUERY", help="Custom metric query (repeatable).")
@click.option("--layered", is_flag=True, help="A layered deployment (properties.desired.<path> keys) on top of a base.")
@click.option(
    "--connection-string-env",
    metavar="VAR",
    help=_CS_HELP,
)
@click.option("--dry-run", is_flag=True, help="Validate and print the content (az's --content shape); send nothing.")
@click.option(
    "--output", "-o", "output", type=click.Path(dir_okay=False), help="With --dry-run: write the content here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def iotedge(
    ctx: click.Context,
    file: str,
    device_id: str | None,
    deployment_id: str | None,
    target_condition: str | None,
    priority: int | None,
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    layered: bool,
    connection_string_env: str | None,
    dry_run: bool,
    output: str | None,
    as_json: bool,
) -> None:
    """Deploy an IoT Edge manifest to IoT Hub: one device (--device) or an automatic deployment
    (--deployment-id, --target-condition, --priority). The manifest is validated before anything is sent;
    the connection string is never printed."""
    if bool(device_id) == bool(deployment_id):
        raise click.UsageError("give either --device ID or --deployment-id ID")
    if device_id and (target_condition or priority is not None or labels or metrics or layered):
        raise click.UsageError(
            "--target-condition, --priority, --label, --metric and --layered are for --deployment-id"
        )
    if deployment_id and (target_condition is None or priority is None):
        raise click.UsageError("--deployment-id needs --target-condition and --priority")
    if output and not dry_run:
        raise click.UsageError("--output goes with --dry-run")
    try:
        from cloud_targets.iothub.content import (
            check_device_id,
            deployment_content,
            device_content,
            load_manifest,
            parse_pairs,
        )

        manifest = load_manifest(file)
        name = os.path.basename(file)
        if device_id:
            check_device_id(device_id)
            content = device_content(manifest, name=name)
            target = f"device {device_id}"
        else:
            assert deployment_id is not None and target_condition is not None and priority is not None
            content = deployment_content(
                deployment_id,
                manifest,
                target_condition,
                priority,
                parse_pairs(labels, "--label"),
                parse_pairs(metrics, "--metric"),
                layered=layered,
                name=name,
            )
            target = f"{'layered ' if layered else ''}deployment {deployment_id}"
    except ImportError as exc:  # jsonschema comes with the cloud extra
        raise EdgepackError(f"manifest validation needs {exc.name}: pip install 'edgepack[cloud]'") from None
    if dry_run:
        _dry_run(content, output, as_json, target)
        return

    deployer, connection = _deployer(ctx, connection_string_env)
    result: dict[str, Any] = {"hub": connection.host_name}
    if device_id:
        deployer.apply_to_device(device_id, manifest)
        result.update(device=device_id, applied=True)
    else:
        created = deployer.create_deployment(
            content["id"],
            manifest,
            content["targetCondition"],
            content["priority"],
            content["labels"],
            content["metrics"]["queries"],
            layered=layered,
        )
        result.update(
            deployment=content["id"],
            layered=layered,
            etag=created.get("etag"),
            createdTimeUtc=created.get("createdTimeUtc"),
        )
    if as_json:
        print_json(result)
    else:
        console.print(
            f"deployed {printable(target)} on {printable(connection.host_name)}", markup=False, soft_wrap=True
        )


def _dry_run(content: dict[str, Any], output: str | None, as_json: bool, target: str) -> None:
    """Print (or write) exactly what would be sent: az's --content shape."""

    text = json.dumps(content, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_atomic(output, text.encode())
    except OSError as exc:
        raise InvalidInputError(f"cannot write {output}: {exc.strerror or exc}") from None
    if as_json:
        print_json({"dryRun": True, "target": target, "file": output})
    else:
        console.print(f"wrote the content for {printable(target)} to {printable(output)} (nothing sent)", markup=False)


@deploy.command("iotedge-list")
@click.option("--top", type=click.IntRange(min=1), help="At most this many (IoT Hub does not page this list).")
@click.option("--connection-string-env", metavar="VAR", help=_CS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print IoT Hub's records as JSON.")
@click.pass_context
def iotedge_list(ctx: click.Context, top: int | None, connection_string_env: str | None, as_json: bool) -> None:
    """List the hub's deployments: id, priority, target condition."""
    deployer, _ = _deployer(ctx, connection_string_env)
    found = deployer.list_deployments(top)
    if as_json:
        print_json(found)
        return
    for item in found:
        line = f"{item.get('id')}  priority {item.get('priority')}  {item.get('targetCondition') or ''}"
        console.print(printable(line), markup=False, soft_wrap=True)


@deploy.command("iotedge-show")
@click.argument("deployment_id")
@click.option("--connection-string-env", metavar="VAR", help=_CS_HELP)
@click.pass_context
def iotedge_show(ctx: click.Context, deployment_id: str, connection_string_env: str | None) -> None:
    """Print one deployment as IoT Hub holds it (JSON: content, metrics, etag)."""
    deployer, _ = _deployer(ctx, connection_string_env)
    print_json(deployer.get_deployment(deployment_id))


@deploy.command("iotedge-delete")
@click.argument("deployment_id")
@click.option("--connection-string-env", metavar="VAR", help=_CS_HELP)
@click.pass_context
def iotedge_delete(ctx: click.Context, deployment_id: str, connection_string_env: str | None) -> None:
    """Delete a deployment; its devices fall back to the next deployment that targets them."""
    deployer, connection = _deployer(ctx, connection_string_env)
    deployer.delete_deployment(deployment_id)
    console.print(f"deleted deployment {printable(deployment_id)} on {printable(connection.host_name)}", markup=False)
