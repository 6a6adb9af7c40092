"""Endpoints with versions and a traffic split, shaped like Azure ML v1's ``AksEndpoint``.

``Endpoint.create(ws, name)`` makes one (Local: a router process on this machine; AKS: a registered
Kubernetes endpoint target); ``create_version`` adds a version (its own image and settings, a
``traffic_percentile``), ``update_version`` changes its share, flags, models or code, ``set_traffic``
sets the whole split (v2's map), ``delete_version`` and ``delete`` remove. Every change goes through
the target's zero-drop ``apply`` (start and wait ready, switch, drain, stop).

v1's rules: percentiles are 0-100 and sum to at most 100; what no version is given goes to the default
version; the first version is the default, ``is_default=True`` moves the flag; at most one control
version. Deleting the default version while others remain moves the flag to the remaining version with
the largest share (a warning says so).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from cloud_targets.config.factories import aks_endpoint_deploy_configuration
from cloud_targets.config.model import DeploymentConfig, LocalDeploymentConfig
from cloud_targets.config.rules import validate_service_name, version_name_problem
from cloud_targets.endpoints.spec import EndpointSpec, VersionSpec
from cloud_targets.endpoints.store import EndpointRecord, EndpointStore, VersionRecord
from cloud_targets.services import configs
from cloud_targets.services.lifecycle import (
    RecordHandle,
    app_of,
    config_of,
    key_choice,
    new_secrets,
    push_image,
    resolve_models,
    wait_healthy,
)
from cloud_targets.services.store import ServiceSecrets
from cloud_targets.targets.base import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, ServiceSpec, module_env, secret_env
from cloud_targets.webservice import WebserviceException, WebserviceInputError, WebserviceNotFoundError
from edge_module.router.routes import PIN_HEADER, RoutesError, RouteTable, VersionRoute
from packager.errors import ConflictError, EdgepackError, InvalidInputError, NotFoundError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets.endpoints")

AUTH_MODES = ("key", "token", "none")
COMPUTE_TYPES = ("LOCAL", "AKS")
DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.1


class EndpointNotFoundError(WebserviceNotFoundError):
    """No such endpoint (or version): a :class:`WebserviceException` kind, as in v1."""


class EndpointInputError(WebserviceInputError):
    """A bad argument to an endpoint operation (a split that breaks the rules...): exit code 2."""


@dataclass
class EndpointVersion:
    """One version of an endpoint as v1 showed it (``endpoint.versions[name]``)."""

    name: str
    traffic_percentile: float
    is_default: bool
    is_control_version_type: bool
    state: str
    scoring_uri: str | None
    models: list[str] = field(default_factory=list)
    description: str | None = None
    image_id: str | None = None
    error: str | None = None


def _read(store: EndpointStore, name: str) -> EndpointRecord:
    try:
        return store.read(name)
    except NotFoundError as exc:
        raise EndpointNotFoundError(str(exc)) from None
    except InvalidInputError as exc:
        raise EndpointInputError(str(exc)) from None


def check_split(versions: Sequence[VersionRecord]) -> None:
    """v1's rules on the versions' shares and flags (:meth:`RouteTable.validate`), as an :class:`EndpointInputError`."""
    routes = tuple(VersionRoute(v.name, "http://-", v.traffic, v.default, v.control) for v in versions)
    try:
        RouteTable("-", routes).validate()
    except RoutesError as exc:
        raise EndpointInputError(str(exc)) from None


def _auth_after(current: str, auth_enabled: bool | None, token_auth_enabled: bool | None) -> str:
    """The auth mode after ``update(auth_enabled=, token_auth_enabled=)`` (None: unchanged)."""
    if token_auth_enabled:
        return "token"
    if auth_enabled:
        return "key"
    if (auth_enabled is False and current == "key") or (token_auth_enabled is False and current == "token"):
        return "none"
    return current


def _percent(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise EndpointInputError(f"{what} is a percentage: give a number from 0 to 100, not {value!r}")
    return float(value)


class Endpoint(RecordHandle):
    """An endpoint and its versions. ``Endpoint(workspace, name)`` loads it (:class:`EndpointNotFoundError`
    when there is none)."""

    _compute_type: ClassVar[str] = ""
    _kind: ClassVar[str] = "endpoint"
    _recreate_hint: ClassVar[str] = "delete and create it again"

    def __new__(cls, workspace: Workspace, name: str) -> Endpoint:
        if cls is Endpoint:
            record = _read(EndpointStore(workspace), name)
            cls = AksEndpoint if record.compute_type == "AKS" else Endpoint
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str):
        self.workspace = workspace
        self.name = name
        self._store = EndpointStore(workspace)
        self._record = _read(self._store, name)
        self._target_cache: Any = None

    @classmethod
    def _from_record(cls, workspace: Workspace, record: EndpointRecord) -> Endpoint:
        klass = AksEndpoint if record.compute_type == "AKS" else Endpoint
        ep = object.__new__(klass)
        ep.workspace, ep.name, ep._store, ep._record = workspace, record.name, EndpointStore(workspace), record
        ep._target_cache = None
        return ep

    # -- create / list ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        workspace: Workspace,
        name: str,
        *,
        compute_type: str = "LOCAL",
        deployment_target: Any = None,
        auth_mode: str = "key",
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        port: int | None = None,
        mode: str | None = None,
        primary_key: str | None = None,
        secondary_key: str | None = None,
    ) -> Endpoint:
        """Make an endpoint with no version yet (its router answers 503 until one is added).

        ``compute_type``: ``LOCAL`` (this machine; ``mode`` process or docker for its versions, ``port`` the
        router's) or ``AKS`` (``deployment_target``: a :class:`~cloud_targets.targets.compute.KubernetesCompute`);
        ``auth_mode``: ``key`` (default), ``token`` or ``none``; ``primary_key`` / ``secondary_key`` set the
        keys (v1's deploy configuration), else they are generated."""
        validate_service_name(name)
        compute_type = str(compute_type).upper()
        if compute_type not in COMPUTE_TYPES:
            raise EndpointInputError(f"compute_type {compute_type!r}: use LOCAL or AKS")
        if auth_mode not in AUTH_MODES:
            raise EndpointInputError(f"auth_mode {auth_mode!r}: use key, token or none")
        store = EndpointStore(workspace)
        with store.lock(name, create=True):
            if store.exists(name):
                raise ConflictError(f"endpoint {name!r} already exists: add versions with create_version, or delete it")
            record = EndpointRecord(
                name=name,
                compute_type=compute_type,
                auth=auth_mode,
                port=port,
                description=description,
                tags=dict(tags or {}),
                properties=dict(properties or {}),
            )
            if compute_type == "LOCAL":
                from cloud_targets.targets.local import LocalTarget, resolve_mode

                if deployment_target is not None:
                    log.warning("endpoint %s: deployment_target is ignored for a LOCAL endpoint", name)
                record.mode = resolve_mode(SimpleNamespace(mode=mode))  # type: ignore[arg-type]
                if port:
                    LocalTarget.check_port(int(port))
            elif deployment_target is not None:
                handle = getattr(deployment_target, "handle", None)
                record.deployment_target = handle() if callable(handle) else {"context": str(deployment_target)}
            for key in (primary_key, secondary_key):
                if key is not None and len(key) < 16:
                    raise EndpointInputError("primary_key and secondary_key must be at least 16 characters")
            secrets = new_secrets(auth_mode, None, primary_key, secondary_key)
            store.write_secrets(name, secrets)
            ep = cls._from_record(workspace, record)
            try:
                ep._apply(record, secrets)
            except BaseException:
                if not record.target:
                    store.remove(name)
                raise
        return Endpoint(workspace, name)

    @staticmethod
    def list(workspace: Workspace, compute_type: str | None = None) -> list[Endpoint]:
        """The workspace's endpoints, by name (``compute_type``: LOCAL or AKS)."""
        return [
            Endpoint._from_record(workspace, r)
            for r in EndpointStore(workspace).list()
            if not compute_type or r.compute_type == compute_type.upper()
        ]

    # -- attributes ------------------------------------------------------------------------------------
    @property
    def versions(self) -> dict[str, EndpointVersion]:
        """Each version (v1's ``endpoint.versions``), in creation order, with its live state."""
        statuses = self._statuses()
        out = {}
        for v in self._record.versions:
            status = statuses.get(v.name)
            out[v.name] = EndpointVersion(
                name=v.name,
                traffic_percentile=v.traffic,
                is_default=v.default,
                is_control_version_type=v.control,
                state=status.state if status else self._record.state,
                scoring_uri=self._record.version_uris.get(v.name),
                models=list(v.models),
                description=v.description,
                image_id=v.image,
                error=status.error if status else None,
            )
        return out

    @property
    def state(self) -> str:
        """Healthy when the router and every version are; else Failed / Unhealthy / Transitioning."""
        return self._overall()[0]

    def _statuses(self) -> dict[str, Any]:
        if not self._record.target:
            return {}
        try:
            return self._target().state(self._record.target)
        except EdgepackError as exc:
            log.warning("endpoint %s: state unavailable: %s", self.name, exc)
            return {}

    def _overall(self) -> tuple[str, str | None]:
        if self._record.state == FAILED and self._record.error:
            return FAILED, self._record.error
        statuses = self._statuses()
        if not statuses:
            return self._record.state, self._record.error
        for state in (FAILED, UNHEALTHY, TRANSITIONING):
            bad = {n: s for n, s in statuses.items() if s.state == state}
            if bad:
                return state, "; ".join(f"{n}: {s.error}" for n, s in bad.items() if s.error) or None
        return HEALTHY, None

    def _target(self) -> Any:
        if self._target_cache is None:
            self._target_cache = _target_for(self.workspace, self._store, self._record)
        return self._target_cache

    # -- versions --------------------------------------------------------------------------------------
    def create_version(
        self,
        version_name: str,
        models: Sequence[Model | str] | None = None,
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        traffic_percentile: float = 0,
        is_default: bool = False,
        is_control_version_type: bool = False,
        wait: bool = True,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> EndpointVersion:
        """Add a version: build it, start it, wait until ready, then give it ``traffic_percentile`` of the traffic.

        The first version is the default (what is not assigned goes to it); ``is_default=True`` moves the flag.
        ``wait`` is kept for v1 code: the call returns once the version serves."""
        del wait, tags
        problem = version_name_problem(version_name)
        if problem:
            raise EndpointInputError(problem)
        traffic = _percent(traffic_percentile, "traffic_percentile")
        resolved = resolve_models(self.workspace, models or [])
        if not resolved:
            raise EndpointInputError("no model for the version: pass models=[...] (registered models)")
        ic = inference_config or InferenceConfig()
        config = deployment_config if deployment_config is not None else self._default_config()
        config.validate()
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            if record.version(version_name):
                raise ConflictError(
                    f"endpoint {self.name} already has a version {version_name!r}: change it with update_version, "
                    "or pick another name"
                )
            version = VersionRecord(name=version_name, traffic=traffic, control=bool(is_control_version_type),
                                    description=description)  # fmt: skip
            versions = [*record.versions, version]
            if is_default or len(versions) == 1:
                for v in versions:
                    v.default = v is version
            check_split(versions)
            self._fill(version, resolved, ic, config)
            secrets = self._store.read_secrets(self.name)
            builds = {version_name: (resolved, ic)}
            record.versions = versions
            self._apply(record, secrets, builds)
        return self.versions[version_name]

    def update_version(
        self,
        version_name: str,
        *,
        traffic_percentile: float | None = None,
        is_default: bool | None = None,
        is_control_version_type: bool | None = None,
        models: Sequence[Model | str] | None = None,
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        description: str | None = None,
        **_ignored: Any,
    ) -> EndpointVersion:
        """Change a version's share or flags (no restart), or its models / code / settings (a new instance
        is started and switched to, the old one drained: no request drops)."""
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            version = self._version(record, version_name)
            if traffic_percentile is not None:
                version.traffic = _percent(traffic_percentile, "traffic_percentile")
            if is_default is True:
                for v in record.versions:
                    v.default = v is version
            elif is_default is False and version.default and len(record.versions) > 1:
                raise EndpointInputError(
                    f"version {version_name} is the default: make another version the default instead "
                    "(update_version(other, is_default=True))"
                )
            if is_control_version_type is not None:
                version.control = bool(is_control_version_type)
            if description is not None:
                version.description = description
            check_split(record.versions)
            builds = {}
            if models is not None or inference_config is not None or deployment_config is not None:
                resolved = resolve_models(self.workspace, models if models is not None else version.models)
                ic = inference_config or config_of(version.app)
                config = deployment_config or configs.deserialize_config(version.deployment_config)
                config.validate()
                rebuild = models is not None or inference_config is not None
                self._fill(version, resolved, ic, config)
                if rebuild:
                    builds[version_name] = (resolved, ic)
            self._apply(record, self._store.read_secrets(self.name), builds)
        return self.versions[version_name]

    def set_traffic(self, traffic: Mapping[str, float]) -> None:
        """v2's traffic map: every version named gets its share, the others 0; shares sum to 100 (or all 0)."""
        if not isinstance(traffic, Mapping):
            raise EndpointInputError('traffic is a map of version name to percent, e.g. {"blue": 90, "green": 10}')
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            unknown = sorted(set(traffic) - {v.name for v in record.versions})
            if unknown:
                names = ", ".join(v.name for v in record.versions) or "none"
                raise EndpointInputError(f"no version {', '.join(unknown)} in endpoint {self.name} (versions: {names})")
            shares = {n: _percent(p, f"traffic for {n}") for n, p in traffic.items()}
            total = sum(shares.values())
            if shares and abs(total - 100) > 1e-9 and total != 0:
                raise EndpointInputError(
                    f"traffic shares add up to {total:g}: a traffic map sums to exactly 100 (or all 0); "
                    + ", ".join(f"{n}={p:g}" for n, p in shares.items())
                )
            for v in record.versions:
                v.traffic = shares.get(v.name, 0.0)
            check_split(record.versions)
            self._apply(record, self._store.read_secrets(self.name))

    def delete_version(self, version_name: str) -> None:
        """Remove a version: its share goes to the default at once, then it is drained and stopped."""
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            version = self._version(record, version_name)
            record.versions = [v for v in record.versions if v is not version]
            if version.default and record.versions:
                heir = max(record.versions, key=lambda v: v.traffic)  # the first of the largest
                heir.default = True
                log.warning("endpoint %s: deleted the default version %s; %s is the default now",
                            self.name, version_name, heir.name)  # fmt: skip
            check_split(record.versions)
            self._apply(record, self._store.read_secrets(self.name))

    # -- dry run ---------------------------------------------------------------------------------------
    def preview(
        self,
        version_name: str,
        deployment_config: DeploymentConfig,
        image: str,
        *,
        models: Sequence[str] = (),
        traffic_percentile: float | None = None,
        is_default: bool = False,
        is_control_version_type: bool | None = None,
        all_traffic: bool = False,
    ) -> tuple[EndpointRecord, EndpointSpec]:
        """The endpoint as adding ``version_name`` (or replacing it, when it exists) would leave it, ``image``
        standing for the image not built, all the traffic on it with ``all_traffic`` (``--dry-run``).

        The same checks as :meth:`create_version` / :meth:`update_version`; nothing is built, applied or
        written, and the spec's secrets are placeholders (the real ones are never in it)."""
        problem = version_name_problem(version_name)
        if problem:
            raise EndpointInputError(problem)
        deployment_config.validate()
        record = copy.deepcopy(_read(self._store, self.name))
        version = record.version(version_name)
        if version is None:
            version = VersionRecord(name=version_name, control=bool(is_control_version_type))
            record.versions.append(version)
            if len(record.versions) == 1:
                is_default = True
        elif is_control_version_type is not None:
            version.control = bool(is_control_version_type)
        if traffic_percentile is not None:
            version.traffic = _percent(traffic_percentile, "traffic_percentile")
        if is_default:
            for v in record.versions:
                v.default = v is version
        if all_traffic:
            for v in record.versions:
                v.traffic = 100.0 if v is version else 0.0
        check_split(record.versions)
        version.models = list(models)
        version.deployment_config = configs.serialize_config(deployment_config)
        version.image, version.image_digest = image, None
        record.revision += 1
        real = self._store.read_secrets(self.name)
        placeholders = ServiceSecrets(**{f.name: "dry-run" if getattr(real, f.name) else None for f in fields(real)})
        return record, self._spec(record, placeholders)

    def preview_objects(self, spec: EndpointSpec) -> list[dict[str, Any]]:
        """A Kubernetes endpoint: every object its target would apply for ``spec`` (Secrets hold placeholders;
        print them through ``to_yaml``). Nothing is sent."""
        plan = getattr(self._target(), "plan", None)
        if self._record.compute_type == "LOCAL" or plan is None:
            raise EndpointInputError(f"endpoint {self.name} is not a Kubernetes endpoint: it has no objects to show")
        return plan(spec, self._record.target or None)

    # -- endpoint-wide ---------------------------------------------------------------------------------
    def update(
        self,
        auth_enabled: bool | None = None,
        token_auth_enabled: bool | None = None,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        **_ignored: Any,
    ) -> None:
        """Change the endpoint's description, tags, properties or auth (key / token / none)."""
        if all(x is None for x in (auth_enabled, token_auth_enabled, description, tags, properties)):
            raise EndpointInputError(
                f"No parameters provided to update endpoint {self.name}: give auth_enabled=, token_auth_enabled=, "
                "description=, tags= or properties="
            )
        if auth_enabled and token_auth_enabled:
            raise EndpointInputError("auth_enabled and token_auth_enabled cannot both be true (v1's rule): pick one")
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            record.description = description if description is not None else record.description
            record.tags = dict(tags) if tags is not None else record.tags
            record.properties = dict(properties) if properties is not None else record.properties
            mode = _auth_after(record.auth, auth_enabled, token_auth_enabled)
            if mode == record.auth:
                self._store.write(record)
                self._record = record
                return
            record.auth = mode
            secrets = new_secrets(mode)
            self._store.write_secrets(self.name, secrets)
            self._rekey(record, secrets)

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Replace the ``'Primary'`` or ``'Secondary'`` key; the router restarts with it (the old key stops
        working; requests arriving during the restart are refused)."""
        which = key_choice(key, set_key, EndpointInputError)
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            self._rekey(record, self._rotate_key(record, which, set_key))

    def run(self, input_data: Any, version: str | None = None, timeout: float = 60.0) -> Any:
        """POST ``input_data`` to the endpoint (``version`` pins one with the ``azureml-model-deployment``
        header); returns the parsed JSON answer (or the text)."""
        import json

        import requests

        if not self.scoring_uri:
            raise WebserviceException(f"endpoint {self.name} has no scoring URI (state {self._record.state})")
        body = input_data if isinstance(input_data, bytes | str) else json.dumps(input_data)
        headers = {"Content-Type": "application/json"}
        cred = self.credential()
        if cred:
            headers["Authorization"] = f"Bearer {cred}"
        if version:
            headers[PIN_HEADER] = version
        try:
            resp = requests.post(self.scoring_uri, data=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise WebserviceException(f"endpoint {self.name}: {exc}") from None
        if resp.status_code >= 400:
            raise WebserviceException(f"endpoint {self.name}: HTTP {resp.status_code}: {resp.text[:500]}")
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def get_logs(self, version: str | None = None, num_lines: int = 5000) -> str:
        """A version's last log lines, or the router's (``version=None``)."""
        if version is not None:
            self._version(self._record, version)
        if not self._record.target:
            return ""
        return self._target().logs(self._record.target, version, num_lines)

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Wait until the router and every version are Healthy (v1's ``wait_for_deployment``)."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        error: str | None = None

        def poll() -> str:
            nonlocal error
            state, error = self._overall()
            return state

        def fail(state: str) -> WebserviceException:
            logs = self.get_logs(num_lines=50)
            return WebserviceException(f"endpoint {self.name} is {state}: {error or 'see the logs'}", logs)

        wait_healthy(self.name, poll, fail, deadline, show_output, POLL_S)

    def delete(self) -> None:
        """Stop the router and every version; remove the endpoint's state. No process or container is left."""
        with self._store.lock(self.name):
            record = _read(self._store, self.name)
            if record.target:
                _target_for(self.workspace, self._store, record).delete(record.target)
            self._store.remove(self.name)

    def serialize(self) -> dict[str, Any]:
        """The endpoint as a JSON-ready dict (no secrets)."""
        r = self._record
        return self._public(
            {
                "authMode": r.auth,
                "revision": r.revision,
                "versions": [
                    {
                        "name": v.name,
                        "trafficPercentile": v.traffic,
                        "isDefault": v.default,
                        "isControlVersionType": v.control,
                        "models": list(v.models),
                        "scoringUri": r.version_uris.get(v.name),
                        "deploymentConfig": dict(v.deployment_config),
                        "description": v.description,
                    }
                    for v in r.versions
                ],
            }
        )

    def __repr__(self) -> str:
        r = self._record
        split = {v.name: v.traffic for v in r.versions}
        return f"{type(self).__name__}(name={r.name!r}, compute_type={r.compute_type!r}, versions={split})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and (other.workspace, other.name) == (self.workspace, self.name)

    def __hash__(self) -> int:
        return hash((self.workspace, self.name))

    # -- internals -------------------------------------------------------------------------------------
    def _default_config(self) -> DeploymentConfig:
        if self._record.compute_type == "LOCAL":
            return LocalDeploymentConfig()
        return aks_endpoint_deploy_configuration()

    def _version(self, record: EndpointRecord, name: str) -> VersionRecord:
        version = record.version(name)
        if version is None:
            names = ", ".join(v.name for v in record.versions) or "none"
            raise EndpointNotFoundError(f"endpoint {self.name} has no version {name!r} (versions: {names})")
        return version

    @staticmethod
    def _fill(version: VersionRecord, models: Sequence[Model], ic: InferenceConfig, config: DeploymentConfig) -> None:
        version.models = [m.id for m in models]
        version.inference_config = ic.serialize()
        version.app = app_of(ic)
        version.deployment_config = configs.serialize_config(config)

    def _spec(self, record: EndpointRecord, secrets: ServiceSecrets) -> EndpointSpec:
        versions = []
        for v in record.versions:
            config = configs.deserialize_config(v.deployment_config)
            credentials = None
            if record.compute_type != "LOCAL" and v.image:  # the registry's pull secret, as for a service
                from cloud_targets.targets.pull import pull_credentials

                credentials = pull_credentials(v.image)
            service = ServiceSpec(
                name=f"{record.name}-{v.name}",
                image=v.image or "",
                config=config,
                env=module_env(config),
                registry_credentials=credentials,
                labels={"edgepack.endpoint": record.name, "edgepack.version": v.name},
            )
            versions.append(VersionSpec(v.name, service, v.traffic, v.default, v.control))
        env = secret_env(secrets.primary_key, secrets.secondary_key, secrets.token_secret)
        return EndpointSpec(record.name, versions, record.auth, env, record.revision)

    def _build(self, record: EndpointRecord, builds: Mapping[str, tuple[Sequence[Model], InferenceConfig]]) -> None:
        """Build each version in ``builds`` as a service's image is built (local content/image, or a registry)."""
        target = self._target()
        for name, (models, ic) in builds.items():
            version = record.version(name)
            assert version is not None
            prepare = getattr(target, "prepare", None)
            if prepare is not None:
                built = prepare(name, models, ic)
                version.image, version.image_digest = built["image"], built.get("digest")
            else:
                compute = getattr(target, "compute", None) or record.deployment_target or None
                version.image, version.image_digest = push_image(self.workspace, f"{record.name}-{name}", models,
                                                                  ic, compute)  # fmt: skip

    def _apply(
        self,
        record: EndpointRecord,
        secrets: ServiceSecrets,
        builds: Mapping[str, tuple[Sequence[Model], InferenceConfig]] | None = None,
    ) -> None:
        """Build what changed, then hand the whole endpoint to its target (call under the lock)."""
        from cloud_targets.endpoints.local import EndpointApplyError

        self._record = record
        self._target_cache = None
        if builds:
            self._build(record, builds)
        record.revision += 1
        target = self._target()
        try:
            deployed = target.apply(self._spec(record, secrets), record.target or None)
        except EndpointApplyError as exc:
            self._failed(record, exc, exc.handle)
            raise WebserviceException(f"endpoint {self.name}: {exc}", exc.logs) from None
        except BaseException as exc:  # Ctrl-C too: what ran before still runs; keep the revision monotonic
            self._failed(record, exc, None)
            if isinstance(exc, EdgepackError) and not isinstance(exc, WebserviceException):
                raise WebserviceException(f"endpoint {self.name}: {exc}", getattr(exc, "logs", "")) from None
            raise
        record.target = deployed.handle
        record.scoring_uri, record.swagger_uri = deployed.scoring_uri, deployed.swagger_uri
        record.version_uris = dict(deployed.version_uris)
        record.state, record.error = HEALTHY, None
        self._store.write(record)
        self._record = record

    def _failed(self, record: EndpointRecord, exc: BaseException, handle: dict[str, Any] | None) -> None:
        """Record a failed apply: the versions as before (or as now running), the revision kept, the error."""
        if not self._store.exists(self.name):
            return
        if handle is not None:
            record.target = handle
            record.state, record.error = FAILED, str(exc) or type(exc).__name__
            self._store.write(record)
            self._record = record
            return
        fresh = self._store.read(self.name)
        fresh.revision = record.revision
        fresh.error = str(exc) or type(exc).__name__
        self._store.write(fresh)
        self._record = fresh

    def _rekey(self, record: EndpointRecord, secrets: ServiceSecrets) -> None:
        record.revision += 1
        target = self._target()
        if record.target and hasattr(target, "update_secrets"):
            deployed = target.update_secrets(self._spec(record, secrets), record.target)
        else:
            deployed = target.apply(self._spec(record, secrets), record.target or None)
        record.target = deployed.handle
        record.scoring_uri, record.swagger_uri = deployed.scoring_uri, deployed.swagger_uri
        record.version_uris = dict(deployed.version_uris)
        self._store.write(record)
        self._record = record


class AksEndpoint(Endpoint):
    """v1's ``AksEndpoint``: an endpoint on AKS / Kubernetes (or, with no cluster given, on this machine)."""

    _compute_type: ClassVar[str] = "AKS"

    #: v1's ``AksEndpoint.deploy_configuration(...)``: every AKS setting plus ``version_name``,
    #: ``traffic_percentile``, ``is_default``, ``is_control_version_type``.
    deploy_configuration = staticmethod(aks_endpoint_deploy_configuration)


def _target_for(workspace: Workspace, store: EndpointStore, record: EndpointRecord) -> Any:
    endpoint_dir: Path = store.endpoint_dir(record.name)
    if record.compute_type == "LOCAL":
        from cloud_targets.endpoints.local import LocalEndpointTarget

        return LocalEndpointTarget(workspace, endpoint_dir, record.mode, record.port)
    from cloud_targets.endpoints.registry import endpoint_target

    return endpoint_target(record.compute_type, workspace, endpoint_dir, record.deployment_target or None)


__all__ = [
    "AksEndpoint",
    "Endpoint",
    "EndpointInputError",
    "EndpointNotFoundError",
    "EndpointVersion",
    "check_split",
]
