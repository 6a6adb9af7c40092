"""A conda environment (a conda file or a v1 ``Environment``) as the image's pip requirements.

:func:`resolve_requirements` keeps the ``pip:`` section as it is, checks ``python=`` against the
image's Python, drops packages edgepack already provides, and moves conda packages with a known
PyPI twin to pip; any other conda-only package is an error naming it. Conda match specs
(``conda-forge::numpy=1.26``) are not PEP 508: :class:`CondaSpec` reads them and
:meth:`CondaSpec.to_pip` writes the PyPI twin as a pip requirement, checked with ``packaging``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from packager.errors import InvalidInputError
from packager.image.requirements import parse_requirement, pip_entry, requirement_name
from packager.image.spec import PYTHON_VERSION

if TYPE_CHECKING:
    from packager.image.inference_config import InferenceConfig

log = logging.getLogger(__name__)

#: pip packages the image already provides (edge_module serves these modules): dropped with a note.
PROVIDED_BY_EDGEPACK = {
    "azureml-defaults": "edge_module is the scoring server and serves azureml.core.model and aml_request/aml_response",
    "azureml-core": "edge_module serves azureml.core and azureml.core.model (Model.get_model_path)",
    "azureml-inference-server-http": "edge_module is the scoring server and serves its aml_request/aml_response",
    "azureml-contrib-services": "edge_module serves azureml.contrib.services.aml_request/aml_response",
}
#: Dropped packages that used to bring ``inference-schema`` with them (added back if the script uses it).
BROUGHT_INFERENCE_SCHEMA = {"azureml-defaults", "azureml-inference-server-http"}
#: Conda-only build tools that mean nothing in the image.
CONDA_DROPPED = {"pip": "pip is not needed in the image: the dependency layer is installed at build time"}
#: conda package name -> PyPI name, for conda packages that are the same project on PyPI.
CONDA_TO_PYPI = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "scikit-learn": "scikit-learn",
    "joblib": "joblib",
    "pillow": "pillow",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "protobuf": "protobuf",
    "requests": "requests",
    "pyyaml": "pyyaml",
    "six": "six",
    "python-dateutil": "python-dateutil",
    "pytz": "pytz",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "matplotlib-base": "matplotlib",
    "statsmodels": "statsmodels",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "cloudpickle": "cloudpickle",
    "networkx": "networkx",
    "h5py": "h5py",
    "pyarrow": "pyarrow",
    "setuptools": "setuptools",
    "wheel": "wheel",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "pytorch": "torch",
    "torchvision": "torchvision",
    "py-xgboost": "xgboost",
    "opencv": "opencv-python-headless",
}
#: ``[channel::]name[ version[ build]]``: the version part is translated by :func:`conda_version_to_pip`.
_CONDA_SPEC_RE = re.compile(r"^(?:(?P<channel>[^:\s]+)::)?(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?P<rest>.*)$")
CONDA_ACCEPTED = "[channel::]name[=version], e.g. numpy=1.26 or conda-forge::scikit-learn==1.4.2"


@dataclass(frozen=True)
class CondaSpec:
    """A conda match spec such as ``conda-forge::numpy=1.26``: canonical name, version part, channel."""

    text: str
    name: str
    version: str = ""
    channel: str = ""

    @classmethod
    def parse(cls, spec: str) -> CondaSpec:
        m = _CONDA_SPEC_RE.match(spec.strip())
        if not m:
            raise InvalidInputError(f"cannot read conda package spec {spec!r}; write it as {CONDA_ACCEPTED}")
        return cls(spec.strip(), canonicalize_name(m.group("name")), m.group("rest").strip(), m.group("channel") or "")

    def pip_specifier(self) -> str:
        """The version part as a pip specifier (``""`` when there is none)."""
        return conda_version_to_pip(self.version, self.text)

    def to_pip(self) -> str | None:
        """The PyPI twin as a pip requirement (``numpy=1.26`` → ``numpy==1.26.*``); None without a known twin."""
        pypi = CONDA_TO_PYPI.get(self.name)
        if pypi is None:
            return None
        requirement = pypi + self.pip_specifier()
        parse_requirement(requirement, f"conda package {self.text!r} (as pip: {requirement})")
        return requirement


def conda_version_to_pip(version: str, spec: str) -> str:
    """A conda version constraint as a pip one: ``=1.26`` → ``==1.26.*``, ``==1.2`` → ``==1.2``, ``>=1`` as is.

    Build strings (``=1.26.4=py311h...``) are dropped; ``|`` alternatives cannot be translated.
    """
    v = version.strip()
    if not v:
        return ""
    if v.startswith("[") or "|" in v:
        raise InvalidInputError(
            f"conda spec {spec!r} cannot be translated to pip; move the package to the pip: section"
        )
    if v[0] in "<>!~":
        return v.replace(" ", "")
    if v.startswith("=="):
        return "==" + v[2:].split("=", 1)[0].strip()
    if v.startswith("="):
        ver = v[1:].split("=", 1)[0].strip()
    else:
        ver = v.split()[0]
        if ver[0] in "<>!~=":
            return conda_version_to_pip(ver, spec)
    if not ver:
        return ""
    return f"=={ver}" if ver.endswith("*") else f"=={ver}.*"


def check_python(spec: CondaSpec, where: str, notes: list[str]) -> None:
    """Refuse a ``python`` spec the image's Python does not satisfy; note when only the patch level differs."""
    constraint = spec.pip_specifier()
    if not constraint:
        return
    try:
        spec_set = SpecifierSet(constraint)
    except InvalidSpecifier:
        raise InvalidInputError(
            f"{where}: cannot read the Python version in {spec.text!r}; write python={PYTHON_VERSION}"
        ) from None
    patches = [f"{PYTHON_VERSION}.{n}" for n in range(0, 40)]
    fitting = [p for p in patches if spec_set.contains(p, prereleases=False)]
    if not fitting:
        raise InvalidInputError(
            f"{where} asks for {spec.text!r}, but images run Python {PYTHON_VERSION} (the base image's): "
            f"change it to python={PYTHON_VERSION} and check your packages support {PYTHON_VERSION}"
        )
    if len(fitting) < len(patches):
        notes.append(
            f"{spec.text}: the image has the base image's Python {PYTHON_VERSION}.x (the patch level is not pinned)"
        )


@dataclass(frozen=True)
class Requirements:
    """pip requirements for the dependency layer, and what was changed on the way (for the user)."""

    pip: list[str] = field(default_factory=list)
    python_version: str = PYTHON_VERSION
    channels_ignored: list[str] = field(default_factory=list)
    moved_from_conda: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _uses_inference_schema(cfg: InferenceConfig) -> bool:
    script = cfg.entry_script_file
    if script is None:
        return False
    try:
        return "inference_schema" in script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def resolve_requirements(cfg: InferenceConfig) -> Requirements:
    """The pip requirements of ``cfg`` (conda file or environment), with notes on what changed.

    Raises :class:`InvalidInputError` for a Python other than the image's, for conda-only packages
    (listing them all, with the fix: move them to the ``pip:`` section under their PyPI names) and
    for requirements pip cannot read (naming them).
    """
    cd, where, base_dir = cfg.conda_dependencies()
    if cd is None:
        return Requirements()
    notes: list[str] = []
    pip: list[str] = []
    moved: list[str] = []
    dropped: list[str] = []
    conda_only: list[str] = []
    channels = [c for c in cd.channels if c]
    for text in cd.conda_packages:
        spec = CondaSpec.parse(text)
        if spec.channel and spec.channel not in channels:
            channels.append(spec.channel)
        if spec.name == "python":
            check_python(spec, where, notes)
            continue
        if spec.name in CONDA_DROPPED:
            dropped.append(spec.text)
            notes.append(f"{spec.text}: dropped ({CONDA_DROPPED[spec.name]})")
            continue
        requirement = spec.to_pip()
        if requirement is None:
            conda_only.append(spec.text)
            continue
        pip.append(requirement)
        moved.append(requirement)
        notes.append(f"conda package {spec.text}: installed from PyPI as {requirement}")
    if conda_only:
        raise InvalidInputError(
            f"{where} lists conda package(s) edgepack cannot install: {', '.join(conda_only)}; images are "
            "built from PyPI wheels: move them to the 'pip:' section under their PyPI names (or drop them)"
        )
    dropped_names: set[str] = set()
    for entry in cd.pip_packages:
        for line in pip_entry(entry, base_dir, where):
            name = requirement_name(line, where)
            reason = PROVIDED_BY_EDGEPACK.get(name)
            if reason:
                dropped.append(line)
                dropped_names.add(name)
                notes.append(f"{line}: dropped ({reason})")
                continue
            pip.append(line)
    names = {requirement_name(p) for p in pip}
    if dropped_names & BROUGHT_INFERENCE_SCHEMA and "inference-schema" not in names and _uses_inference_schema(cfg):
        pip.append("inference-schema")
        notes.append("inference-schema: added (the entry script uses it; azureml-defaults used to bring it)")
    unique: list[str] = []
    for p in pip:
        if p not in unique:
            unique.append(p)
    ignored = [c for c in channels if c != "defaults"]
    if ignored and (moved or unique):
        notes.append(f"conda channels ignored ({', '.join(ignored)}): packages come from PyPI")
    for note in notes:
        log.warning("%s", note)
    return Requirements(
        pip=unique,
        python_version=PYTHON_VERSION,
        channels_ignored=ignored,
        moved_from_conda=moved,
        dropped=dropped,
        notes=notes,
    )


__all__ = [
    "CONDA_TO_PYPI",
    "PROVIDED_BY_EDGEPACK",
    "CondaSpec",
    "Requirements",
    "check_python",
    "conda_version_to_pip",
    "resolve_requirements",
]
