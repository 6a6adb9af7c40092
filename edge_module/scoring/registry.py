"""Which :class:`~edge_module.runtime.ModelRuntime` serves a model: runtimes registered by name with
the file types (or a match function) and frameworks they serve, as MLServer picks a runtime per model.

Built in, in this order: ``onnx`` (``*.onnx``, onnxruntime), ``tflite`` (``*.tflite``, LiteRT) and
``fpga`` (package folders ``edgepack fpga compile`` makes: emulator or vendor driver + onnxruntime).
Another runtime registers itself the same way when its module is imported::

    register_runtime("openvino", OpenVinoRuntime.create, suffixes=(".xml",), frameworks=("openvino",))

A factory is called ``factory(path, name, version, options)`` (:class:`RuntimeOptions`) and returns
the runtime, not loaded yet; it should import its heavy libraries in ``load()``, so that the
registry stays cheap to import. ``match(entry)`` gets what a model was registered as (a file or a
folder) and returns the path to load, or None; runtimes with a match function are asked first (a
package folder may hold ``.onnx`` files that are not the model on their own), then file suffixes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_module.runtime import ModelRuntime


class ModelDirError(LookupError):
    """No servable model where the model directory says models are, or a file no runtime serves."""


@dataclass(frozen=True)
class RuntimeOptions:
    """What the server passes every runtime (each uses what applies to it)."""

    threads: int | None = None
    """Threads for one model run (onnxruntime's intra-op pool, LiteRT's ``num_threads``); None: the
    library's default."""
    inter_op_threads: int | None = None
    """onnxruntime's inter-op pool (None: its default)."""
    fpga_device: str | None = None
    """The FPGA runtime's device path (``/dev/xdma0``) for its vendor driver (None: ``EDGEPACK_FPGA_DEVICE``)."""
    fpga_driver: str | None = None
    """The FPGA runtime's vendor driver, ``pkg.module:factory`` (None: ``EDGEPACK_FPGA_DRIVER``, else the
    emulator); see :mod:`edge_module.scoring.fpga_runtime`."""


Factory = Callable[[Path, str, "str | None", RuntimeOptions], ModelRuntime]
Match = Callable[[Path], "Path | None"]


@dataclass(frozen=True)
class RuntimeKind:
    """A registered runtime: its name, what it serves, and how to make one."""

    name: str
    factory: Factory
    suffixes: tuple[str, ...] = ()
    frameworks: tuple[str, ...] = ()
    match: Match | None = None
    label: str = ""

    @property
    def description(self) -> str:
        """``ONNX (*.onnx)``: the label and what it serves, for messages."""
        what = ", ".join(f"*{s}" for s in self.suffixes) or "its package folders"
        return f"{self.label or self.name} ({what})"

    def create(
        self, path: Path, name: str, version: str | None = None, options: RuntimeOptions | None = None
    ) -> ModelRuntime:
        """The runtime for ``path`` (not loaded)."""
        return self.factory(Path(path), name, version, options or RuntimeOptions())

    def serves_file(self, path: Path) -> bool:
        return path.name.lower().endswith(self.suffixes) if self.suffixes else False


_KINDS: dict[str, RuntimeKind] = {}
_LOCK = threading.Lock()


def register_runtime(
    name: str,
    factory: Factory,
    *,
    suffixes: Iterable[str] = (),
    frameworks: Iterable[str] = (),
    match: Match | None = None,
    label: str | None = None,
    replace: bool = False,
) -> RuntimeKind:
    """Register a runtime ``name`` serving files ending in ``suffixes`` (``".tflite"``) and/or entries
    ``match`` recognises, and the registry ``frameworks`` it serves. A name already registered raises
    :class:`ValueError` unless ``replace``."""
    suffixes = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
    if not suffixes and match is None:
        raise ValueError(f"runtime {name!r}: give the file suffixes it serves or a match function")
    kind = RuntimeKind(name, factory, suffixes, tuple(f.lower() for f in frameworks), match, label or name)
    with _LOCK:
        if name in _KINDS and not replace:
            raise ValueError(f"a runtime named {name!r} is already registered")
        _KINDS[name] = kind
    return kind


def unregister_runtime(name: str) -> None:
    """Forget runtime ``name`` (tests; a plug-in being replaced)."""
    with _LOCK:
        _KINDS.pop(name, None)


def registered() -> list[RuntimeKind]:
    """The registered runtimes, in registration order."""
    return list(_KINDS.values())


def get_runtime(name: str) -> RuntimeKind:
    kind = _KINDS.get(name)
    if kind is None:
        raise ModelDirError(f"no runtime named {name!r}; registered: {', '.join(_KINDS)}")
    return kind


def supported() -> str:
    """``ONNX (*.onnx), TFLite (*.tflite)``: what can be served without code, for messages."""
    return ", ".join(kind.description for kind in _KINDS.values())


def _candidates(framework: str | None) -> list[RuntimeKind]:
    kinds = list(_KINDS.values())
    if framework:
        chosen = [k for k in kinds if framework.lower() in k.frameworks]
        if chosen:
            return chosen
    return kinds


def find_model(entry: Path, framework: str | None = None) -> tuple[RuntimeKind, Path] | None:
    """The runtime and the file (or folder) to load for what a model was registered as (a file, judged
    by its name, or a folder holding one); None when no registered runtime serves it. ``framework`` (the registry's,
    e.g. ``tflite``) narrows the choice to the runtimes declaring it, when any does.

    In a folder: a runtime's match function first, then, per runtime in registration order, the files
    with its suffixes: one, or the one named ``model<suffix>`` at the top; several others raise
    :class:`ModelDirError`."""
    entry = Path(entry)
    kinds = _candidates(framework)
    for kind in kinds:
        if kind.match is not None:
            found = kind.match(entry)
            if found is not None:
                return kind, Path(found)
    if not entry.is_dir():  # a file, or a name not written yet: by its suffix
        return next(((k, entry) for k in kinds if k.serves_file(entry)), None)
    files = sorted(p for p in entry.rglob("*") if p.is_file())
    for kind in kinds:
        found = [p for p in files if kind.serves_file(p)]
        if len(found) == 1:
            return kind, found[0]
        if found:
            top = [p for p in found if p.parent == entry and p.stem == "model"]
            if top:
                return kind, top[0]
            label = kind.label or kind.name
            raise ModelDirError(
                f"{entry} holds several {label} files {[str(p.relative_to(entry)) for p in found]}: "
                f"register one model per {label} file, or name the one to serve model{kind.suffixes[0]}"
            )
    return None


def runtime_for(path: str | Path, framework: str | None = None) -> RuntimeKind:
    """The runtime that serves ``path`` (a model file, or a folder holding one); :class:`ModelDirError`
    naming the supported file types when none does."""
    found = find_model(Path(path), framework)
    if found is None:
        raise ModelDirError(
            f"no runtime serves {path}" + (f" (framework {framework})" if framework else "") + f": supported are "
            f"{supported()}; give an entry script (score.py) to serve other models"
        )
    return found[0]


# -- the built-in runtimes (their modules are imported when a model needs them) ---------------------
def _onnx(path: Path, name: str, version: str | None, options: RuntimeOptions) -> ModelRuntime:
    from edge_module.scoring.onnx_runtime import OnnxRuntime

    return OnnxRuntime(path, name, version, intra_op_threads=options.threads, inter_op_threads=options.inter_op_threads)


def _tflite(path: Path, name: str, version: str | None, options: RuntimeOptions) -> ModelRuntime:
    from edge_module.scoring.tflite_runtime import TfliteRuntime

    return TfliteRuntime(path, name, version, num_threads=options.threads)


def _fpga(path: Path, name: str, version: str | None, options: RuntimeOptions) -> ModelRuntime:
    from edge_module.scoring.fpga_runtime import FpgaRuntime

    return FpgaRuntime.create(path, name, version, options)


def _fpga_package(entry: Path) -> Path | None:
    from edge_module.scoring.fpga_runtime import fpga_package

    return fpga_package(entry)


register_runtime("onnx", _onnx, suffixes=(".onnx",), frameworks=("onnx",), label="ONNX")
register_runtime("tflite", _tflite, suffixes=(".tflite",), frameworks=("tflite",), label="TFLite")
register_runtime("fpga", _fpga, match=_fpga_package, frameworks=("fpga",), label="FPGA")
