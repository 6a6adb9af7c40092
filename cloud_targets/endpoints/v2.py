"""Azure ML v2 managed online endpoint YAML, read as ``az ml online-endpoint`` / ``online-deployment`` read it.

``endpoint.yml`` (``managedOnlineEndpoint.schema.json``): ``name``, ``auth_mode`` (``key`` | ``aml_token``),
``description``, ``tags``, ``traffic``. A deployment YAML (``managedOnlineDeployment.schema.json``): ``name``,
``endpoint_name``, ``model`` (``{path: ../model-1/model/}`` or ``azureml:NAME:VERSION``), ``code_configuration``
(``code: DIR`` or the older ``code: {local_path: DIR}``, ``scoring_script``), ``environment`` (``conda_file``,
``image``), ``instance_type``, ``instance_count``, ``environment_variables``, ``request_settings``, probes.

Paths are relative to the YAML file's folder. Keys the schema has that edgepack does not use are warned
about; unknown keys are warned about with the key probably meant; a missing required key or a value of the
wrong type is an :class:`V2SpecError` naming the key and the file. ``--set key.path=value`` overrides are
applied to the document before it is read (:func:`apply_overrides`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packager.errors import InvalidInputError

ENDPOINT_SCHEMA = "managedOnlineEndpoint.schema.json"
DEPLOYMENT_SCHEMA = "managedOnlineDeployment.schema.json"
#: v2's naming rule for endpoints and deployments (lowercase here: they name local services and Kubernetes objects).
NAME_REGEX = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
AUTH_MODES = {"key": "key", "aml_token": "token"}
MAX_YAML_BYTES = 1 << 20


class V2SpecError(InvalidInputError):
    """A v2 YAML file ``az ml`` would refuse (or edgepack cannot honour); the message names the key and file."""


# key -> what edgepack does with it ("" used; a text: warned with that reason). Nested schemas below.
ENDPOINT_KEYS: dict[str, str] = {
    "$schema": "",
    "name": "",
    "description": "",
    "tags": "",
    "auth_mode": "",
    "traffic": "",
    "type": "",
    "kind": "",
    "properties": "",
    "compute": "the compute comes from --local or the Kubernetes context (--ct)",
    "identity": "managed identities are an Azure feature; the deployments run without one",
    "mirror_traffic": "traffic mirroring is not supported; the split in traffic is used",
    "public_network_access": "local endpoints listen on localhost; Kubernetes ones as the Service type says",
}
DEPLOYMENT_KEYS: dict[str, str] = {
    "$schema": "",
    "name": "",
    "endpoint_name": "",
    "description": "",
    "tags": "",
    "type": "",
    "properties": "",
    "model": "",
    "code_configuration": "",
    "environment": "",
    "environment_variables": "",
    "instance_type": "",
    "instance_count": "",
    "request_settings": "",
    "liveness_probe": "",
    "readiness_probe": "",
    "scale_settings": "",
    "app_insights_enabled": "Application Insights is an Azure service; use `edgepack endpoint get-logs`",
    "model_mount_path": "the models are in the image at $AZUREML_MODEL_DIR; custom containers are not supported",
    "egress_public_network_access": "network isolation is an Azure feature",
    "data_collector": "data collection is an Azure feature",
    "private_network_connection": "network isolation is an Azure feature",
}
MODEL_KEYS = {
    "$schema": "",
    "name": "",
    "version": "",
    "path": "",
    "local_path": "",
    "description": "",
    "tags": "",
    "type": "",
    "properties": "",
    "stage": "",
}
CODE_KEYS = {"code": "", "scoring_script": ""}
ENVIRONMENT_KEYS = {
    "$schema": "",
    "name": "",
    "version": "",
    "image": "",
    "conda_file": "",
    "docker": "",
    "description": "",
    "tags": "",
    "os_type": "",
    "path": "",
    "build": "building from a Docker context is not supported; give image and conda_file",
    "inference_config": "custom container routes are not supported: the scoring server's are used",
}
REQUEST_KEYS = {"request_timeout_ms": "", "max_concurrent_requests_per_instance": "", "max_queue_wait_ms": ""}
PROBE_KEYS = {"period": "", "initial_delay": "", "timeout": "", "success_threshold": "", "failure_threshold": ""}
SCALE_KEYS = {
    "type": "",
    "min_instances": "",
    "max_instances": "",
    "target_utilization_percentage": "",
    "polling_interval": "",
    "target_utilization": "",
}


@dataclass
class V2Endpoint:
    """``endpoint.yml``: what :meth:`Endpoint.create` needs (``auth_mode`` already edgepack's: key or token)."""

    name: str
    auth_mode: str = "key"
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    traffic: dict[str, int] | None = None
    source: Path | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class V2Model:
    """A deployment's model: a local ``path`` to register (file or folder) or a registered ``name:version``."""

    path: Path | None = None
    name: str | None = None
    version: int | None = None

    @property
    def registered(self) -> bool:
        return self.path is None


@dataclass
class V2Deployment:
    """A deployment YAML: one version of an endpoint."""

    name: str
    endpoint_name: str
    model: V2Model | None = None
    code: Path | None = None
    scoring_script: str | None = None
    conda_file: Path | None = None
    image: str | None = None
    environment_ref: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    instance_type: str | None = None
    instance_count: int = 1
    request_settings: dict[str, int] = field(default_factory=dict)
    liveness_probe: dict[str, int] = field(default_factory=dict)
    scale_settings: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    source: Path | None = None
    warnings: list[str] = field(default_factory=list)


# -- reading ----------------------------------------------------------------------------------------------------
def read_yaml(path: str | Path, what: str) -> tuple[dict[str, Any], Path]:
    """The YAML document of ``path`` (a mapping) and the file's absolute path."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise V2SpecError(f"{what} {file} does not exist; pass the path of the YAML file with -f")
    if file.stat().st_size > MAX_YAML_BYTES:
        raise V2SpecError(f"{what} {file} is larger than {MAX_YAML_BYTES} bytes; it is not a v2 YAML file")
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise V2SpecError(f"cannot read {what} {file}: {exc}") from None
    except yaml.YAMLError as exc:
        raise V2SpecError(f"{what} {file} is not valid YAML ({' '.join(str(exc).split())}); fix the syntax") from None
    if doc is None:
        raise V2SpecError(f"{what} {file} is empty; it needs at least name")
    if not isinstance(doc, dict):
        raise V2SpecError(f"{what} {file} must be a YAML mapping (key: value lines), not {type(doc).__name__}")
    return doc, file.resolve()


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``--set key.path=value`` (v2's ``--set``): the value is read as a YAML scalar (``2``, ``true``, text)."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise V2SpecError(f"--set {item!r}: give KEY=VALUE, e.g. --set instance_count=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = doc
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None or not isinstance(child, dict):
                if child is not None:
                    raise V2SpecError(f"--set {key}: {part} is {type(child).__name__}, not a mapping")
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return doc


def _unknown(key: str, known: Mapping[str, str], where: str) -> str:
    lower = {k.lower(): k for k in known}
    close = [lower[key.lower()]] if key.lower() in lower else difflib.get_close_matches(key, list(known), 1, 0.7)
    meant = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key {key!r} ignored{meant}"


def _check_keys(node: Mapping[str, Any], known: Mapping[str, str], where: str, prefix: str = "") -> list[str]:
    """Warnings for keys edgepack does not use (with the reason) and unknown ones (with the key meant)."""
    warnings = []
    for raw in node:
        key = str(raw)
        if key not in known:
            warnings.append(_unknown(prefix + key, {prefix + k: v for k, v in known.items()}, where))
        elif known[key] and node[raw] is not None:
            warnings.append(f"{where}: {prefix}{key} is not used ({known[key]}); ignored")
    return warnings


def _str(node: Mapping[str, Any], key: str, where: str, required: bool = False, label: str = "") -> str | None:
    value = node.get(key)
    label = label or key
    if value is None or value == "":
        if required:
            raise V2SpecError(f"{where}: {label} is required; add `{label}: ...`")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise V2SpecError(f"{where}: {label} must be a string, not {type(value).__name__}")
    return str(value)


def _int(node: Mapping[str, Any], key: str, where: str, label: str, minimum: int = 0) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise V2SpecError(f"{where}: {label} must be a whole number, not {value!r}")
    if value < minimum:
        raise V2SpecError(f"{where}: {label} must be at least {minimum}, not {value}")
    return value


def _mapping(node: Mapping[str, Any], key: str, where: str, label: str = "") -> dict[str, Any]:
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2SpecError(f"{where}: {label or key} must be a mapping, not {type(value).__name__}")
    return value


def _string_map(node: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in _mapping(node, key, where).items()}


def validate_name(name: str, what: str, where: str) -> str:
    """v2's rule (3-32 characters, a letter first, letters, digits, dashes), lowercase as services need."""
    if 3 <= len(name) <= 32 and re.fullmatch(NAME_REGEX, name):
        return name
    hint = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    example = f"; for example {hint!r}" if 3 <= len(hint) <= 32 and re.fullmatch(NAME_REGEX, hint) else ""
    raise V2SpecError(
        f"{where}: {what} name {name!r} is invalid: use 3-32 lowercase letters, digits or dashes, starting with a "
        f"letter and ending with a letter or digit{example}"
    )


def _local_path(value: Any, base: Path, where: str, label: str, want_dir: bool | None) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise V2SpecError(f"{where}: {label} must be a path (relative to the YAML file), not {value!r}")
    if value.startswith("azureml:"):
        raise V2SpecError(
            f"{where}: {label} {value!r} is a registered asset; edgepack needs a local path here "
            "(relative to the YAML file)"
        )
    text = value[len("file:") :] if value.startswith("file:") else value
    path = (base / Path(text).expanduser()).resolve()
    if not path.exists():
        raise V2SpecError(
            f"{where}: {label} {value} does not exist (looked for {path}); paths are relative to the YAML file"
        )
    if want_dir is True and not path.is_dir():
        raise V2SpecError(f"{where}: {label} {value} must be a folder")
    if want_dir is False and not path.is_file():
        raise V2SpecError(f"{where}: {label} {value} must be a file")
    return path


# -- traffic ----------------------------------------------------------------------------------------------------
def parse_traffic(value: Any, where: str = "--traffic") -> dict[str, int]:
    """v2's traffic: ``"blue=90 green=10"`` (the CLI's form) or a YAML mapping; whole percents summing to 100
    (or all 0)."""
    pairs: list[tuple[str, Any]]
    if isinstance(value, str):
        pairs = []
        for item in value.replace(",", " ").split():
            name, sep, pct = item.partition("=")
            if not sep or not name:
                raise V2SpecError(f'{where}: {item!r} is not NAME=PERCENT; give e.g. "blue=90 green=10"')
            pairs.append((name, pct))
    elif isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        raise V2SpecError(f"{where}: traffic must map deployment names to percents, e.g. blue: 90, green: 10")
    if not pairs:
        raise V2SpecError(f'{where}: no deployment given; give e.g. "blue=90 green=10"')
    traffic: dict[str, int] = {}
    for name, pct in pairs:
        if isinstance(pct, str) and pct.strip().isdigit():
            pct = int(pct)
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise V2SpecError(f"{where}: {name}'s traffic must be a whole percent from 0 to 100, not {pct!r}")
        if name in traffic:
            raise V2SpecError(f"{where}: {name} is given twice")
        traffic[name] = pct
    total = sum(traffic.values())
    if total not in (0, 100):
        raise V2SpecError(f"{where}: the traffic adds up to {total}; it must add up to 100 (or be all 0)")
    return traffic


# -- endpoint.yml -----------------------------------------------------------------------------------------------
def endpoint_from_dict(doc: Mapping[str, Any], where: str = "endpoint YAML", source: Path | None = None) -> V2Endpoint:
    """A :class:`V2Endpoint` from an ``endpoint.yml`` document."""
    warnings = _check_keys(doc, ENDPOINT_KEYS, where)
    name = validate_name(_str(doc, "name", where, required=True) or "", "endpoint", where)
    raw_auth = _str(doc, "auth_mode", where) or "key"
    auth = raw_auth.lower()
    if auth == "aad_token":
        raise V2SpecError(f"{where}: auth_mode aad_token (Microsoft Entra) is not supported: use key or aml_token")
    if auth not in AUTH_MODES:
        raise V2SpecError(f"{where}: auth_mode {raw_auth!r} is not one of key, aml_token")
    kind = _str(doc, "type", where)
    if kind is not None and kind.lower() != "online":
        raise V2SpecError(f"{where}: type {kind!r}: only online endpoints are supported")
    traffic = parse_traffic(doc["traffic"], f"{where}: traffic") if doc.get("traffic") else None
    return V2Endpoint(
        name=name,
        auth_mode=AUTH_MODES[auth],
        description=_str(doc, "description", where),
        tags=_string_map(doc, "tags", where),
        traffic=traffic,
        source=source,
        warnings=warnings,
    )


def load_endpoint(path: str | Path, overrides: Iterable[str] = ()) -> V2Endpoint:
    """``endpoint.yml`` (v2's ``az ml online-endpoint create -f``)."""
    doc, file = read_yaml(path, "endpoint YAML")
    apply_overrides(doc, overrides)
    return endpoint_from_dict(doc, f"endpoint YAML {file}", file)


# -- deployment YAML --------------------------------------------------------------------------------------------
def _model(value: Any, base: Path, where: str, warnings: list[str]) -> V2Model | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _model_ref(value, where)
    if not isinstance(value, dict):
        raise V2SpecError(f"{where}: model must be azureml:NAME:VERSION or a mapping with path, not {value!r}")
    warnings += _check_keys(value, MODEL_KEYS, where, "model.")
    raw_path = value.get("path", value.get("local_path"))
    name = _str(value, "name", where, label="model.name")
    if raw_path is None:
        if name is None:
            raise V2SpecError(f"{where}: model needs path (a local file or folder) or azureml:NAME:VERSION")
        version = _int(value, "version", where, "model.version", 1)
        return V2Model(name=name, version=version)
    if "local_path" in value and "path" not in value:
        warnings.append(f"{where}: model.local_path is the older spelling of model.path; read as path")
    path = _local_path(raw_path, base, where, "model.path", None)
    if value.get("version") is not None:
        warnings.append(
            f"{where}: model.version is not used with model.path: the model is registered as the next version"
        )
    return V2Model(path=path, name=name)


def _model_ref(value: str, where: str) -> V2Model:
    match = re.fullmatch(r"azureml:([^:@/]+)(?::(\d+)|@latest)?", value.strip())
    if not match:
        raise V2SpecError(
            f"{where}: model {value!r} is not azureml:NAME:VERSION (a registered model) or a mapping with path"
        )
    return V2Model(name=match.group(1), version=int(match.group(2)) if match.group(2) else None)


def _code(value: Any, base: Path, where: str, warnings: list[str]) -> tuple[Path | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise V2SpecError(f"{where}: code_configuration must be a mapping with code and scoring_script")
    warnings += _check_keys(value, CODE_KEYS, where, "code_configuration.")
    code = value.get("code")
    if isinstance(code, dict):
        if "local_path" not in code:
            raise V2SpecError(f"{where}: code_configuration.code needs local_path (or give the folder as code: DIR)")
        code = code["local_path"]
    script = _str(value, "scoring_script", where, required=True, label="code_configuration.scoring_script")
    if code is None:
        raise V2SpecError(f"{where}: code_configuration.code is required; add `code: DIR` (the scoring code's folder)")
    folder = _local_path(code, base, where, "code_configuration.code", True)
    assert script is not None
    if not (folder / script).is_file():
        raise V2SpecError(
            f"{where}: code_configuration.scoring_script {script} is not in {folder}; it is relative to code"
        )
    return folder, script


def _environment(value: Any, base: Path, dep: V2Deployment, where: str) -> None:
    if value is None:
        return
    if isinstance(value, str):
        if not value.startswith("azureml:"):
            raise V2SpecError(f"{where}: environment must be azureml:NAME:VERSION or a mapping with image/conda_file")
        dep.environment_ref = value
        return
    if not isinstance(value, dict):
        raise V2SpecError(f"{where}: environment must be a mapping with image and conda_file, not {value!r}")
    dep.warnings += _check_keys(value, ENVIRONMENT_KEYS, where, "environment.")
    docker = _mapping(value, "docker", where, "environment.docker")
    dep.image = _str(value, "image", where, label="environment.image") or _str(
        docker, "image", where, label="environment.docker.image"
    )
    if value.get("conda_file") is not None:
        dep.conda_file = _local_path(value["conda_file"], base, where, "environment.conda_file", False)


def _settings(node: Mapping[str, Any], key: str, known: Mapping[str, str], where: str, dep: V2Deployment) -> dict:
    value = _mapping(node, key, where)
    dep.warnings += _check_keys(value, known, where, f"{key}.")
    return {k: _int(value, k, where, f"{key}.{k}", 1) for k in known if k in value and value[k] is not None}


def deployment_from_dict(
    doc: Mapping[str, Any], base: Path, where: str = "deployment YAML", source: Path | None = None
) -> V2Deployment:
    """A :class:`V2Deployment` from a deployment document; paths are relative to ``base``."""
    warnings = _check_keys(doc, DEPLOYMENT_KEYS, where)
    name = validate_name(_str(doc, "name", where, required=True) or "", "deployment", where)
    endpoint = validate_name(_str(doc, "endpoint_name", where, required=True) or "", "endpoint", where)
    kind = _str(doc, "type", where)
    if kind is not None and kind.lower() not in ("managed", "kubernetes"):
        raise V2SpecError(f"{where}: type {kind!r} is not managed or kubernetes")
    dep = V2Deployment(name=name, endpoint_name=endpoint, source=source, warnings=warnings)
    dep.model = _model(doc.get("model"), base, where, dep.warnings)
    dep.code, dep.scoring_script = _code(doc.get("code_configuration"), base, where, dep.warnings)
    _environment(doc.get("environment"), base, dep, where)
    if dep.model is None and dep.code is None:
        raise V2SpecError(f"{where}: model is required; add `model: {{path: ../model/}}` or `model: azureml:NAME:1`")
    dep.environment_variables = _string_map(doc, "environment_variables", where)
    dep.instance_type = _str(doc, "instance_type", where)
    count = _int(doc, "instance_count", where, "instance_count", 1)
    dep.instance_count = 1 if count is None else count
    dep.request_settings = _settings(doc, "request_settings", REQUEST_KEYS, where, dep)
    dep.liveness_probe = _settings(doc, "liveness_probe", PROBE_KEYS, where, dep)
    _settings(doc, "readiness_probe", PROBE_KEYS, where, dep)
    if doc.get("readiness_probe"):
        dep.warnings.append(f"{where}: readiness_probe is not used (the scoring server's readiness check is); ignored")
    scale = _mapping(doc, "scale_settings", where)
    dep.warnings += _check_keys(scale, SCALE_KEYS, where, "scale_settings.")
    dep.scale_settings = dict(scale)
    dep.description = _str(doc, "description", where)
    dep.tags = _string_map(doc, "tags", where)
    return dep


def load_deployment(path: str | Path, overrides: Iterable[str] = ()) -> V2Deployment:
    """A deployment YAML (v2's ``az ml online-deployment create -f``)."""
    doc, file = read_yaml(path, "deployment YAML")
    apply_overrides(doc, overrides)
    return deployment_from_dict(doc, file.parent, f"deployment YAML {file}", file)


__all__ = [
    "V2Deployment",
    "V2Endpoint",
    "V2Model",
    "V2SpecError",
    "apply_overrides",
    "deployment_from_dict",
    "endpoint_from_dict",
    "load_deployment",
    "load_endpoint",
    "parse_traffic",
    "validate_name",
]
