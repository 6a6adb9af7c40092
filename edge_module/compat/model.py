"""``azureml.core.model`` for entry scripts: ``Model.get_model_path`` over ``AZUREML_MODEL_DIR``.

Inside a deployment v1 answered ``Model.get_model_path(name, version=None)`` from the deployed
model folder, and that is all a scoring script needs; the registry side of ``Model`` (register,
list, download) lives in ``packager`` at build time and is not available here.
"""

from __future__ import annotations

from typing import Any

from edge_module.model_dir import ModelPathNotFoundError, resolve_model_path


class Model:
    """The deployment-time part of ``azureml.core.model.Model``."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "azureml.core.model.Model(workspace, name) needs the Azure ML registry, which is not in this image; "
            "inside a deployment use Model.get_model_path(model_name, version=None)"
        )

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """Path of a deployed model's file or folder (latest deployed version when ``version`` is None).

        ``model_name`` must be a model name, not a path: ``../x`` or ``/x`` raise ``ValueError``."""
        if isinstance(version, str) and version.strip().isdigit():
            version = int(version)
        return str(resolve_model_path(model_name, version))


__all__ = ["Model", "ModelPathNotFoundError"]
