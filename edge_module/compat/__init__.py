"""Stand-ins for the Azure ML v1 modules that deployed entry scripts import.

``install_azureml_compat()`` adds an import hook that serves

=============================================  =========================================
module                                         contents
=============================================  =========================================
``azureml.core``, ``azureml.core.model``       ``Model.get_model_path`` (and a ``Workspace``
                                               that explains it is unavailable)
``azureml.contrib.services.aml_request``       ``rawhttp``, ``AMLRequest``
``azureml.contrib.services.aml_response``      ``AMLResponse``
``azureml_inference_server_http.api.*``        the same two, for scripts written for the newer server
=============================================  =========================================

only for names whose real package is absent (checked with ``importlib.util.find_spec`` at the
top level and the import system's path search below it, so nothing real is imported); the hook
also sits last on ``sys.meta_path``, so a real package always wins.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType

from edge_module.compat.aml_request import AMLRequest, rawhttp
from edge_module.compat.aml_response import AMLResponse
from edge_module.compat.model import Model

# served name -> implementation module (None: an empty package)
_MODULES: dict[str, str | None] = {
    "azureml": None,
    "azureml.core": "edge_module.compat.core",
    "azureml.core.model": "edge_module.compat.model",
    "azureml.contrib": None,
    "azureml.contrib.services": None,
    "azureml.contrib.services.aml_request": "edge_module.compat.aml_request",
    "azureml.contrib.services.aml_response": "edge_module.compat.aml_response",
    "azureml_inference_server_http": None,
    "azureml_inference_server_http.api": None,
    "azureml_inference_server_http.api.aml_request": "edge_module.compat.aml_request",
    "azureml_inference_server_http.api.aml_response": "edge_module.compat.aml_response",
}
_PACKAGES = {name for name in _MODULES if any(other.startswith(name + ".") for other in _MODULES)}
_lock = threading.Lock()


class _CompatLoader(importlib.abc.Loader):
    def __init__(self, implementation: str | None):
        self.implementation = implementation

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        if self.implementation is None:
            module.__doc__ = "edgepack stand-in package for Azure ML v1 entry scripts."
            return
        source = importlib.import_module(self.implementation)
        module.__doc__ = source.__doc__
        for key, value in vars(source).items():
            if not key.startswith("__"):
                setattr(module, key, value)
        if hasattr(source, "__all__"):
            module.__all__ = list(source.__all__)


class AzureMLCompatFinder(importlib.abc.MetaPathFinder):
    """Serves the stand-in modules named in :data:`served`."""

    def __init__(self, served: frozenset[str]):
        self.served = served

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        if fullname not in self.served:
            return None  # type: ignore[return-value]
        spec = importlib.machinery.ModuleSpec(
            fullname,
            _CompatLoader(_MODULES[fullname]),
            origin=f"edgepack compat ({_MODULES[fullname] or 'package'})",
            is_package=fullname in _PACKAGES,
        )
        if fullname in _PACKAGES:
            spec.submodule_search_locations = []
        return spec


def _is_compat(module_or_spec: object) -> bool:
    spec = getattr(module_or_spec, "__spec__", module_or_spec)
    return isinstance(getattr(spec, "loader", None), _CompatLoader)


def real_module_available(fullname: str) -> bool:
    """Whether a real (non-stand-in) module ``fullname`` is installed, without importing any of it."""
    top, *rest = fullname.split(".")
    loaded = sys.modules.get(top)
    if loaded is not None:
        if _is_compat(loaded):
            return False
        spec = getattr(loaded, "__spec__", None)
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
    if spec is None or _is_compat(spec):
        return False
    prefix = top
    for part in rest:
        locations = spec.submodule_search_locations
        if not locations:
            return False
        prefix = f"{prefix}.{part}"
        # The path-based finder looks in the parent's folders only: nothing is imported.
        spec = importlib.machinery.PathFinder.find_spec(prefix, list(locations))
        if spec is None:
            return False
    return True


def _finder() -> AzureMLCompatFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, AzureMLCompatFinder)), None)


def install_azureml_compat() -> frozenset[str]:
    """Install the import hook (idempotent); return the module names it serves (empty when all are real)."""
    with _lock:
        finder = _finder()
        if finder is not None:
            return finder.served
        leaves = [name for name in _MODULES if name not in _PACKAGES]
        served: set[str] = set()
        for leaf in leaves:
            if real_module_available(leaf):
                continue
            parts = leaf.split(".")
            chain = [".".join(parts[: i + 1]) for i in range(len(parts))]
            served.update(name for name in chain if name == leaf or not real_module_available(name))
        finder = AzureMLCompatFinder(frozenset(served))
        sys.meta_path.append(finder)
        return finder.served


def uninstall_azureml_compat() -> None:
    """Remove the hook and forget the stand-in modules already imported (for tests)."""
    with _lock:
        finder = _finder()
        if finder is not None:
            sys.meta_path.remove(finder)
        for name in [n for n, m in sys.modules.items() if n in _MODULES and _is_compat(m)]:
            del sys.modules[name]


__all__ = [
    "AMLRequest",
    "AMLResponse",
    "AzureMLCompatFinder",
    "Model",
    "install_azureml_compat",
    "rawhttp",
    "real_module_available",
    "uninstall_azureml_compat",
]
