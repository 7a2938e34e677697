"""Notebooks are committed stripped, with a typed parameters cell and the python3 kernel."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from readiness.params.model import PHASES

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_phases() -> None:
    assert NOTEBOOKS, "no notebooks found"
    assert {p.stem for p in NOTEBOOKS} <= set(PHASES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stripped_with_kernel(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_typed_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters'"
    tree = ast.parse(tagged[0].source)
    names = set()
    for node in tree.body:  # only annotated assignments with a help comment: no logic
        assert isinstance(node, ast.AnnAssign), f"{path.name}: parameters cell holds only typed assignments"
        names.add(node.target.id)  # type: ignore[union-attr]
    assert {"params_file", "run_dir"} <= names
    for line in tagged[0].source.splitlines():
        assert "#" in line, f"{path.name}: every parameter has a help comment: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_thin_cells(path: Path) -> None:
    """No business logic in notebooks: no defs, classes or loops, few lines per cell."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While, ast.Lambda)), \
                f"{path.name}: logic belongs in lib/readiness"
        assert len(cell.source.splitlines()) <= 5
    assert nb.cells[0].cell_type == "markdown"
