"""The import graph of bvvlab/ reads as floors (issue 22): every package is a folder, ordered bottom
up in `bvvlab.FLOORS`; a module imports only from its own package or one below it, and no module
imports itself round a circle. Imports inside functions count too (a lazy import is still a
dependency). The remote-code model file imports nothing of bvvlab's."""

from __future__ import annotations

import ast
from pathlib import Path

import bvvlab

PKG = Path(bvvlab.__file__).parent
ROOT_MODULES = {"bvvlab", "bvvlab.__main__"}  # the version, and `python -m bvvlab` (it calls the cli)


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """bvvlab modules imported anywhere in `path` (top level, functions, TYPE_CHECKING blocks),
    as full dotted names; relative imports resolved against the module's package."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "bvvlab" or base.startswith("bvvlab."):
                for a in node.names:  # `from bvvlab.x import y`: y may be a module of x
                    sub = f"{base}.{a.name}"
                    out.add(sub if _exists(sub) else base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bvvlab.")}
    return out - {me, "bvvlab"}


def _exists(dotted: str) -> bool:
    p = PKG.parent / dotted.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def floor(module: str) -> int:
    parts = module.split(".")
    return -1 if module in ROOT_MODULES else bvvlab.FLOORS.index(parts[1])


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_package_is_a_floor():
    folders = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert folders == set(bvvlab.FLOORS), f"folders {sorted(folders)} vs bvvlab.FLOORS {bvvlab.FLOORS}"
    stray = [p.name for p in PKG.glob("*.py") if p.stem not in {"__init__", "__main__"}]
    assert not stray, f"modules outside a floor: {stray}"


def test_no_module_imports_from_a_floor_above():
    g = graph()
    upward = sorted(f"{m} imports {d}" for m, deps in g.items() if m not in ROOT_MODULES
                    for d in deps if floor(d) > floor(m))
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


def test_the_remote_code_file_is_self_contained():
    """model.py is copied into every checkpoint: it may import nothing of bvvlab's, and the fused
    model only its sibling model file (relative import, as remote code needs)."""
    assert imports_of(PKG / "models" / "model.py") == set()
    assert imports_of(PKG / "models" / "fused_model.py") == {"bvvlab.models.model"}


def test_the_check_sees_an_upward_and_a_lazy_import(tmp_path):
    """The checker itself: a lazy import in a function is seen, resolved to its module, and its
    floor compared."""
    fake = PKG / "core" / "_probe_check_tmp.py"
    fake.write_text("def f():\n    from bvvlab.train import loop\n    from bvvlab.cli import main\n")
    try:
        deps = imports_of(fake)
    finally:
        fake.unlink()
    assert deps == {"bvvlab.train.loop", "bvvlab.cli"}
    assert floor("bvvlab.train.loop") > floor("bvvlab.core.atomic")


def test_argparse_lives_in_the_cli_only():
    """Commands apart from the library (issue 22): no module outside bvvlab/cli imports argparse or
    registers a command, so the remote-code model file copied into every checkpoint holds only
    the model."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if "argparse" in names:
                offenders.append(f"{module_name(path)} imports argparse")
            if isinstance(node, ast.FunctionDef) and node.name in ("add_cli", "add_parser"):
                offenders.append(f"{module_name(path)} defines {node.name}")
    assert not offenders, offenders
    assert "__main__" not in (PKG / "models" / "model.py").read_text(encoding="utf-8")
