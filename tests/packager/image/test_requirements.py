"""Requirement lines read with ``packaging``; conda specs translated to PEP 508 first."""

from __future__ import annotations

from pathlib import Path

import pytest

from packager.errors import InvalidInputError
from packager.image import deps
from packager.image.conda import CondaSpec, resolve_requirements
from packager.image.environment import CondaDependencies
from packager.image.inference_config import InferenceConfig
from packager.image.requirements import parse_requirement, pip_entry, requirement_name
from packager.image.spec import Platform


@pytest.mark.parametrize(
    "line",
    [
        "scikit-learn",
        "Scikit_Learn>=1.4",
        "scikit.learn==1.5.2",
        "SCIKIT--LEARN[extra]",
        " scikit_learn ; python_version>'3'",
    ],
)
def test_names_with_dots_underscores_and_case_normalise_the_same(line: str) -> None:
    assert requirement_name(line) == "scikit-learn"


def test_extras_and_markers_are_kept() -> None:
    line = 'pandas[parquet,excel]>=2; platform_machine == "aarch64"'
    assert pip_entry(line, None, "conda file") == [line]
    req = parse_requirement(line)
    assert req.extras == {"parquet", "excel"} and str(req.specifier) == ">=2"
    assert req.marker is not None and "aarch64" in str(req.marker)


@pytest.mark.parametrize("line", ["numpy=1.26", "foo bar", "pandas>=", "==1.0", "a==1.2.x"])
def test_bad_requirements_name_the_line_and_what_is_accepted(line: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        pip_entry(line, None, "conda file c.yml")
    msg = str(err.value)
    assert msg.startswith("conda file c.yml: ") and repr(line) in msg
    assert "not a valid pip requirement" in msg and "e.g. scikit-learn==1.5.2" in msg


def test_a_bad_pip_line_in_a_conda_file_is_named(tmp_path: Path) -> None:
    conda = tmp_path / "c.yml"
    conda.write_text("dependencies:\n  - pip:\n    - joblib\n    - numpy=1.26\n")
    with pytest.raises(InvalidInputError, match=rf"conda file {conda}: 'numpy=1.26' is not a valid pip requirement"):
        resolve_requirements(InferenceConfig(conda_file=conda))


def test_extra_requirements_are_checked_before_pip_runs(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"'onnx runtime' is not a valid pip requirement"):
        deps.stage_dependencies(["numpy", "onnx runtime"], Platform("linux", "amd64"), tmp_path)
    assert not (tmp_path / "deps").exists()


@pytest.mark.parametrize(
    ("spec", "name", "version", "channel", "pip"),
    [
        ("numpy", "numpy", "", "", "numpy"),
        ("numpy=1.26", "numpy", "=1.26", "", "numpy==1.26.*"),
        ("conda-forge::scikit-learn==1.4.2", "scikit-learn", "==1.4.2", "conda-forge", "scikit-learn==1.4.2"),
        ("Scikit_Learn >=1.2,<2", "scikit-learn", ">=1.2,<2", "", "scikit-learn>=1.2,<2"),
        ("pytorch=2.3.1=py3.11_cpu_0", "pytorch", "=2.3.1=py3.11_cpu_0", "", "torch==2.3.1.*"),
        ("python=3.11", "python", "=3.11", "", None),
        ("libgcc-ng", "libgcc-ng", "", "", None),
    ],
)
def test_conda_specs_translate_to_pep508(spec: str, name: str, version: str, channel: str, pip: str | None) -> None:
    parsed = CondaSpec.parse(spec)
    assert (parsed.name, parsed.version, parsed.channel) == (name, version, channel)
    assert parsed.to_pip() == pip
    if pip:
        assert requirement_name(pip) == requirement_name(parsed.to_pip() or "")


def test_conda_specs_that_are_not_versions_are_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"conda package 'numpy=abc\$' \(as pip: numpy==abc\$\.\*\)"):
        CondaSpec.parse("numpy=abc$").to_pip()
    with pytest.raises(InvalidInputError, match=r"cannot read conda package spec '::'; write it as \[channel::\]name"):
        CondaSpec.parse("::")


def test_remove_packages_by_normalised_name() -> None:
    cd = CondaDependencies.create(
        pip_packages=["Scikit_Learn==1.5", "joblib", "-r extra.txt"], conda_packages=["conda-forge::NumPy=1.26"]
    )
    cd.remove_pip_package("scikit.learn")
    cd.remove_conda_package("numpy")
    assert cd.pip_packages == ["joblib", "-r extra.txt"] and cd.conda_packages == []
