"""Azure ML v1's rule for the entry script and conda file (:mod:`edge_module.app_paths`), with the docs' layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_module.app_paths import AppPathError, resolve_app_paths


@pytest.fixture
def docs_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``proj/app/score.py``, ``proj/app/env.yml``, ``proj/app/lib/util.py``; the working folder is ``elsewhere``."""
    app = tmp_path / "proj" / "app"
    (app / "lib").mkdir(parents=True)
    (app / "score.py").write_text("def init(): pass\ndef run(d): return d\n")
    (app / "lib" / "util.py").write_text("")
    (app / "env.yml").write_text("dependencies: []\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return app


@pytest.mark.parametrize("source", ["abs", "../proj/app"])
def test_relative_to_the_source_directory(docs_layout: Path, source: str) -> None:
    src = str(docs_layout) if source == "abs" else source
    paths = resolve_app_paths("score.py", src, "env.yml")
    assert paths.source_dir == docs_layout
    assert paths.entry_script == docs_layout / "score.py" and paths.entry_script_rel == "score.py"
    assert paths.conda_file == docs_layout / "env.yml"
    nested = resolve_app_paths("lib/util.py", src)
    assert nested.entry_script_rel == "lib/util.py"


def test_absolute_or_working_folder_path_inside_the_source_directory(docs_layout: Path) -> None:
    assert resolve_app_paths(docs_layout / "score.py", "../proj/app").entry_script_rel == "score.py"
    # named from the working folder (what worked before): still found, still relative to the app root
    assert resolve_app_paths("../proj/app/score.py", "../proj/app").entry_script_rel == "score.py"
    # a base other than the working folder (an inferenceconfig.json's folder)
    paths = resolve_app_paths("score.py", "app", base=docs_layout.parent)
    assert paths.entry_script == docs_layout / "score.py"


def test_outside_the_source_directory_is_refused(docs_layout: Path) -> None:
    outside = docs_layout.parent / "other.py"
    outside.write_text("")
    for script in (outside, "../other.py", "../proj/other.py"):
        with pytest.raises(AppPathError, match=r"is outside --source-dir .*app: move it into that folder"):
            resolve_app_paths(script, docs_layout)
    # the conda file is only read at build time: it may live elsewhere
    assert resolve_app_paths("score.py", docs_layout, outside).conda_file == outside


def test_not_found_names_both_places(docs_layout: Path) -> None:
    cwd = Path.cwd()
    with pytest.raises(AppPathError) as err:
        resolve_app_paths("nope.py", "../proj/app")
    assert str(err.value) == (
        f"entry script 'nope.py' not found: looked in {docs_layout}/nope.py (inside --source-dir {docs_layout}) "
        f"and {cwd}/nope.py"
    )
    with pytest.raises(AppPathError, match=re.escape(f"conda file 'x.yml' not found: looked in {docs_layout}/x.yml")):
        resolve_app_paths("score.py", docs_layout, "x.yml")
    # without a source directory: relative to the working folder, one place
    with pytest.raises(AppPathError, match=re.escape(f"entry script 'score.py' not found: looked in {cwd}/score.py")):
        resolve_app_paths("score.py")
    with pytest.raises(AppPathError, match="source directory nowhere is not a folder"):
        resolve_app_paths("score.py", "nowhere")


def test_without_a_source_directory(docs_layout: Path) -> None:
    paths = resolve_app_paths("../proj/app/score.py")
    assert paths.source_dir is None and paths.entry_script == docs_layout / "score.py"
    assert paths.entry_script_rel == "score.py"  # copied to the app root under its name
    assert resolve_app_paths().entry_script is None
