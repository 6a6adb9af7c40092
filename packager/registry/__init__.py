"""The model registry: versions, tags, properties, files, in a local workspace."""

from packager.registry.frameworks import Framework
from packager.registry.model import Model, ModelFile, ResourceConfiguration

__all__ = ["Framework", "Model", "ModelFile", "ResourceConfiguration"]
