"""edgepack build time: workspace and registry, converters, quantization, image builder, IoT Edge, CLI.

The Python API follows Azure ML v1, so migrating code reads the same::

    from packager import Workspace, Model
    ws = Workspace.from_path(".edgepack")
    model = Model.register(ws, model_path="outputs/model.onnx", model_name="digits")
"""

from edge_module._version import __version__
from packager.errors import (
    ConflictError,
    EdgepackError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
)
from packager.registry import Framework, Model, ModelFile, ResourceConfiguration
from packager.workspace import Workspace

__all__ = [
    "ConflictError",
    "EdgepackError",
    "Framework",
    "IntegrityError",
    "InvalidInputError",
    "Model",
    "ModelFile",
    "NotFoundError",
    "ResourceConfiguration",
    "Workspace",
    "__version__",
]
