"""Model frameworks: canonical names, Azure ML v1 spellings, and detection from files."""

from __future__ import annotations

from pathlib import Path

from packager.errors import InvalidInputError

CUSTOM, TENSORFLOW, TFKERAS, SCIKITLEARN = "custom", "tensorflow", "tfkeras", "scikitlearn"
PYTORCH, ONNX, TFLITE, FPGA = "pytorch", "onnx", "tflite", "fpga"
FRAMEWORKS = (CUSTOM, TENSORFLOW, TFKERAS, SCIKITLEARN, PYTORCH, ONNX, TFLITE, FPGA)

_ALIASES = {
    "sklearn": SCIKITLEARN,
    "scikit-learn": SCIKITLEARN,
    "keras": TFKERAS,
    "tf": TENSORFLOW,
    "torch": PYTORCH,
    "qonnx": FPGA,
}

# Bytes sniffed from pickles and ONNX files; large files are read only this far.
_SNIFF = 16 << 20


class Framework:
    """Constants as in ``azureml.core.Model.Framework``; they compare equal to stored values."""

    CUSTOM = CUSTOM
    TENSORFLOW = TENSORFLOW
    TFKERAS = TFKERAS
    SCIKITLEARN = SCIKITLEARN
    PYTORCH = PYTORCH
    ONNX = ONNX
    TFLITE = TFLITE
    FPGA = FPGA


def normalize(framework: str) -> str:
    """Accept any case and common aliases (``ScikitLearn``, ``sklearn``, ``torch``...)."""
    key = framework.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FRAMEWORKS:
        raise InvalidInputError(f"unknown framework {framework!r}: choose one of {', '.join(FRAMEWORKS)}")
    return key


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_SNIFF)


def _file_framework(rel: str, path: Path) -> str | None:
    name = rel.rsplit("/", 1)[-1].lower()
    suffix = Path(name).suffix
    if name == "saved_model.pb":
        return TENSORFLOW
    if name in ("hls4ml_config.yml", "hls4ml_config.yaml", "fpga.json") or suffix in (".xclbin", ".bit", ".xmodel"):
        return FPGA
    if suffix in (".keras", ".h5", ".hdf5"):
        return TFKERAS
    if suffix == ".tflite":
        return TFLITE
    if suffix in (".pt", ".pth", ".ptl"):
        return PYTORCH
    if suffix == ".onnx":
        return FPGA if b"qonnx.custom_op" in _head(path) else ONNX
    if suffix in (".pkl", ".pickle", ".joblib", ".sav"):
        head = _head(path)
        if b"sklearn" in head:
            return SCIKITLEARN
        if b"torch" in head:
            return PYTORCH
    return None


# When a folder holds several kinds, the most specific wins.
_PRIORITY = (FPGA, TENSORFLOW, TFKERAS, PYTORCH, TFLITE, ONNX, SCIKITLEARN)


def detect(files: list[tuple[str, Path]]) -> str:
    """Guess the framework from ``(relative path, real path)`` pairs; ``custom`` when unsure."""
    found = {fw for rel, path in files if (fw := _file_framework(rel, path))}
    return next((fw for fw in _PRIORITY if fw in found), CUSTOM)
