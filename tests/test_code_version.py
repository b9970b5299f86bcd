"""Variant keys follow what the measuring code means: moving it keys nothing anew, changing it does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.sweep.measuring_code import (
    CORE,
    PIPELINES,
    core_code_version,
    method_code_version,
)
from store.code_version import python_files, source_digest

ROOT = Path(__file__).resolve().parents[1]


def _copy_measuring_code(dst: Path) -> Path:
    for name in CORE + ("gptq",):
        shutil.copytree(PIPELINES / name, dst / "pipelines" / name)
    return dst / "pipelines"


def _digest(root: Path, names=CORE) -> str:
    return source_digest(python_files([root / n for n in names]))


def test_moving_a_file_and_fixing_its_imports_keeps_the_version(tmp_path):
    root = _copy_measuring_code(tmp_path)
    before = _digest(root)
    assert before == source_digest(python_files([PIPELINES / n for n in CORE]))
    # move measure/sqnr.py into sources/ under another name, and point its importers at the new place
    moved = root / "sources" / "signal_to_noise.py"
    (root / "measure" / "sqnr.py").rename(moved)
    for path in python_files([root / n for n in CORE]):
        text = path.read_text()
        path.write_text(text.replace("pipelines.measure.sqnr", "pipelines.sources.signal_to_noise"))
    # hoist a function-level import to the module top, and reword a docstring
    features = root / "measure" / "features.py"
    features.write_text(features.read_text().replace('"""', '"""Reworded. ', 1))
    assert _digest(root) == before


def test_splitting_a_module_keeps_the_version(tmp_path):
    root = _copy_measuring_code(tmp_path)
    before = _digest(root)
    source = root / "quantize" / "formats.py"
    text = source.read_text()
    cut = text.index("\ndef parse_formats(")
    source.write_text(text[:cut] + "\n")
    (root / "quantize" / "format_lists.py").write_text(
        "from pipelines.quantize.formats import parse_format, PRESETS, FormatError\n" + text[cut:])
    assert _digest(root) == before


@pytest.mark.parametrize("path", sorted(str(p.relative_to(PIPELINES)) for p in python_files(
    [PIPELINES / n for n in CORE]) if p.stat().st_size > 0))
def test_changing_any_core_file_changes_the_version(tmp_path, path):
    root = _copy_measuring_code(tmp_path)
    before = _digest(root)
    target = root / path
    target.write_text(target.read_text() + "\nSOME_NEW_CONSTANT = 1\n")
    assert _digest(root) != before


def test_a_new_file_under_a_measuring_package_changes_the_version(tmp_path):
    root = _copy_measuring_code(tmp_path)
    before = _digest(root)
    (root / "measure" / "new_metric.py").write_text("def metric(x):\n    return x * 2\n")
    assert _digest(root) != before


def test_gptq_code_keys_only_gptq(tmp_path):
    root = _copy_measuring_code(tmp_path)
    core, gptq = _digest(root), _digest(root, ("gptq",))
    layer = root / "gptq" / "layer.py"
    layer.write_text(layer.read_text().replace("DAMP_GRID", "DAMP_GRID_RENAMED"))
    assert _digest(root) == core and _digest(root, ("gptq",)) != gptq
    assert method_code_version("rtn") is None
    assert method_code_version("gptq") != core_code_version()
