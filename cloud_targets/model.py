"""``Model`` with v1's deployment methods: :meth:`Model.deploy` (a web service) and :meth:`Model.package` (an image).

``from cloud_targets import Model`` is :class:`packager.registry.Model` plus these two static methods, as
``azureml.core.Model`` had them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloud_targets.config.model import DeploymentConfig, LocalDeploymentConfig
from cloud_targets.services import configs
from cloud_targets.services.lifecycle import new_secrets, resolve_models
from cloud_targets.services.names import check_service_name
from cloud_targets.services.store import ServiceRecord, ServiceStore
from cloud_targets.webservice import (
    Webservice,
    WebserviceException,
    _config_warnings,
    _deploy_into,
    _merge,
    _preflight,
    _teardown,
)
from packager.errors import ConflictError, InvalidInputError
from packager.image.inference_config import InferenceConfig
from packager.registry import Model as RegistryModel
from packager.workspace import Workspace


class ModelPackage:
    """What :meth:`Model.package` made: an image in a registry or local engine, or a Dockerfile context."""

    def __init__(self, workspace: Workspace, location: str, generate_dockerfile: bool, doc: dict[str, Any]):
        self.workspace = workspace
        self.location = location
        self.generate_dockerfile = generate_dockerfile
        self.doc = doc

    def wait_for_creation(self, show_output: bool = False) -> None:
        """Packages are made synchronously: nothing to wait for (kept for v1 code)."""

    def save(self, output_directory: str | Path) -> Path:
        """Dockerfile packages: the context folder (already written; given for v1 code)."""
        return Path(self.location)

    def serialize(self) -> dict[str, Any]:
        return {"location": self.location, "generateDockerfile": self.generate_dockerfile, **self.doc}

    def __repr__(self) -> str:
        return f"ModelPackage(location={self.location!r}, generate_dockerfile={self.generate_dockerfile})"


class Model(RegistryModel):
    """A registered model version (see :class:`packager.registry.Model`), plus ``deploy`` and ``package``."""

    @staticmethod
    def deploy(
        workspace: Workspace,
        name: str,
        models: Sequence[RegistryModel | str],
        inference_config: InferenceConfig | None = None,
        deployment_config: DeploymentConfig | None = None,
        deployment_target: Any = None,
        overwrite: bool = False,
        show_output: bool = False,
    ) -> Webservice:
        """Deploy ``models`` as the web service ``name``; returns it (call ``wait_for_deployment``).

        With ``AksEndpoint.deploy_configuration(version_name=..., traffic_percentile=...)`` it creates the
        endpoint ``name`` with that version, or adds the version to it, and returns the
        :class:`~cloud_targets.endpoints.AksEndpoint` (on Kubernetes when a target is given, else locally).

        ``deployment_config`` picks the target: Local (the default), ACI or AKS; ``deployment_target`` says
        where for ACI and AKS (:class:`~cloud_targets.targets.compute.AciCompute`,
        :class:`~cloud_targets.targets.compute.KubernetesCompute` or a kube context name; default: the
        environment). Everything is checked before anything is built: the name and the configuration (v1's
        rules), the models, an existing service (replaced only with ``overwrite=True``). Settings the target
        does not honour are logged and listed in the service's ``warnings``.
        """
        check_service_name(name)
        config = deployment_config if deployment_config is not None else LocalDeploymentConfig()
        compute_type = configs.compute_type_of(config)
        if compute_type == "AKSENDPOINT":  # v1: an AksEndpoint with this version (cloud_targets.endpoints)
            from cloud_targets.endpoints.deploy import deploy_endpoint

            endpoint = deploy_endpoint(workspace, name, models, inference_config, config, deployment_target, overwrite)
            if show_output:
                print(
                    f"{name}: endpoint version deployed ({endpoint.compute_type}), {endpoint.scoring_uri}", flush=True
                )
            return endpoint  # type: ignore[return-value]
        config.validate()
        mode = configs.auth_mode(config)
        warnings = _config_warnings(name, config)
        resolved = resolve_models(workspace, models)
        if not resolved:
            raise InvalidInputError("no model to deploy: pass at least one registered model")
        inference_config = inference_config or InferenceConfig()
        store = ServiceStore(workspace)
        with store.lock(name, create=True):
            if store.exists(name):
                if not overwrite:
                    raise ConflictError(
                        f"service {name!r} already exists; pass overwrite=True (--overwrite) to replace it, "
                        "or update it with Webservice.update"
                    )
                _preflight(workspace, compute_type, config, deployment_target)  # reachable before the old stops
                _teardown(workspace, store, store.read(name))
            record = ServiceRecord(
                name=name,
                compute_type=compute_type,
                tags=dict(config.tags),
                properties=dict(config.properties),
                description=config.description,
                auth=mode,
            )
            secrets = new_secrets(mode, None, config.primary_key, config.secondary_key)
            try:
                target_warnings = _deploy_into(workspace, store, record, resolved, inference_config, config,
                                               secrets, deployment_target=deployment_target)  # fmt: skip
            except BaseException:  # Ctrl-C too
                if not record.target:  # nothing runs: leave no half-made service behind
                    store.remove(name)
                raise
        service = Webservice(workspace, name)
        service._warnings = _merge(warnings, target_warnings)
        if show_output:
            print(f"{name}: deployed ({compute_type}), {service.scoring_uri}", flush=True)
        return service

    @staticmethod
    def profile(
        workspace: Workspace,
        profile_name: str,
        models: Sequence[RegistryModel | str],
        inference_config: InferenceConfig | None,
        input_data: Any,
        cpu: Sequence[float] = (0.5, 1.0),
        memory_gb: Sequence[float | None] = (None,),
        duration_s: float | str = 30.0,
        latency_target_ms: float | None = None,
        concurrency: int | None = None,
        mode: str | None = None,
        latency_percentile: float = 99.0,
        loadgen_processes: int = 1,
        on_stage: Any = None,
    ) -> Any:
        """v1's ``Model.profile``: serve ``models`` locally under load at each ``cpu`` x ``memory_gb`` setting.

        ``input_data``: request bodies for ``/score`` (a list of JSON strings or dicts, or one body), sent
        round-robin by ``concurrency`` keep-alive connections (default ``2 x ceil(cpu)``) for ``duration_s``
        after a warm-up. Returns a :class:`~cloud_targets.profiling.ModelProfile` (``recommended_cpu``,
        ``recommended_memory``, ``requests_per_second``, latency percentiles, ``get_details()``), also
        stored as ``<workspace>/profiles/<profile_name>.json``. ``mode``: ``docker`` or ``process``
        (default as for Local services). The recommendation is the smallest ``cpu`` whose p99 (or
        ``latency_percentile``) meets ``latency_target_ms``; without a target, the smallest within 10 %
        of the best throughput. ``on_stage(text)`` is told each stage (progress).
        """
        from cloud_targets.profiling import profile

        return profile(
            workspace,
            profile_name,
            models,
            inference_config,
            input_data,
            cpu=cpu,
            memory_gb=memory_gb,
            duration_s=duration_s,
            latency_target_ms=latency_target_ms,
            concurrency=concurrency,
            mode=mode,
            latency_percentile=latency_percentile,
            loadgen_processes=loadgen_processes,
            on_stage=on_stage,
        )

    @staticmethod
    def package(
        workspace: Workspace,
        models: Sequence[RegistryModel | str],
        inference_config: InferenceConfig | None = None,
        generate_dockerfile: bool = False,
        image_name: str | None = None,
        image_label: str | None = None,
        output_dir: str | Path | None = None,
        base: str | None = None,
    ) -> ModelPackage:
        """v1's ``Model.package``: an image, or (``generate_dockerfile=True``) a Dockerfile and context.

        The image goes to ``image_name`` when it names a registry (``127.0.0.1:5000/models/digits``), else
        into the local Docker engine (``docker load``). The Dockerfile context is written to ``output_dir``
        (default ``./<image_name or 'package'>-context``).
        """
        from packager.image import builder
        from packager.image.reference import ImageRef

        resolved = resolve_models(workspace, models)
        config = inference_config or InferenceConfig()
        name = image_name or "edgepack-package"
        label = image_label or f"{int(time.time())}"
        if generate_dockerfile:
            staged = builder.stage(workspace, resolved, config=config, platforms=[_host()], base=base)
            folder = Path(output_dir or f"{name.rsplit('/', 1)[-1]}-context")
            contexts = builder.write_contexts(staged, folder, config.extra_steps_text)
            return ModelPackage(workspace, str(contexts[_host()]), True, {"platform": str(_host())})
        ref = ImageRef.parse(f"{name}:{label}")
        if "/" in name and ("." in name.split("/")[0] or ":" in name.split("/")[0]):
            request = builder.BuildRequest(resolved, builder.Destination.registry(ref), config, [_host()], base=base)
            doc = builder.run(workspace, request)
            return ModelPackage(workspace, doc["reference"], False, {"digest": doc["index_digest"]})
        from cloud_targets.targets.local import docker_mode

        client = docker_mode.engine()
        if client is None:
            raise WebserviceException(
                "no Docker engine answers to load the image into: give image_name with a registry "
                "(e.g. 127.0.0.1:5000/models/digits), or generate_dockerfile=True"
            )
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgepack-package-") as tmp:
            archive = Path(tmp) / "image.tar"
            request = builder.BuildRequest(
                resolved, builder.Destination.docker_archive(archive, str(ref)), config, [_host()], base=base
            )
            doc = builder.run(workspace, request)
            with open(archive, "rb") as fh:
                client.images.load(fh)
        return ModelPackage(workspace, str(ref.familiar()), False, {"digest": doc["platforms"][str(_host())]["digest"]})


def _host() -> Any:
    from cloud_targets.targets.local.docker_mode import host_platform_

    return host_platform_()


__all__ = ["Model", "ModelPackage"]
