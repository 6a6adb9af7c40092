"""v1's ``deploymentconfig.json`` (or YAML) as the v1 CLI read it: ``az ml model deploy --dc FILE``.

The file is parsed as YAML first, then as JSON (v1's order). ``computeType`` picks the configuration
(``LOCAL``, ``ACI``, ``AKS``, ``AKSENDPOINT``, any case). Keys v1 did not know are ignored with a
warning naming them (and the key meant, for near misses), as are keys of another compute type;
values of the wrong type are errors naming the key. The result is validated with v1's rules, and
the settings the target cannot honour are added to the warnings.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloud_targets.config.errors import DeploymentConfigError
from cloud_targets.config.model import CONFIG_CLASSES, SECRET_FIELDS, DeploymentConfig
from cloud_targets.config.rules import coerce, shown
from cloud_targets.config.schema import BY_COMPUTE_TYPE, COMPUTE_TYPE_KEY, Entry, dotted

log = logging.getLogger(__name__)

_TYPES = ", ".join(BY_COMPUTE_TYPE)
_SSL_FILES = ("ssl_cert_pem_file", "ssl_key_pem_file")


def _leaves(entries: list[Entry]) -> dict[tuple[str, ...], Entry]:
    return {entry[0]: entry for entry in entries}


def _containers(entries: list[Entry]) -> set[tuple[str, ...]]:
    return {path[:i] for path, _, _ in entries for i in range(1, len(path))}


_ALL_LEAVES = {path for entries in BY_COMPUTE_TYPE.values() for path, _, _ in entries}
_ALL_CONTAINERS = {c for entries in BY_COMPUTE_TYPE.values() for c in _containers(entries)}


def _suggestion(path: tuple[str, ...], entries: list[Entry]) -> str | None:
    """The key probably meant by an unknown ``path``: same-level near miss, other case, or a Python name."""
    key, parent = path[-1], path[:-1]
    siblings = sorted({p[len(parent)] for p, _, _ in entries if p[: len(parent)] == parent and len(p) > len(parent)})
    for sibling in siblings:
        if sibling.lower() == key.lower():
            return dotted((*parent, sibling))
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.75)
    if close:
        return dotted((*parent, close[0]))
    by_field = {name: p for p, name, _ in reversed(entries)}  # a v1 Python parameter name used as a key
    if not parent and key in by_field:
        return dotted(by_field[key])
    return None


def _walk(
    node: Mapping[str, Any],
    parent: tuple[str, ...],
    entries: list[Entry],
    compute_type: str,
    kwargs: dict[str, Any],
    origin: dict[str, str],
    warnings: list[str],
) -> None:
    leaves, containers = _leaves(entries), _containers(entries)
    for raw_key, value in node.items():
        key = str(raw_key)
        path = (*parent, key)
        where = dotted(path)
        if path == (COMPUTE_TYPE_KEY,):
            continue
        if path in leaves:
            _, name, kind = leaves[path]
            if value is None:  # v1 read it with dict.get: same as absent
                continue
            parsed = coerce(value, kind, where, secret=name in SECRET_FIELDS)
            if name in kwargs and kwargs[name] != parsed:
                raise DeploymentConfigError(
                    f"{origin[name]} and {where} both set {name} to different values: keep one of them"
                )
            kwargs[name], origin[name] = parsed, where
        elif path in containers:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                inner = sorted({p[len(path)] for p, _, _ in entries if p[: len(path)] == path})
                raise DeploymentConfigError(
                    f"{where} must be a mapping with keys like {', '.join(inner)}, not {type(value).__name__}"
                )
            _walk(value, path, entries, compute_type, kwargs, origin, warnings)
        elif path in _ALL_LEAVES or path in _ALL_CONTAINERS:
            warnings.append(
                f"{where} is not a setting of computeType {compute_type} (Azure ML v1 ignored it there too); ignored"
            )
        else:
            hint = _suggestion(path, entries)
            meant = f"; did you mean {hint!r}?" if hint else ""
            warnings.append(f"unknown key {where!r} ignored (Azure ML v1 ignored it too){meant}")


def deployment_config_from_dict(
    doc: Any, base_dir: str | Path | None = None, where: str = "deployment config"
) -> tuple[DeploymentConfig, list[str]]:
    """``(configuration, warnings)`` from a v1 ``deploymentconfig.json`` document.

    Relative ``sslCertificate``/``sslKey`` paths are taken from ``base_dir`` when the file is there
    (else the working folder, as v1). Errors (:class:`DeploymentConfigError`) start with ``where``.
    """
    try:
        config, warnings = _from_dict(doc, base_dir)
    except DeploymentConfigError as exc:
        raise DeploymentConfigError(f"{where}: {exc}") from None
    warnings = [f"{where}: {w}" for w in warnings]
    for warning in warnings:
        log.warning("%s", warning)
    return config, warnings


def _from_dict(doc: Any, base_dir: str | Path | None) -> tuple[DeploymentConfig, list[str]]:
    if not isinstance(doc, Mapping):
        raise DeploymentConfigError(
            f"must be a mapping (a JSON object) with computeType and settings, not {type(doc).__name__}"
        )
    if doc.get(COMPUTE_TYPE_KEY) is None:
        raise DeploymentConfigError(
            "computeType is required (Azure ML v1: 'Need to specify computeType'): "
            f'add "computeType": one of {_TYPES}'
        )
    raw_type = doc[COMPUTE_TYPE_KEY]
    compute_type = raw_type.strip().upper() if isinstance(raw_type, str) else None
    if compute_type not in CONFIG_CLASSES:
        raise DeploymentConfigError(f"unknown computeType {shown(raw_type)}: use one of {_TYPES} (any case)")
    entries = BY_COMPUTE_TYPE[compute_type]
    kwargs: dict[str, Any] = {}
    warnings: list[str] = []
    _walk(doc, (), entries, compute_type, kwargs, {}, warnings)
    if base_dir is not None:
        for name in _SSL_FILES:
            if kwargs.get(name) and not Path(kwargs[name]).expanduser().is_absolute():
                candidate = Path(base_dir) / kwargs[name]
                if candidate.exists():
                    kwargs[name] = str(candidate)
    config = CONFIG_CLASSES[compute_type](**kwargs).validate()
    return config, warnings + config.unsupported_settings()


def _no_constant(name: str) -> Any:
    raise DeploymentConfigError(f"holds {name}, which is not a number JSON or Azure ML v1 accepts; give a number")


def _parse(text: str) -> Any:
    """v1's ``file_stream_to_object``: YAML first, then JSON. A file that is strict JSON is read as JSON: YAML 1.1
    would read JSON numbers such as ``1e3`` as strings."""
    import yaml

    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        json_error = exc
    except ValueError as exc:  # Python's limit on integer digits
        raise DeploymentConfigError(f"holds a number too long to read ({str(exc).split(':')[0]}); fix it") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        pass
    except ValueError as exc:
        raise DeploymentConfigError(f"holds a number too long to read ({str(exc).split(':')[0]}); fix it") from None
    raise DeploymentConfigError(f"is neither valid YAML nor valid JSON ({json_error}); fix the syntax")


def load_deployment_config(path: str | Path) -> tuple[DeploymentConfig, list[str]]:
    """``(configuration, warnings)`` from a v1 ``deploymentconfig.json`` or YAML file."""
    file = Path(path).expanduser()
    where = f"deployment config {file}"
    if not file.is_file():
        raise DeploymentConfigError(f"{where} does not exist; pass the path of deploymentconfig.json")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeploymentConfigError(f"cannot read {where}: {exc}") from None
    try:
        doc = _parse(text)
    except DeploymentConfigError as exc:
        raise DeploymentConfigError(f"{where} {exc}") from None
    if doc is None:
        raise DeploymentConfigError(f"{where} is empty; it needs at least computeType")
    return deployment_config_from_dict(doc, base_dir=file.resolve().parent, where=where)


__all__ = ["deployment_config_from_dict", "load_deployment_config"]
