"""``azureml.core`` for entry scripts: ``Model`` (deployment-time subset), and a ``Workspace`` that
says clearly why it is unavailable instead of failing the script's imports."""

from __future__ import annotations

from typing import Any

from edge_module.compat.model import Model


class Workspace:
    """Importable so ``from azureml.core import Workspace, Model`` keeps working; unusable in an image."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "azureml.core.Workspace needs the Azure ML service, which is not in this image; "
            "a scoring script can only use Model.get_model_path(model_name, version=None)"
        )

    @classmethod
    def from_config(cls, *args: Any, **kwargs: Any) -> Workspace:
        return cls()

    @classmethod
    def get(cls, *args: Any, **kwargs: Any) -> Workspace:
        return cls()


__all__ = ["Model", "Workspace"]
