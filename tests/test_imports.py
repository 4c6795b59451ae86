"""The import graph of bvvlab/ reads as floors (issue 9; the module docstrings name each floor):
no circles, and no module imports one from a floor above it. Imports inside functions count too
(a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import bvvlab

PKG = Path(bvvlab.__file__).parent

# floor of every module: a module may import its own floor (no cycles) and the floors below
FLOORS = {
    1: {"errors", "atomic", "runinfo", "documents", "__init__"},
    2: {"font", "glyphs", "parallel", "concepts", "instructions", "corpora"},
    3: {"tokenizer", "embeddings", "model", "fused_model", "embedding_views", "lora"},
    4: {"checkpoints", "data"},
    # evaluate sits with the trainer: its bits/char is what every training run reports
    5: {"train_config", "distributed", "evaluate", "build", "train", "notebook_params"},
    6: {"probe", "fusion", "growth", "generation"},
    7: {"plots", "widgets", "eval_report"},
    8: {"pipeline", "report", "cli", "__main__"},
}
FLOOR_OF = {m: f for f, mods in FLOORS.items() for m in mods}


def _imports(path: Path) -> set[str]:
    """bvvlab modules imported anywhere in `path` (top level, functions, TYPE_CHECKING blocks)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "bvvlab":
                out |= {a.name for a in node.names}
            elif node.module.startswith("bvvlab."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bvvlab.")}
    return out - {"__version__"}


def graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) - {p.stem} for p in PKG.glob("*.py")}


def test_every_module_has_a_floor():
    assert set(graph()) <= set(FLOOR_OF), f"add new modules to FLOORS: {sorted(set(graph()) - set(FLOOR_OF))}"


def test_no_module_imports_from_a_floor_above():
    upward = sorted(f"{m} (floor {FLOOR_OF[m]}) imports {d} (floor {FLOOR_OF[d]})"
                    for m, deps in graph().items() for d in deps if FLOOR_OF.get(d, 0) > FLOOR_OF[m])
    assert not upward, upward


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_the_check_sees_a_cycle():
    """The checker itself: a made-up cycle is found, and a lazy import is seen."""
    src = "def f():\n    from bvvlab import train\n"
    tree_mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module == "bvvlab":
            tree_mods |= {a.name for a in node.names}
    assert tree_mods == {"train"}
