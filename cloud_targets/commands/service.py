"""``edgepack service ...``: the deployed web services' lifecycle (v1's ``az ml service``).

``list``/``show`` print no secret, ``keys`` is the one command that prints keys, ``token`` prints a
bearer token (token auth). Unknown services and bad input exit non-zero with one error line.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cloud_targets.commands.common import (
    Stages,
    Warnings,
    check_file,
    confirm,
    deployment_config,
    echo,
    inference_config,
    inference_options,
    json_body,
    json_option,
    logged_warnings,
    open_ws,
    print_table,
    public_record,
)
from packager.cli.output import print_json, printable
from packager.errors import EdgepackError, InvalidInputError

name_argument = click.argument("name")


def _service(ctx: click.Context, name: str) -> Any:
    from cloud_targets import Webservice

    return Webservice(open_ws(ctx), name)


def _live_state(service: Any, refresh: bool = True) -> str:
    """The state the target reports now (LOCAL always; remote targets when ``refresh``), else the stored one."""
    if service.compute_type != "LOCAL" and not refresh:
        return service.serialize()["state"]
    try:
        return service.state
    except EdgepackError as exc:
        from packager.cli.output import print_warning

        print_warning(f"service {service.name}: cannot read its state now ({exc}); showing the last one stored")
        return service.serialize()["state"]


def _error_line(name: str, error: str | None) -> str | None:
    """The error's first line (the rest is log lines: ``service logs`` prints them)."""
    if not error or not error.strip():
        return None
    lines = error.strip().splitlines()
    return lines[0] + (f" (more with `edgepack service logs {name}`)" if len(lines) > 1 else "")


@click.group()
def service() -> None:
    """Manage deployed web services (Local, ACI, AKS): list, show, logs, run, keys, update, delete."""


@service.command("list")
@click.option("--compute-type", type=click.Choice(["LOCAL", "ACI", "AKS", "AKSENDPOINT"], case_sensitive=False),
              help="Only services of this compute type.")  # fmt: skip
@click.option("--tag", "tags", multiple=True, metavar="K[=V]", help="Only services with this tag (repeatable).")
@json_option
@click.pass_context
def list_(ctx: click.Context, compute_type: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List the workspace's web services: name, compute type, state, scoring URI, models."""
    from cloud_targets import Webservice

    found = Webservice.list(open_ws(ctx), compute_type=compute_type, tags=list(tags) or None)
    docs = [public_record(s, _live_state(s, refresh=False)) for s in found]
    if as_json:
        print_json(docs)
        return
    if not docs:
        echo("no web services (deploy one with `edgepack deploy -n NAME -m MODEL ...`)")
        return
    rows = [(d["name"], d["computeType"], d["state"], d["scoringUri"] or "-", ", ".join(d["models"])) for d in docs]
    print_table(("NAME", "TYPE", "STATE", "SCORING URI", "MODELS"), rows)


@service.command()
@name_argument
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one service: state, URIs, models, auth, settings (no secrets)."""
    svc = _service(ctx, name)
    doc = public_record(svc, _live_state(svc))
    if as_json:
        print_json(doc)
        return
    auth = "key" if doc["authEnabled"] else "token" if doc["tokenAuthEnabled"] else "none"
    rows = [
        ("name", doc["name"]),
        ("compute type", doc["computeType"]),
        ("state", doc["state"]),
        ("error", _error_line(name, doc.get("error"))),
        ("scoring URI", doc.get("scoringUri")),
        ("swagger URI", doc.get("swaggerUri")),
        ("models", ", ".join(doc.get("models") or [])),
        ("image", doc.get("imageId")),
        ("auth", auth),
        ("tags", ", ".join(f"{k}={v}" for k, v in (doc.get("tags") or {}).items())),
        ("description", doc.get("description")),
        ("created", doc.get("createdTime")),
        ("updated", doc.get("updatedTime")),
    ]
    for key, value in rows:
        if value not in (None, ""):
            echo(f"{key:<13} {value}")


@service.command()
@name_argument
@click.option("-l", "--num-lines", type=click.IntRange(min=1), default=5000, show_default=True,
              help="How many of the last lines.")  # fmt: skip
@click.pass_context
def logs(ctx: click.Context, name: str, num_lines: int) -> None:
    """Print the service's last log lines (container or process output)."""
    text = _service(ctx, name).get_logs(num_lines)
    for line in text.splitlines():
        sys.stdout.write(printable(line) + "\n")


@service.command()
@name_argument
@click.option("-d", "--input-data", "data", metavar="JSON", help="The request body, e.g. '{\"data\": [[1, 2]]}'.")
@click.option("-f", "--input-file", "file", type=click.Path(exists=True, dir_okay=False), help="Read the body here.")
@json_option
@click.pass_context
def run(ctx: click.Context, name: str, data: str | None, file: str | None, as_json: bool) -> None:
    """Score: POST the input to the service's /score (with its key or a fresh token) and print the answer."""
    if bool(data) == bool(file):
        raise click.UsageError("give the input with either -d JSON or -f FILE")
    answer = _service(ctx, name).run(json_body(data, file))
    if as_json or not isinstance(answer, str):
        print_json(answer)
    else:
        sys.stdout.write(printable(answer) + "\n")


@service.command()
@name_argument
@json_option
@click.pass_context
def keys(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print the service's primary and secondary keys (key auth). The only command that prints them."""
    primary, secondary = _service(ctx, name).get_keys()
    if as_json:
        print_json({"primaryKey": primary, "secondaryKey": secondary})
        return
    echo(f"primary    {primary}")
    echo(f"secondary  {secondary}")


@service.command("regen-key")
@name_argument
@click.option("--key", "which", required=True, type=click.Choice(["Primary", "Secondary"], case_sensitive=False),
              help="Which key to replace.")  # fmt: skip
@click.option(
    "--set-key",
    envvar="EDGEPACK_SET_KEY",
    metavar="VALUE",
    help="The new key (at least 16 characters); '-' reads it from stdin, which, like EDGEPACK_SET_KEY, keeps it "
    "out of the process list [default: a random one].",
)
@click.pass_context
def regen_key(ctx: click.Context, name: str, which: str, set_key: str | None) -> None:
    """Replace a key and restart the service with it: the old key stops working."""
    from click.core import ParameterSource

    from packager.cli.output import print_warning

    if set_key == "-":
        set_key = sys.stdin.readline().rstrip("\r\n")
    elif set_key is not None and ctx.get_parameter_source("set_key") == ParameterSource.COMMANDLINE:
        print_warning(
            "--set-key VALUE shows the key in the process list while the command runs; "
            "use `--set-key -` (reads stdin) or EDGEPACK_SET_KEY"
        )
    svc = _service(ctx, name)
    with Stages() as stages, stages.stage(f"{name}: replacing the {which.capitalize()} key"):
        svc.regen_key(which.capitalize(), set_key=set_key)
    echo(f"replaced the {which.capitalize()} key of {name}; `edgepack service keys {name}` prints it")


@service.command()
@name_argument
@json_option
@click.pass_context
def token(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print a bearer token for the service (token auth) and when to refresh it."""
    access, refresh_after = _service(ctx, name).get_token()
    if as_json:
        print_json({"accessToken": access, "refreshAfter": refresh_after.isoformat()})
        return
    echo(access)
    echo(f"refresh after {refresh_after.isoformat()}")


@service.command()
@name_argument
@click.option("-m", "--model", "models", multiple=True, metavar="NAME[:VERSION]",
              help="The models the service serves from now on (repeatable; replaces the list).")  # fmt: skip
@inference_options
@click.option("--dc", "--deploy-config-file", "dc", type=click.Path(dir_okay=False), metavar="FILE",
              help="New deployment settings (v1 deploymentconfig.json; same computeType).")  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Do not wait for the service to be Healthy again.")
@json_option
@click.pass_context
def update(
    ctx: click.Context, name: str, models: tuple[str, ...], dc: str | None, no_wait: bool, as_json: bool, **flags: Any
) -> None:
    """Change a service's models, code or settings: rebuilds what changed (cached layers) and restarts."""
    from cloud_targets import WebserviceException
    from cloud_targets.commands.deploy import fail, report

    warnings = Warnings()
    with logged_warnings(warnings):
        ic = inference_config(**flags)
        if ic is not None:
            warnings.add(ic.warnings)
        config = None
        if dc is not None:
            check_file(dc, "--dc")
            config, config_warnings = deployment_config(dc)
            warnings.add(config_warnings)
        if not models and ic is None and config is None:
            raise click.UsageError("nothing to update: give -m MODEL, --ic FILE (or --es/--sd) or --dc FILE")
        svc = _service(ctx, name)
        with Stages() as stages:
            with stages.stage(f"{name}: updating"):
                svc.update(models=list(models) or None, inference_config=ic, deployment_config=config)
            if not no_wait:
                with stages.stage(f"{name}: waiting for Healthy"):
                    try:
                        svc.wait_for_deployment()
                    except WebserviceException as exc:
                        fail(name, exc)
        report(svc, None if no_wait else svc.state, as_json, warnings)


@service.command()
@name_argument
@click.pass_context
def reload(ctx: click.Context, name: str) -> None:
    """LOCAL services: copy the entry script and source directory again and restart, without rebuilding."""
    from cloud_targets import LocalWebservice, WebserviceException
    from cloud_targets.commands.deploy import fail

    svc = _service(ctx, name)
    if not isinstance(svc, LocalWebservice):
        raise InvalidInputError(
            f"service {name} is {svc.compute_type}: reload is for LOCAL services; use `edgepack service update "
            f"{name} --ic FILE` to deploy new code"
        )
    with Stages() as stages, stages.stage(f"{name}: reloading"):
        try:
            svc.reload()
        except WebserviceException as exc:
            fail(name, exc)
    echo(f"reloaded {name}: {svc.state}")


@service.command()
@name_argument
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Stop and remove a service: no container or process is left behind."""
    svc = _service(ctx, name)
    confirm(yes, f"delete service {name} ({svc.compute_type})", "-y")
    with Stages() as stages, stages.stage(f"{name}: deleting"):
        svc.delete()
    echo(f"deleted service {name}")


__all__ = ["service"]
