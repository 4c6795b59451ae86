"""Notebooks follow the house rules: outputs stripped, a `parameters` cell of plain literals, python3 kernel."""

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_thin_and_stripped(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "run `make strip`"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged `parameters` (papermill)"
    for node in ast.parse(params[0].source).body:  # plain literal assignments only
        assert isinstance(node, ast.Assign)
        ast.literal_eval(node.value)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds the workbench's notebooks"
