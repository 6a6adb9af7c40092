"""The module twin's ``model_version``: which version of each model the app serves by default.

Forms of the desired value (the app serves the versions its image carries, every one loaded):

==========================  =====================================================================
``"2"`` or ``2``            the image has one model name: serve its version 2
``"mlp:2"``                 serve version 2 of ``mlp`` (``"mlp:2,cnn:1"`` for several names);
                            the form for names with ``.``, which twin keys cannot hold
``{"mlp": "2"}``            the same as an object (a key may be the name with ``.`` as ``_``)
``null`` / removed          the latest version of every model
==========================  =====================================================================

A model name not given serves its latest version. The switch is made through the app's declared
:class:`~edge_module.runtime.VersionSelection` (all or nothing: an unknown name or version raises
and the previous versions keep serving). :func:`version_hook` turns it into the IoT Edge transport's
``reconfigure`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from edge_module.runtime import ModelNotFoundError, ScoringApp, VersionSelection

log = logging.getLogger("edgepack.iotedge")

_MAX_NAMES = 64  # bound what a desired value may name before looking at it

#: ``on_switch(served)``: the versions now served by default ``{name: version}``, after a switch.
SwitchCallback = Callable[[dict[str, str | None]], None]


class ModelVersionError(ModelNotFoundError):
    """A desired ``model_version`` that names no loaded model or version, or is malformed."""


def parse_model_version(value: Any, versions: Mapping[str, list[str]]) -> dict[str, str | None]:
    """The selection ``{name: version}`` a desired ``model_version`` asks for (see the module doc);
    ``versions``: the loaded versions by name. Raises :class:`ModelVersionError` for a value that
    names no loaded model, or a bare version when several names are served."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif type(value) is int or isinstance(value, str):
        text = str(value).strip()
        if ":" not in text:
            if len(versions) != 1:
                raise ModelVersionError(
                    f"model_version {text!r} names no model and several are served "
                    f'({", ".join(sorted(versions))}): give "<name>:<version>" or {{"<name>": "<version>"}}'
                )
            return {next(iter(versions)): text}
        pairs = []
        for part in filter(str.strip, text.split(",")):
            name, sep, version = part.partition(":")
            if not sep:
                raise ModelVersionError(f'model_version part {part.strip()!r} is not "<name>:<version>"')
            pairs.append((name, version))
    else:
        raise ModelVersionError(f'model_version must be a version, "<name>:<version>" or an object, got {value!r}')
    if len(pairs) > _MAX_NAMES:  # a string's parts are bounded by the twin's own size limit
        raise ModelVersionError(f"model_version names {len(pairs)} models, over the limit of {_MAX_NAMES}")
    by_twin_key = {name.replace(".", "_"): name for name in versions}
    selection: dict[str, str | None] = {}
    for key, version in pairs:
        key = str(key).strip()
        name = key if key in versions else by_twin_key.get(key)
        if name is None:
            raise ModelVersionError(f"model_version names model {key!r}; models: {', '.join(sorted(versions))}")
        if version is not None and (type(version) not in (str, int) or not str(version).strip()):
            raise ModelVersionError(f"model_version for {name!r} must be a version, got {version!r}")
        selection[name] = None if version is None else str(version).strip()
    return selection


def version_hook(app: VersionSelection, on_switch: SwitchCallback | None = None) -> Callable[[dict[str, Any]], None]:
    """The IoT Edge transport's ``reconfigure`` hook for ``app``: switches in place (returns ``None``),
    raises when the value cannot be served (the transport reports it and the old versions serve on).
    ``on_switch(served)`` runs after a switch (e.g. to point V2's unversioned routes at the new versions)."""

    def reconfigure(desired: dict[str, Any]) -> None:
        selection = parse_model_version(desired.get("model_version"), app.versions())
        served = app.select(selection)
        if on_switch is not None:
            on_switch(served)

    return reconfigure


def cannot_switch_reason(app: ScoringApp, workers: int = 1) -> str | None:
    """Why a desired ``model_version`` cannot apply to ``app`` (None: it can)."""
    if not isinstance(app, VersionSelection):
        return (
            "this app cannot switch model versions: an entry script (score.py) loads its models itself; "
            "redeploy to change them"
        )
    if workers > 1:
        return (
            f"{workers} HTTP workers: a switch would reach worker 0 only; run one worker (EDGEPACK_WORKERS=1) "
            "to switch versions from the twin"
        )
    return None
