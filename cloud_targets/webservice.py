"""Deployed web services, shaped like Azure ML v1's ``azureml.core.webservice.Webservice``.

``Webservice(ws, name)`` loads a service (as its subclass: :class:`LocalWebservice`,
:class:`AciWebservice`, :class:`AksWebservice`); ``Webservice.list(ws)`` lists them. State lives in
the workspace (:mod:`cloud_targets.services.store`): the record holds no secret, keys and the token
secret sit in a 0600 file, and every change runs under the service's lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cloud_targets.config.factories import (
    aci_deploy_configuration,
    aks_deploy_configuration,
    local_deploy_configuration,
)
from cloud_targets.config.model import DeploymentConfig
from cloud_targets.services import configs
from cloud_targets.services.lifecycle import (
    RecordHandle,
    app_of,
    config_of,
    image_registry,
    key_choice,
    new_secrets,
    push_image,
    resolve_models,
    wait_healthy,
)
from cloud_targets.services.store import ServiceRecord, ServiceSecrets, ServiceStore
from cloud_targets.targets.base import (
    CONTAINER_PORT,
    FAILED,
    HEALTHY,
    TRANSITIONING,
    UNHEALTHY,
    Deployed,
    ServiceSpec,
    TargetStatus,
    module_env,
    secret_env,
)
from packager.errors import EdgepackError, InvalidInputError, NotFoundError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model
from packager.workspace import Workspace

log = logging.getLogger("cloud_targets")

DEFAULT_TIMEOUT_S = 600.0
POLL_S = 0.05


class WebserviceException(EdgepackError):
    """A service operation failed (v1's name); ``logs`` holds the service's last log lines when they matter."""

    def __init__(self, message: str, logs: str = ""):
        super().__init__(message)
        self.logs = logs


class WebserviceNotFoundError(WebserviceException, NotFoundError):
    """No such service: a :class:`WebserviceException` as in v1 (``except WebserviceException`` still works)."""


class WebserviceInputError(WebserviceException, InvalidInputError):
    """A bad argument to a service operation: a :class:`WebserviceException` as in v1 (exit code 2)."""


def _read_record(store: ServiceStore, name: str) -> ServiceRecord:
    """``store.read(name)``, its errors raised as v1's :class:`WebserviceException` kinds."""
    try:
        return store.read(name)
    except NotFoundError as exc:
        raise WebserviceNotFoundError(str(exc)) from None
    except InvalidInputError as exc:  # a name v1 could never have deployed
        raise WebserviceInputError(str(exc)) from None


class Webservice(RecordHandle):
    """One deployed service. ``Webservice(workspace, name)`` loads it (a :class:`WebserviceException`, as
    in v1, when there is none)."""

    _compute_type: ClassVar[str] = ""
    _subclasses: ClassVar[dict[str, type[Webservice]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls._compute_type:
            Webservice._subclasses[cls._compute_type] = cls

    def __new__(cls, workspace: Workspace, name: str) -> Webservice:
        if cls is Webservice:
            record = _read_record(ServiceStore(workspace), name)
            cls = Webservice._subclasses.get(record.compute_type, Webservice)
        return super().__new__(cls)

    def __init__(self, workspace: Workspace, name: str):
        self.workspace = workspace
        self.name = name
        self._store = ServiceStore(workspace)
        self._record = _read_record(self._store, name)
        self._warnings: list[str] = []

    # -- construction helpers ----------------------------------------------------------------------------
    @classmethod
    def _from_record(cls, workspace: Workspace, record: ServiceRecord) -> Webservice:
        klass = Webservice._subclasses.get(record.compute_type, Webservice)
        svc = object.__new__(klass)
        svc.workspace, svc.name, svc._store, svc._record = workspace, record.name, ServiceStore(workspace), record
        svc._warnings = []
        return svc

    @staticmethod
    def list(
        workspace: Workspace,
        compute_type: str | None = None,
        tags: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        model_name: str | None = None,
        model_id: str | None = None,
        properties: Sequence[Any] | Mapping[str, Any] | None = None,
        image_digest: str | None = None,
    ) -> list[Webservice]:
        """The workspace's services, by name, filtered as v1 did: ``compute_type`` (``LOCAL``...), ``tags`` and
        ``properties`` (``["k", "k=v", [k, v]]`` or a dict; all must match), ``model_name``, ``model_id``
        (``NAME:VERSION``), ``image_digest``."""
        from packager.registry.names import match_filters

        out = []
        for record in ServiceStore(workspace).list():
            if compute_type and record.compute_type != compute_type.upper():
                continue
            if tags and not match_filters(record.tags, tags, "tags"):
                continue
            if properties and not match_filters(record.properties, properties, "properties"):
                continue
            if model_name and all(m.rpartition(":")[0] != model_name for m in record.models):
                continue
            if model_id and model_id not in record.models:
                continue
            if image_digest and record.image_digest != image_digest:
                continue
            out.append(Webservice._from_record(workspace, record))
        return out

    # -- attributes --------------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return list(self._record.models)

    @property
    def image_id(self) -> str | None:
        """The image reference (Docker and remote targets); in process mode, the staged content folder."""
        return self._record.image

    @property
    def created_time(self) -> str:
        return self._record.created_time

    @property
    def updated_time(self) -> str:
        return self._record.updated_time

    @property
    def deployment_config(self) -> DeploymentConfig:
        return configs.deserialize_config(self._record.deployment_config)

    @property
    def warnings(self) -> list[str]:
        """The settings of the last deploy or update (on this object) the target does not honour, one line each."""
        return list(self._warnings)

    @property
    def state(self) -> str:
        """Transitioning / Healthy / Unhealthy / Failed, as the target sees it now."""
        return self._refresh_state()

    def _target(self) -> Any:
        """The service's target, made once per handle (a kubeconfig read or an ARM client is not free)."""
        key = json.dumps([self._record.compute_type, self._record.target], sort_keys=True, default=str)
        cached = self.__dict__.get("_target_cache")
        if cached is None or cached[0] != key:
            cached = (key, _target_for(self.workspace, self._store, self._record))
            self._target_cache = cached
        return cached[1]

    def _refresh_state(self) -> str:
        with contextlib.suppress(NotFoundError):  # another handle or the CLI may have updated it (v1 re-fetched too)
            self._record = self._store.read(self.name)
        record = self._record
        if not record.target:
            return record.state
        status = self._target().state(record.target)
        if record.compute_type == "LOCAL" and status.state == TRANSITIONING and record.state in (HEALTHY, UNHEALTHY):
            # this container/process was Healthy and stopped answering its readiness probe: Unhealthy (v1's word)
            status = TargetStatus(UNHEALTHY, status.error or "the service stopped answering its readiness probe")
        if status.state != record.state or status.error != record.error:
            record.state, record.error = status.state, status.error
            with self._store.lock(self.name, wait=False) as held:  # best effort: never wait on a running update
                if held:
                    fresh = self._store.read(self.name)
                    if fresh.target == record.target:
                        fresh.state, fresh.error = status.state, status.error
                        self._store.write(fresh)
        return status.state

    # -- lifecycle ---------------------------------------------------------------------------------------
    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float | None = DEFAULT_TIMEOUT_S) -> None:
        """Wait until the service is Healthy; raise :class:`WebserviceException` (with its log lines) when it
        fails or ``timeout_sec`` passes."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        self._wait_on_target(show_output, timeout_sec)

        def fail(state: str) -> WebserviceException:
            logs = self.get_logs(200)
            if state == FAILED:
                return WebserviceException(
                    f"service {self.name} failed: {self._record.error or 'see the logs'}\n"
                    f"last log lines:\n{_tail(logs, 50)}",
                    logs,
                )
            return WebserviceException(
                f"service {self.name} is still {state} after {timeout_sec:g} s; last log lines:\n{_tail(logs, 50)}",
                logs,
            )

        wait_healthy(self.name, self._refresh_state, fail, deadline, show_output, POLL_S)

    def _wait_on_target(self, show_output: bool, timeout_sec: float | None) -> None:
        """Targets that follow their own rollout (Kubernetes: ``kubectl rollout status``) wait here first."""
        if not self._record.target:
            return
        target = self._target()
        wait = getattr(target, "wait", None)
        if wait is None:
            return

        def progress(message: str) -> None:
            if show_output:
                print(f"{self.name}: {message}", file=sys.stdout, flush=True)

        try:
            wait(self._record.target, DEFAULT_TIMEOUT_S if timeout_sec is None else timeout_sec, progress)
        except EdgepackError as exc:
            logs = self.get_logs(200)
            raise WebserviceException(
                f"service {self.name} did not roll out: {exc}\nlast log lines:\n{_tail(logs, 50)}", logs
            ) from None

    def get_logs(self, num_lines: int = 5000) -> str:
        """The last ``num_lines`` lines of the container's or process's output."""
        if not self._record.target:
            return ""
        return self._target().logs(self._record.target, num_lines)

    def run(self, input_data: Any, timeout: float = 60.0) -> Any:
        """POST ``input_data`` (JSON text, bytes or JSON-able data) to ``scoring_uri`` with the service's
        key or a fresh token; returns the parsed JSON answer (or the text)."""
        from edge_module.client import HttpError, score_request

        if not self.scoring_uri:
            raise WebserviceException(f"service {self.name} has no scoring URI (state {self._record.state})")
        try:
            resp = score_request(self.scoring_uri, input_data, key=self.credential(), timeout=timeout)
        except HttpError as exc:
            raise WebserviceException(f"service {self.name}: {exc}") from None
        except (ConnectionError, TimeoutError) as exc:
            raise WebserviceException(f"service {self.name}: {exc}") from None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def regen_key(self, key: str, set_key: str | None = None) -> None:
        """Replace the ``'Primary'`` or ``'Secondary'`` key (with ``set_key`` or a new random one) and restart
        the service with it: the old key stops working."""
        which = key_choice(key, set_key, WebserviceInputError)
        with self._store.lock(self.name):
            record = self._store.read(self.name)
            s = self._rotate_key(record, which, set_key)
            target = _target_for(self.workspace, self._store, record)
            spec = _spec(record, configs.deserialize_config(record.deployment_config), s)
            deployed = target.update_secrets(spec, record.target)
            _apply(record, deployed)
            self._store.write(record)
            self._record = record
        self.wait_for_deployment()

    def update(
        self,
        models: Sequence[Model | str] | None = None,
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        wait: bool = False,
        **settings: Any,
    ) -> None:
        """Change the models, the inference config, or deployment settings (``tags=``, ``auth_enabled=``,
        ``port=``...). New models or code rebuild (cached layers) and restart; settings alone restart;
        tags, properties and description only change the record. ``wait=True`` (v1's ``LocalWebservice``)
        waits for Healthy; else call :meth:`wait_for_deployment` after."""
        if models is None and inference_config is None and deployment_config is None and not settings:
            raise WebserviceInputError(  # as v1
                f"No parameters provided to update service {self.name}: give models=, inference_config=, "
                "deployment_config= or settings such as tags="
            )
        self._update(models, inference_config, deployment_config, settings)
        if wait:
            self.wait_for_deployment()

    def _update(
        self,
        models: Sequence[Model | str] | None,
        inference_config: InferenceConfig | None,
        deployment_config: DeploymentConfig | None,
        settings: dict[str, Any],
    ) -> None:
        with self._store.lock(self.name):
            record = self._store.read(self.name)
            old_config = configs.deserialize_config(record.deployment_config)
            config = deployment_config or old_config
            if deployment_config is not None and configs.compute_type_of(deployment_config) != record.compute_type:
                raise InvalidInputError(
                    f"service {self.name} is {record.compute_type}; a {configs.compute_type_of(deployment_config)} "
                    "configuration needs a new deployment (Model.deploy(..., overwrite=True))"
                )
            config = configs.with_settings(config, settings) if settings else config
            config.validate()  # v1's rules, before anything is built or changed
            warnings = _config_warnings(self.name, config)
            mode = configs.auth_mode(config)
            meta_only = models is None and inference_config is None and _same_runtime(old_config, config)
            record.tags, record.properties = dict(config.tags), dict(config.properties)
            record.description = config.description
            record.deployment_config = configs.serialize_config(config)
            if meta_only:
                self._store.write(record)
                self._record = record
                self._warnings = warnings
                return
            resolved = (
                resolve_models(self.workspace, models)
                if models is not None
                else resolve_models(self.workspace, record.models)
            )
            ic = inference_config or config_of(record.app)
            old_secrets = self._store.read_secrets(self.name)
            keep = old_secrets if record.auth == mode else None
            # stored by _deploy_into when the service restarts
            fresh = new_secrets(mode, keep, config.primary_key, config.secondary_key)
            record.auth = mode
            target_warnings = _deploy_into(self.workspace, self._store, record, resolved, ic, config, fresh,
                                           rebuild=models is not None or inference_config is not None)  # fmt: skip
            self._record = record
            self._warnings = _merge(warnings, target_warnings)

    def delete(self) -> None:
        """Stop and remove the service: no container or process is left, and its state is removed."""
        with self._store.lock(self.name):
            _teardown(self.workspace, self._store, self._store.read(self.name))
            self._store.remove(self.name)

    # -- views -------------------------------------------------------------------------------------------
    def serialize(self) -> dict[str, Any]:
        """The service as a JSON-ready dict (what ``edgepack service show --json`` prints): no secrets."""
        r = self._record
        return self._public(
            {
                "models": list(r.models),
                "imageId": r.image if r.target.get("mode") != "process" else None,  # process mode: no image
                "imageDigest": r.image_digest,
                "authEnabled": r.auth == "key",
                "tokenAuthEnabled": r.auth == "token",
                "deploymentConfig": dict(r.deployment_config),
                "inferenceConfig": dict(r.inference_config),
                "target": {k: v for k, v in r.target.items() if k != "content"},
            }
        )

    def __repr__(self) -> str:
        r = self._record
        return (
            f"{type(self).__name__}(workspace={self.workspace!r}, name={r.name!r}, compute_type={r.compute_type!r}, "
            f"state={r.state!r}, scoring_uri={r.scoring_uri!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Webservice) and (other.workspace, other.name) == (self.workspace, self.name)

    def __hash__(self) -> int:
        return hash((self.workspace, self.name))


class LocalWebservice(Webservice):
    """A service on this machine (Docker engine or a local process)."""

    _compute_type: ClassVar[str] = "LOCAL"

    #: v1's ``LocalWebservice.deploy_configuration(port=None)`` (validated; see the config factories).
    deploy_configuration = staticmethod(local_deploy_configuration)

    @property
    def port(self) -> int | None:
        """The port the service listens on (v1's ``LocalWebservice.port``): the one asked for or the free one
        picked; ``None`` before it has a scoring URI."""
        if not self.scoring_uri:
            return None
        return urlsplit(self.scoring_uri).port

    def reload(self, wait: bool = True) -> None:
        """Copy the entry script and source directory again and restart, without rebuilding (v1's ``reload``)."""
        with self._store.lock(self.name):
            record = self._store.read(self.name)
            target = _target_for(self.workspace, self._store, record)
            spec = _spec(
                record, configs.deserialize_config(record.deployment_config), self._store.read_secrets(self.name)
            )
            deployed = target.reload(spec, record.target, config_of(record.app))
            _apply(record, deployed)
            self._store.write(record)
            self._record = record
        if wait:
            self.wait_for_deployment()


class AciWebservice(Webservice):
    """A service on Azure Container Instances."""

    _compute_type: ClassVar[str] = "ACI"

    #: v1's ``AciWebservice.deploy_configuration(cpu_cores=0.1, memory_gb=0.5, ...)``: same parameters and order.
    deploy_configuration = staticmethod(aci_deploy_configuration)


class AksWebservice(Webservice):
    """A service on AKS or any Kubernetes cluster."""

    _compute_type: ClassVar[str] = "AKS"

    #: v1's ``AksWebservice.deploy_configuration(autoscale_enabled=None, ...)``: same parameters and order.
    deploy_configuration = staticmethod(aks_deploy_configuration)


Webservice._subclasses["AKSENDPOINT"] = AksWebservice


# -- shared by Model.deploy and Webservice -------------------------------------------------------------------
def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def _merge(*lists: Sequence[str]) -> list[str]:
    """The warnings of every list, each once, in order."""
    out: list[str] = []
    for items in lists:
        out += [w for w in items if w not in out]
    return out


def _config_warnings(name: str, config: DeploymentConfig) -> list[str]:
    """The config's settings its target cannot honour (v1 ignored some silently: here they are said)."""
    warnings = config.unsupported_settings()
    for warning in warnings:
        log.warning("service %s: %s", name, warning)
    return warnings


def _same_runtime(a: DeploymentConfig, b: DeploymentConfig) -> bool:
    """True when only metadata (tags, properties, description) differ."""
    meta = {"tags": {}, "properties": {}, "description": None}
    same_settings = {**configs.serialize_config(a), **meta} == {**configs.serialize_config(b), **meta}
    same_keys = (a.primary_key, a.secondary_key) == (b.primary_key, b.secondary_key)
    return same_settings and same_keys


def _target_for(workspace: Workspace, store: ServiceStore, record: ServiceRecord, mode: str | None = None) -> Any:
    if record.compute_type == "LOCAL":
        from cloud_targets.targets.local import LocalTarget

        return LocalTarget(workspace, store.service_dir(record.name), mode or record.target.get("mode"))
    from cloud_targets.targets.registry import remote_target

    return remote_target(
        record.compute_type, configs.deserialize_config(record.deployment_config), record.target or None
    )


def _teardown(workspace: Workspace, store: ServiceStore, record: ServiceRecord) -> None:
    """Stop what runs for ``record`` (container or process) and drop its image (call under the lock)."""
    target = _target_for(workspace, store, record)
    if record.target:
        target.delete(record.target)
    if hasattr(target, "remove_image"):
        target.remove_image(record.image)


def _spec(record: ServiceRecord, config: DeploymentConfig, s: ServiceSecrets) -> ServiceSpec:
    remote = record.compute_type != "LOCAL"
    credentials = None
    if remote and record.image:
        from cloud_targets.targets.pull import pull_credentials

        credentials = pull_credentials(record.image)
    return ServiceSpec(
        name=record.name,
        image=record.image or "",
        config=config,
        env=module_env(config, token_auth=record.auth == "token"),
        secrets=secret_env(s.primary_key, s.secondary_key, s.token_secret),
        port=CONTAINER_PORT if remote else int(record.target.get("port") or CONTAINER_PORT),
        registry_credentials=credentials,
        labels={"edgepack.service": record.name},
    )


def _apply(record: ServiceRecord, deployed: Deployed) -> None:
    record.scoring_uri, record.swagger_uri, record.target = deployed.scoring_uri, deployed.swagger_uri, deployed.handle
    record.state, record.error = TRANSITIONING, None


def _deploy_into(
    workspace: Workspace,
    store: ServiceStore,
    record: ServiceRecord,
    models: Sequence[Model],
    inference_config: InferenceConfig,
    config: DeploymentConfig,
    secrets: ServiceSecrets,
    rebuild: bool = True,
    deployment_target: Any = None,
) -> list[str]:
    """Build (when ``rebuild``) and start the service ``record`` describes; writes the record and ``secrets``
    (under the lock) once the target starts it.

    Returns the target's warnings (settings it does not honour)."""
    record.models = [m.id for m in models]
    record.inference_config = inference_config.serialize()
    record.app = app_of(inference_config)
    record.deployment_config = configs.serialize_config(config)
    if record.compute_type == "LOCAL":
        from cloud_targets.targets.local import LocalTarget, resolve_mode

        if deployment_target is not None:
            log.warning("service %s: deployment_target is ignored for a LOCAL deployment (as in v1)", record.name)
        previous = dict(record.target)
        mode = previous.get("mode") or resolve_mode(config)
        target = LocalTarget(workspace, store.service_dir(record.name), mode)
        old_image = record.image
        if rebuild or not record.image:
            built = target.prepare(record.name, models, inference_config)
            record.image, record.image_digest = built["image"], built.get("digest")
            record.build = {"transfer": built.get("transfer"), "seconds": built.get("seconds", {})}
        port = LocalTarget.pick_port(getattr(config, "port", None), previous.get("port"))
        spec = _spec(record, config, secrets)
        spec.port = port
        LocalTarget.check_port(port, previous)  # nothing changed yet: the running service and its keys stay
        store.write_secrets(record.name, secrets)  # only now: a failed build leaves the running service's keys
        try:
            deployed = target.deploy(spec, previous=previous or None)
        except BaseException as exc:  # Ctrl-C too: the record says what runs
            record.state, record.error = FAILED, str(exc) or type(exc).__name__
            store.write(record)
            raise
        _apply(record, deployed)
        store.write(record)
        if old_image and old_image != record.image:
            target.remove_image(old_image)
        return []  # the config's own unsupported_settings() says what a local service cannot honour
    from cloud_targets.targets.registry import remote_target

    previous = dict(record.target)
    where = deployment_target if deployment_target is not None else (previous or None)
    target = remote_target(record.compute_type, config, where)  # reads the kubeconfig / ids: fails before a build
    if rebuild or not record.image:
        record.image, record.image_digest = push_image(workspace, record.name, models, inference_config,
                                                        getattr(target, "compute", where))  # fmt: skip
    spec = _spec(record, config, secrets)
    store.write_secrets(record.name, secrets)  # only now: a failed build or push leaves the running service's keys
    try:
        deployed = target.deploy(spec, previous=previous or None)  # type: ignore[call-arg]
    except BaseException as exc:  # Ctrl-C too
        if previous:  # an update: the service stays, marked Failed
            record.state, record.error = FAILED, str(exc) or type(exc).__name__
            store.write(record)
        raise
    _apply(record, deployed)
    store.write(record)
    return list(getattr(target, "last_warnings", []))


def _preflight(workspace: Workspace, compute_type: str, config: DeploymentConfig, deployment_target: Any) -> None:
    """Reach the target a deploy will use (Docker engine, kubeconfig, ARM ids, image registry) before anything
    is stopped or built: an ``overwrite`` that cannot deploy leaves the running service alone."""
    if compute_type == "LOCAL":
        from cloud_targets.targets.local import LocalTarget, resolve_mode

        LocalTarget(workspace, workspace.path, resolve_mode(config))  # docker mode: no engine, no deploy
        return
    from cloud_targets.targets.registry import remote_target

    target = remote_target(compute_type, config, deployment_target)
    image_registry(getattr(target, "compute", deployment_target))


def dumps_public(services: Sequence[Webservice]) -> str:
    """``edgepack service list --json``: every service serialized (no secrets)."""
    return json.dumps([s.serialize() for s in services], indent=2)


__all__ = [
    "AciWebservice",
    "AksWebservice",
    "LocalWebservice",
    "Webservice",
    "WebserviceException",
    "WebserviceInputError",
    "WebserviceNotFoundError",
    "dumps_public",
]
