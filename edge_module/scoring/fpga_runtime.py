"""An FPGA package behind :class:`~edge_module.runtime.ModelRuntime`: the accelerator part on the
bit-accurate emulator (or a vendor driver), the host part on onnxruntime.

A package is a folder (``fpga.compile_onnx(...).save(dir)`` / ``edgepack fpga compile`` write it)::

    fpga.json          inputs, outputs, signature (datatypes and shapes), host file, compile report
    program.json/.npz  the accelerator program (edge_module.numerics.emulate)
    host.onnx          the host part (Softmax, ArgMax, unsupported ops...), absent when empty
    accelerator.onnx   the accelerator part in float (for drivers and reference)

:class:`FpgaPipeline` is the one implementation of running a package: ``fpga.CompiledModel`` runs
through it too. The accelerator reads the model inputs and produces the boundary tensors; the host
part reads boundary tensors and model inputs and produces the rest.

**Vendor drivers.** ``EDGEPACK_FPGA_DRIVER=pkg.module:factory`` (``--fpga-driver``) replaces the
emulator with a real card, ``EDGEPACK_FPGA_DEVICE=/dev/xdma0`` (``--fpga-device``) names the device.
The factory is called once at load as ``factory(package_dir: pathlib.Path, device: str | None)``
and returns an object with ``run(x)``: ``x`` is the accelerator's input as a float32 numpy array
(a dict of arrays by name when the accelerator has several inputs) and the result is its output
array (a dict by name when it has several: ``fpga.json``'s report lists them as ``boundary``). An
optional ``close()`` is not called by the server. ``run`` may be called from several threads; a
driver that is not thread-safe locks itself. Everything else (the host part, input checks,
transports) stays as it is.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_module.runtime import (
    V2_TO_NUMPY,
    BadInputError,
    FileRuntime,
    NotReadyError,
    ScoringError,
    TensorSpec,
)

MANIFEST, HOST_ONNX, ACCEL_ONNX, PROGRAM_JSON = "fpga.json", "host.onnx", "accelerator.onnx", "program.json"
DEVICE_ENV, DRIVER_ENV = "EDGEPACK_FPGA_DEVICE", "EDGEPACK_FPGA_DRIVER"


class FpgaPackageError(ScoringError):
    """A package folder that cannot be served (missing files, a driver that cannot be loaded)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)


class Accelerator(Protocol):
    """What runs the accelerator part: ``edge_module.numerics.emulate.Program`` or a driver adapter."""

    inputs: list[str]
    outputs: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def fpga_package(entry: Path) -> Path | None:
    """The registry's match function: ``entry`` when it is a package folder (``fpga.json`` and
    ``program.json``), or its folder when ``entry`` is its ``fpga.json``; else None."""
    entry = Path(entry)
    folder = entry.parent if entry.name == MANIFEST else entry
    if (folder / MANIFEST).is_file() and (folder / PROGRAM_JSON).is_file():
        return folder
    return None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """``fpga.json`` of a package folder; :class:`FpgaPackageError` naming what is wrong."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise FpgaPackageError(
            f"{directory} is not an FPGA package: no {MANIFEST} (compile one with 'edgepack fpga compile')"
        ) from None
    except (OSError, ValueError) as exc:
        raise FpgaPackageError(f"cannot read {path}: {exc}; recompile the package") from None
    if not isinstance(manifest, dict) or not manifest.get("inputs") or not manifest.get("outputs"):
        raise FpgaPackageError(f"{path} names no inputs and outputs; recompile the package")
    return manifest


def load_driver(spec: str, package_dir: Path, device: str | None) -> Any:
    """The vendor driver ``spec`` (``pkg.module:factory``; ``pkg.module`` alone means its ``create``)
    made for ``package_dir`` and ``device``."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "create"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FpgaPackageError(
            f"FPGA driver {spec!r}: cannot import {module_name!r} ({exc}); install the vendor's Python package or "
            f"fix {DRIVER_ENV} (pkg.module:factory)"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise FpgaPackageError(f"FPGA driver {spec!r}: {module_name} has no callable {attr!r}; fix {DRIVER_ENV}")
    try:
        driver = factory(package_dir, device)
    except Exception as exc:
        where = f" on {device}" if device else ""
        raise FpgaPackageError(f"FPGA driver {spec!r} failed to open{where}: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(driver, "run", None)):
        raise FpgaPackageError(f"FPGA driver {spec!r}: {attr}() returned {type(driver).__name__} without run(x)")
    return driver


class DriverAccelerator:
    """A vendor driver as an :class:`Accelerator` (see the module doc for its interface)."""

    def __init__(self, driver: Any, inputs: list[str], outputs: list[str], name: str = "") -> None:
        self.driver, self.inputs, self.outputs, self.name = driver, list(inputs), list(outputs), name

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arg: Any = feeds[self.inputs[0]] if len(self.inputs) == 1 else dict(feeds)
        result = self.driver.run(arg)
        if isinstance(result, Mapping):
            missing = [n for n in self.outputs if n not in result]
            if missing:
                raise ScoringError(f"FPGA driver of {self.name!r} returned no {missing}")
            return {n: np.asarray(result[n]) for n in self.outputs}
        if len(self.outputs) != 1:
            raise ScoringError(f"FPGA driver of {self.name!r} must return a dict of {self.outputs}")
        return {self.outputs[0]: np.asarray(result)}


class FpgaPipeline:
    """The accelerator part, then the host part (onnxruntime, made on first use); thread-safe."""

    def __init__(
        self,
        accelerator: Accelerator,
        host: bytes | str | Path | None,
        inputs: list[str],
        outputs: list[str],
        session_options: Callable[[Any], None] | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.host = host
        self.inputs, self.outputs = list(inputs), list(outputs)
        self._session_options = session_options
        self._session: Any = None
        self._host_io: tuple[Any, list[str], list[str], list[tuple[str, int]]] | None = None
        self._lock = threading.Lock()

    def session(self) -> Any:
        """The host part's onnxruntime session (None when everything runs on the accelerator)."""
        if self._session is None and self.host is not None:
            with self._lock:
                if self._session is None:
                    import onnxruntime as ort

                    options = ort.SessionOptions()
                    if self._session_options is not None:
                        self._session_options(options)
                    host = str(self.host) if isinstance(self.host, Path) else self.host
                    self._session = ort.InferenceSession(host, sess_options=options, providers=["CPUExecutionProvider"])
        return self._session

    def run(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Every model output for the model inputs (a dict by name, or one array for a one-input model)."""
        if isinstance(feeds, np.ndarray) or not isinstance(feeds, Mapping):  # an array: no Mapping ABC check
            feeds = {self.inputs[0]: feeds}
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise ValueError(f"missing model input(s) {missing}; the model takes {self.inputs}")
        accelerator = self.accelerator
        produced = accelerator.run({name: np.asarray(feeds[name], np.float32) for name in accelerator.inputs})
        session = self.session()
        if session is None:
            return {name: produced[name] if name in produced else feeds[name] for name in self.outputs}
        io = self._host_io
        if io is None or io[0] is not session:  # the names, read once per session (each read costs us)
            io = self._host_io = self._read_host_io(session)
        _, inputs, names, picks = io
        # the host part reads the accelerator's results, else the inputs as given
        results = session.run(names, {name: produced[name] if name in produced else feeds[name] for name in inputs})
        if len(results) != len(names):
            raise ValueError(f"the host part returned {len(results)} results for its {len(names)} outputs")
        return {
            name: results[i] if i >= 0 else produced[name] if name in produced else feeds[name] for name, i in picks
        }

    def _read_host_io(self, session: Any) -> tuple[Any, list[str], list[str], list[tuple[str, int]]]:
        """The host part's input and output names, and each model output's index among the latter (-1:
        the accelerator's result, else the input of that name)."""
        inputs = [i.name for i in session.get_inputs()]
        names = [o.name for o in session.get_outputs()]
        picks = [(name, names.index(name) if name in names else -1) for name in self.outputs]
        return session, inputs, names, picks


def _specs(entries: list[Any], names: list[str], what: str, path: Path) -> list[TensorSpec]:
    """Tensor specs from the manifest's signature (``{"name", "datatype", "shape"}``)."""
    by_name = {e["name"]: e for e in entries if isinstance(e, Mapping) and "name" in e}
    specs = []
    for name in names:
        entry = by_name.get(name)
        if entry is None or entry.get("datatype") not in V2_TO_NUMPY:
            raise FpgaPackageError(f"{path / MANIFEST}: no datatype for {what} {name!r}; recompile the package")
        specs.append(TensorSpec(name, entry["datatype"], tuple(int(d) for d in entry.get("shape", ()))))
    return specs


class FpgaRuntime(FileRuntime):
    """An FPGA package folder (see the module doc): emulated unless a driver is given."""

    inline_safe = False  # emulating a CNN may take a while and cannot be cancelled: a scoring thread runs it

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        version: str | int | None = None,
        *,
        device: str | None = None,
        driver: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.version = None if version is None else str(version)
        self.device, self.driver, self.threads = device or None, driver or None, threads
        self.pipeline: FpgaPipeline | None = None
        self.manifest: dict[str, Any] = {}
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []

    @classmethod
    def create(cls, path: Path, name: str, version: str | None, options: Any) -> FpgaRuntime:
        """The registry's factory: device and driver from the options, else ``EDGEPACK_FPGA_*``."""
        device = getattr(options, "fpga_device", None) or os.environ.get(DEVICE_ENV)
        driver = getattr(options, "fpga_driver", None) or os.environ.get(DRIVER_ENV)
        return cls(path, name, version, device=device, driver=driver, threads=getattr(options, "threads", None))

    def load(self) -> None:
        if fpga_package(self.path) is None:
            raise FpgaPackageError(
                f"FPGA model {self.name!r}: {self.path} is not a package folder ({MANIFEST} and {PROGRAM_JSON}); "
                "register the folder 'edgepack fpga compile' made"
            )
        manifest = read_manifest(self.path)
        signature = manifest.get("signature") or {}
        inputs = _specs(signature.get("inputs", []), manifest["inputs"], "input", self.path)
        outputs = _specs(signature.get("outputs", []), manifest["outputs"], "output", self.path)
        from edge_module.numerics.emulate import Program

        program = Program.load(self.path)
        accelerator: Accelerator = program
        if self.driver:
            driver = load_driver(self.driver, self.path, self.device)
            accelerator = DriverAccelerator(driver, program.inputs, program.outputs, self.name)
        else:  # temporaries stay in the heap between batches; large exact products run on onnxruntime
            from edge_module.scoring import ort_matmul
            from edge_module.scoring.heap import keep_freed_memory

            keep_freed_memory()
            ort_matmul.install(self.threads)
        host = self.path / manifest["host"] if manifest.get("host") else None
        threads = self.threads

        def options(opts: Any) -> None:
            if threads:
                opts.intra_op_num_threads = int(threads)
                opts.inter_op_num_threads = 1

        pipeline = FpgaPipeline(accelerator, host, manifest["inputs"], manifest["outputs"], options)
        pipeline.session()  # load the host part now: a broken package fails at start, not on the first request
        self.manifest, self._inputs, self._outputs = manifest, inputs, outputs
        self.pipeline = pipeline

    @property
    def loaded(self) -> bool:
        return self.pipeline is not None

    @property
    def platform(self) -> str:
        return "fpga-driver" if self.driver else "fpga-emulator"

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.predict_prepared(self.prepare(inputs))

    def predict_prepared(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pipeline = self.pipeline
        if pipeline is None:
            raise NotReadyError(f"model {self.name!r} is not loaded yet")
        try:
            return pipeline.run(feeds)
        except ScoringError:
            raise
        except ValueError as exc:
            raise BadInputError(f"model {self.name!r} rejected the input: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "InvalidArgument":  # onnxruntime's complaint about the feeds
                raise BadInputError(f"model {self.name!r} rejected the input: {exc}") from exc
            raise ScoringError(f"model {self.name!r} failed: {type(exc).__name__}: {exc}") from exc
