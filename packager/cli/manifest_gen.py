"""``edgepack manifest gen``: write IoT Edge deployment manifests (from images, a build, or a template).

The manifests may hold registry passwords (the edge agent needs them): they are written 0600 and
never printed; ``--json`` prints what was written (files, images, registries), not the content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from packager.cli.output import console, err_console, print_json, printable
from packager.errors import InvalidInputError

_IOTEDGEDEV_PLATFORMS = {"linux/amd64": "amd64", "linux/arm64": "arm64v8", "linux/arm/v7": "arm32v7"}
_ROUTE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def manifest_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """What shapes a generated manifest (``manifest gen`` and ``build-and-push --manifest``)."""
    options = [
        click.option(
            "--route", "routes", multiple=True, metavar="[NAME=]ROUTE",
            help="$edgeHub route (repeatable): 'FROM ... INTO ...' or a JSON object {route, priority, timeToLiveSecs} "
            "[default: each module's outputs to $upstream].",
        ),
        click.option("--runtime-version", default="1.5", show_default=True, help="edgeAgent/edgeHub image version."),
        click.option("--store-and-forward-ttl", type=int, default=7200, show_default=True,
                     help="Seconds edgeHub keeps messages it cannot deliver."),
        click.option("--no-credentials", is_flag=True,
                     help="Leave registryCredentials out (default: docker login's for the images' registries)."),
        click.option("--env", "envs", multiple=True, metavar="[MODULE=]KEY=VALUE", help="Module env variable."),
        click.option("--desired", "desired", multiple=True, metavar="[MODULE=]KEY=JSON",
                     help="Module twin desired property (JSON value, e.g. threshold=0.8)."),
        click.option("--threshold", type=float, help="Scoring twin: results get above_threshold."),
        click.option("--max-batch-size", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Scoring twin: messages scored in one model run."),
        click.option("--drop-below-threshold", is_flag=True, help="Scoring twin: drop results under the threshold."),
        click.option("--model-version", help="Scoring twin: model_version (for a reconfigure hook)."),
        click.option("--host-network", "host_network", multiple=True, metavar="MODULE",
                     help="Run MODULE with host networking (repeatable; '' or the only module)."),
        click.option("--port", "ports", multiple=True, metavar="[MODULE=]CONTAINER:HOST", help="Publish a port."),
        click.option("--bind", "binds", multiple=True, metavar="[MODULE=]SRC:DST[:ro]", help="Bind mount."),
        click.option("--device", "devices", multiple=True, metavar="[MODULE=]/dev/X[:/dev/Y]", help="Device."),
        click.option("--fpga-device", "fpga_devices", multiple=True, metavar="[MODULE=]/dev/X[:/dev/Y]",
                     help="FPGA card: mapped like --device, and EDGEPACK_FPGA_DEVICE set to its path in the module."),
        click.option("--memory", "memory", multiple=True, metavar="[MODULE=]MIB", help="Memory limit in MiB."),
        click.option("--cpus", "cpus", multiple=True, metavar="[MODULE=]N", help="CPU limit."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


MANIFEST_FLAGS = (
    "routes", "runtime_version", "store_and_forward_ttl", "no_credentials", "envs", "desired", "threshold",
    "max_batch_size", "drop_below_threshold", "model_version", "host_network", "ports", "binds", "devices",
    "fpga_devices", "memory", "cpus",
)  # fmt: skip


def _for_module(value: str, names: Sequence[str], flag: str) -> tuple[str, str]:
    """``MODULE=rest`` when MODULE is one of ``names``, else ``rest`` for the only module."""
    head, sep, rest = value.partition("=")
    if sep and head in names:
        return head, rest
    if len(names) == 1:
        return names[0], value
    raise InvalidInputError(f"{flag} {value!r}: say which module: {flag} MODULE={value} (modules: {', '.join(names)})")


def parse_routes(items: Sequence[str]) -> dict[str, Any] | None:
    """``--route`` values → ``{name: route}`` (``None`` when none is given: the default routes)."""
    if not items:
        return None
    routes: dict[str, Any] = {}
    for i, item in enumerate(items, 1):
        head, sep, rest = item.partition("=")
        name = f"route{i}"
        if sep and head and set(head) <= _ROUTE_NAME_CHARS and not head.upper().startswith("FROM"):
            name, item = head, rest
        text = item.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"--route {name}: not valid JSON ({exc.msg})") from None
        else:
            value = text
        if name in routes:
            raise InvalidInputError(f"--route {name} is given twice: route names must be unique")
        routes[name] = value
    return routes


def _number(text: str, flag: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise InvalidInputError(f"{flag} {text!r} is not a number") from None


def module_settings(flags: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-module ``env``, ``desired`` and ``create_options`` from the flags."""
    from packager.iotedge import create_options as co

    out: dict[str, dict[str, Any]] = {n: {"env": {}, "desired": {}, "create_options": {}} for n in names}

    def add(name: str, options: dict[str, Any]) -> None:
        out[name]["create_options"] = co.merge(out[name]["create_options"], options)

    for value in flags.get("envs", ()):
        name, rest = _for_module(value, names, "--env")
        key, sep, val = rest.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--env {value!r}: use [MODULE=]KEY=VALUE")
        out[name]["env"][key] = val
    for value in flags.get("desired", ()):
        name, rest = _for_module(value, names, "--desired")
        key, sep, val = rest.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--desired {value!r}: use [MODULE=]KEY=JSON")
        try:
            out[name]["desired"][key] = json.loads(val)
        except json.JSONDecodeError:
            out[name]["desired"][key] = val  # a bare word is a string
    for value in flags.get("host_network", ()):
        if value and value not in names:
            raise InvalidInputError(f"--host-network {value!r}: no such module (modules: {', '.join(names)})")
        name, _ = _for_module(f"{value}=" if value else value, names, "--host-network")
        add(name, co.host_network())
    for value in flags.get("ports", ()):
        name, rest = _for_module(value, names, "--port")
        container, sep, host = rest.partition(":")
        if not sep or not container or not host:
            raise InvalidInputError(f"--port {value!r}: use [MODULE=]CONTAINER:HOST, e.g. 5001:5001")
        add(name, co.port_bindings({container: host}))
    for value in flags.get("binds", ()):
        name, rest = _for_module(value, names, "--bind")
        add(name, co.binds([rest]))
    for value in flags.get("devices", ()):
        name, rest = _for_module(value, names, "--device")
        add(name, co.devices([rest]))
    for value in flags.get("fpga_devices", ()):
        name, rest = _for_module(value, names, "--fpga-device")
        add(name, co.devices([rest]))
        host, _, inside = rest.partition(":")
        out[name]["env"].setdefault("EDGEPACK_FPGA_DEVICE", inside or host)
    for value in flags.get("memory", ()):
        name, rest = _for_module(value, names, "--memory")
        add(name, co.limits(memory_mb=_number(rest, "--memory", int)))
    for value in flags.get("cpus", ()):
        name, rest = _for_module(value, names, "--cpus")
        add(name, co.limits(cpus=_number(rest, "--cpus", float)))
    return out


def scoring_options(flags: Mapping[str, Any], per_module: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`packager.iotedge.manifest.scoring_module` for one module."""
    options = {
        "max_batch_size": flags.get("max_batch_size") or 1,
        "threshold": flags.get("threshold"),
        "drop_below_threshold": bool(flags.get("drop_below_threshold")),
        "desired": per_module["desired"],
        "env": per_module["env"],
        "create_options": per_module["create_options"],
    }
    if flags.get("model_version"):
        options["model_version"] = flags["model_version"]
    return options


def manifest_kwargs(
    flags: Mapping[str, Any], images: Sequence[str], given: Mapping[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Keyword arguments of :func:`packager.iotedge.manifest.build_manifest`: credentials are ``given``
    (``{registry: (user, password)}``) over docker login's for the images' registries."""
    from packager.iotedge.manifest import registry_credentials_for

    credentials = None if flags.get("no_credentials") else {**registry_credentials_for(images), **(given or {})}
    return {
        "routes": parse_routes(flags.get("routes", ())),
        "runtime_version": flags.get("runtime_version") or "1.5",
        "store_and_forward_ttl": flags.get("store_and_forward_ttl", 7200),
        "registry_credentials": credentials,
    }


def check_and_write(manifests: Mapping[str, dict[str, Any]], files: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Validate every manifest (all or nothing: an invalid one stops before any is written), then write them."""
    from packager.iotedge.manifest import has_credentials, write_manifest
    from packager.iotedge.validate import validate_manifest

    for key, doc in manifests.items():
        problems = validate_manifest(doc)
        if problems:
            shown = "; ".join(str(p) for p in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise InvalidInputError(f"the manifest for {key} is not valid: {shown}{more}")
    written = []
    for key, doc in manifests.items():
        path = write_manifest(files[key], doc)
        agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
        creds = agent["runtime"]["settings"].get("registryCredentials") or {}
        written.append(
            {
                "platform": key,
                "file": str(path),
                "modules": {n: m["settings"]["image"] for n, m in agent["modules"].items()},
                "registries": sorted(c.get("address", "") for c in creds.values() if isinstance(c, dict)),
                "private": has_credentials(doc),
            }
        )
    return written


def report(written: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json({"manifests": written})
        return
    for item in written:
        note = " (0600: holds registry credentials)" if item["private"] else ""
        console.print(f"wrote {printable(item['file'])}{note}", markup=False, highlight=False, soft_wrap=True)
        for name, image in item["modules"].items():
            console.print(f"  {printable(name)}: {printable(image)}", markup=False, highlight=False, soft_wrap=True)


def output_files(keys: Sequence[str], output: str) -> dict[str, Path]:
    """One file (``-o X.json``, one manifest) or ``deployment.<platform>.json`` files in a folder."""
    from packager.iotedge.manifest import manifest_file_names

    out = Path(output)
    if out.suffix == ".json":
        if len(keys) != 1:
            raise InvalidInputError(
                f"{len(keys)} manifests ({', '.join(keys)}): give a folder to -o, or one --platform, or --index"
            )
        return {keys[0]: out}
    return {k: out / name for k, name in manifest_file_names(keys).items()}


def _split_module(value: str) -> tuple[str, str]:
    name, sep, image = value.partition("=")
    if not sep or not name or not image:
        raise InvalidInputError(f"--module {value!r}: use NAME=IMAGE")
    return name, image


def _from_images(
    modules: Sequence[str], extra: Sequence[str], pin: bool, platform: str | None, flags: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    from packager.iotedge.manifest import ModuleSpec, build_manifest, platform_slug, scoring_module
    from packager.iotedge.manifest import pin_image as pin_one

    if platform and not pin:
        raise InvalidInputError("--platform with --module pins each image to that platform's digest: add --pin")

    def pin_image(image: str) -> str:
        return pin_one(image, platform)

    scoring = [_split_module(v) for v in modules]
    others = [_split_module(v) for v in extra]
    names = [n for n, _ in scoring + others]
    per_module = module_settings(flags, names)
    specs = [
        scoring_module(pin_image(image) if pin else image, name=name, **scoring_options(flags, per_module[name]))
        for name, image in scoring
    ]
    specs += [ModuleSpec(name, pin_image(image) if pin else image, **per_module[name]) for name, image in others]
    key = platform_slug(platform) if platform else "manifest"
    return {key: build_manifest(specs, **manifest_kwargs(flags, [s.image for s in specs]))}


def _from_build(
    summary_file: str, repository: str | None, platform: str | None, index: bool, flags: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    try:
        summary = json.loads(Path(summary_file).read_text()[: 16 * 2**20])
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"--from-build {summary_file}: not the JSON `build-and-push --json` printed ({exc})"
        ) from None
    return from_summary(summary, flags, repository=repository, platform=platform, index=index)


def from_summary(
    summary: Mapping[str, Any],
    flags: Mapping[str, Any],
    *,
    repository: str | None = None,
    platform: str | None = None,
    index: bool = False,
    name: str = "scoring",
    credentials: tuple[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Manifests for a build summary (``build-and-push`` and ``manifest gen --from-build``); ``credentials``
    (``build-and-push --username/--password``) are for the registry the build was pushed to."""
    from packager.image.reference import ImageRef
    from packager.iotedge.manifest import manifests_from_build

    per_module = module_settings(flags, [name])[name]
    reference = repository or str(summary.get("reference") or "")
    given = {ImageRef.parse(reference).registry: credentials} if credentials and reference else None
    return manifests_from_build(
        summary,
        repository=repository,
        name=name,
        per_platform=not index,
        platforms=[platform] if platform else None,
        module_options=scoring_options(flags, per_module),
        **manifest_kwargs(flags, [reference] if reference else [], given),
    )


@click.command("gen")
@click.option(
    "--module",
    "modules",
    multiple=True,
    metavar="NAME=IMAGE",
    help="edgepack scoring module (repeatable): EDGEPACK_IOTEDGE=true and its twin settings.",
)
@click.option(
    "--extra-module",
    "extra",
    multiple=True,
    metavar="NAME=IMAGE",
    help="Any other module (repeatable): no edgepack env or twin.",
)
@click.option(
    "--from-build",
    type=click.Path(exists=True, dir_okay=False),
    help="The JSON `edgepack build-and-push --json` printed: one manifest per platform.",
)
@click.option("--repository", metavar="REGISTRY/REPO", help="With --from-build of an unpushed build: where it is.")
@click.option("--index", is_flag=True, help="With --from-build: one manifest on the index digest.")
@click.option(
    "-f",
    "--template",
    type=click.Path(exists=True, dir_okay=False),
    help="iotedgedev deployment.template.json (${MODULES.x}, ${VAR} from the environment or .env).",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="NAME[.PLATFORM]=IMAGE",
    help="With -f: the image for ${MODULES.NAME[.PLATFORM]} (default: from modules/NAME/module.json).",
)
@click.option("--platform", help="Platform: of --from-build (linux/amd64), or the template's default (amd64).")
@click.option("--pin", is_flag=True, help="Pin tagged images to the digest the registry has for them.")
@click.option(
    "--build",
    is_flag=True,
    help="With -f: build (Docker) and push the modules the template uses first, pinned by digest.",
)
@manifest_options
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE|DIR",
    help="Manifest file (.json), or a folder for deployment.<platform>.json files.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON (never the credentials).")
def gen(
    modules: tuple[str, ...],
    extra: tuple[str, ...],
    from_build: str | None,
    repository: str | None,
    index: bool,
    template: str | None,
    images: tuple[str, ...],
    platform: str | None,
    pin: bool,
    build: bool,
    output: str,
    as_json: bool,
    **flags: Any,
) -> None:
    """Write a deployment manifest: $edgeAgent, $edgeHub, and each module's twin.

    \b
    From images:   edgepack manifest gen --module scoring=REG/REPO@sha256:... -o deployment.json
    From a build:  edgepack manifest gen --from-build build.json -o config/   (deployment.amd64.json, ...)
    From iotedgedev: edgepack manifest gen -f deployment.template.json -o config/deployment.amd64.json
    The manifest is validated before it is written; with registry credentials it is written 0600.
    """
    sources = sum(bool(x) for x in (modules or extra, from_build, template))
    if sources != 1:
        raise InvalidInputError("give one of --module NAME=IMAGE, --from-build FILE or -f deployment.template.json")
    if build and not template:
        raise InvalidInputError("--build builds an iotedgedev project: give -f deployment.template.json")
    if template:
        _template_flags_unused(flags)
        platform = _IOTEDGEDEV_PLATFORMS.get(platform or "", platform)
        manifests = {platform or "template": _from_template(template, images, platform, pin, build)}
    elif from_build:
        manifests = _from_build(from_build, repository, platform, index, flags)
    else:
        manifests = _from_images(modules, extra, pin, platform, flags)
    written = check_and_write(manifests, output_files(list(manifests), output))
    report(written, as_json)


_DEFAULTS = {"max_batch_size": 1, "runtime_version": "1.5", "store_and_forward_ttl": 7200}


def _template_flags_unused(flags: Mapping[str, Any]) -> None:
    """With -f the template says everything: refuse module/route flags instead of ignoring them."""
    given = [k for k in MANIFEST_FLAGS if flags.get(k) not in (None, False, (), _DEFAULTS.get(k))]
    if given:
        plural = {
            "routes": "route", "envs": "env", "ports": "port", "binds": "bind", "devices": "device",
            "fpga_devices": "fpga-device",
        }  # fmt: skip
        flag = "--" + plural.get(given[0], given[0]).replace("_", "-")
        raise InvalidInputError(f"{flag} does not apply to -f: the template sets routes, modules and twins")


def _from_template(
    template: str, images: Sequence[str], platform: str | None, pin: bool, build: bool = False
) -> dict[str, Any]:
    from packager.iotedge.manifest import pin_image
    from packager.iotedge.template import expand_template

    given: dict[str, Any] = {}
    if build:
        from packager.cli.output import RichReporter
        from packager.iotedge.project import build_project

        with RichReporter() as reporter:
            given.update(build_project(template, default_platform=platform, reporter=reporter))
    for value in images:
        key, sep, image = value.partition("=")
        if not sep or not key or not image:
            raise InvalidInputError(f"--image {value!r}: use NAME[.PLATFORM]=IMAGE")
        name, _, plat = key.partition(".")
        if plat:
            entry = given.setdefault(name, {})
            if isinstance(entry, dict):
                entry[plat] = image
        else:
            given[name] = image
    used: dict[str, str] = {}
    doc = expand_template(template, modules=given, default_platform=platform, used=used)
    if pin:
        agent = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
        for module in (agent.get("modules") or {}).values():
            settings = module.get("settings") or {}
            if settings.get("image") in used.values():
                settings["image"] = pin_image(settings["image"])
    if not used:
        err_console.print("warning: the template names no ${MODULES...} image", markup=False, highlight=False)
    return doc


__all__ = ["MANIFEST_FLAGS", "check_and_write", "from_summary", "gen", "manifest_options", "output_files", "report"]
