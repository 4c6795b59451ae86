"""The documentation says what the code does.

* The repository is self-contained: code, notebooks and tests cite docs/recipe.md and
  docs/stack.md (or the papers), never notes kept outside the repository, and every section they
  cite exists there.
* Every command in README.md and docs/*.md (shell blocks, and inline spans that start with a
  program) names a real `bvvlab` subcommand with flags its parser accepts, a notebook and its
  parameters, a script and its flags, or a Makefile target; the cheap ones run for real (slow).
* Every `bvvlab.x.y` name and `bvvlab/x/y.py` path in README, docs and the notebooks' text exists.
* README and docs/architecture.md give the package map of `bvvlab.FLOORS` (issue 22: the three
  maps of the floors had disagreed); architecture.md describes every module; README names every
  notebook and shows a small committed picture of the report.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ("bvvlab/", "notebooks/", "tests/", "bench/", "scripts/", "docs/", "README.md", "Makefile")
SELF = "tests/test_docs.py"

# references a clone of the repository cannot follow
OUTSIDE = re.compile(r"bvv-recipe|stack-notes|\.\./shared|shared/reference|[\"']shared[\"']\s*/\s*[\"']reference[\"']"
                     r"|(?<![\w/])DESIGN\.md")  # the project's plan lives outside the repository too

NUM = r"\d+(?:\.\d+)?"
DASH = r"\s*[-\u2013]\s*"
# "docs/recipe.md section 3", "recipe sections 2-3", "recipe sections 2 and 3", "recipe section 3, steps 6-7"
RECIPE_SECTION = re.compile(
    rf"recipe(?:\.md)?`?\s+sections?\s+({NUM})(?:(?:{DASH}|\s+and\s+)({NUM}))?(?:,\s*steps?\s+(\d+)(?:{DASH}(\d+))?)?",
    re.IGNORECASE)
# "recipe 3.6", "Recipe 3.2-3.5", "recipe 3:", "docs/recipe.md 3.1"
RECIPE_SHORT = re.compile(rf"recipe(?:\.md)?`?\s+({NUM})(?:{DASH}({NUM}))?(?![\w*])", re.IGNORECASE)
STACK_SECTION = re.compile(r"docs/stack\.md`?\s+sections?\s+(\d+[a-z]?(?:\.\d+)?)", re.IGNORECASE)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked-file list is unavailable")
    files = [f for f in out.decode().split("\0") if f]
    return [f for f in files if f != SELF and any(f == s or f.startswith(s) for s in SCOPE)
            and (ROOT / f).is_file()]


def read(f: str) -> str:
    return (ROOT / f).read_text(encoding="utf-8", errors="replace")


def sections(doc: str) -> set[str]:
    """Section labels of a docs page: "3" from "## 3. ...", "3.6" from "### 3.6 ...", "5a" from "### 5a. ..."."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,4}\s+(\d+[a-z]?(?:\.\d+)?)\.?\s", text, re.MULTILINE))


def expand(a: str, b: str | None) -> list[str]:
    """Labels from a to b inclusive ("3.2", "3.5" -> 3.2 .. 3.5; "2", "3" -> 2, 3)."""
    if not b:
        return [a]
    pa, pb = a.split("."), b.split(".")
    if len(pa) == len(pb) == 1:
        return [str(i) for i in range(int(a), int(b) + 1)]
    if len(pa) == len(pb) == 2 and pa[0] == pb[0]:
        return [f"{pa[0]}.{i}" for i in range(int(pa[1]), int(pb[1]) + 1)]
    return [a, b]


def recipe_citations(text: str) -> list[tuple[str, str]]:
    """(matched text, section label) for every recipe citation in `text`."""
    out = []
    for m in RECIPE_SECTION.finditer(text):
        a, b, s1, s2 = m.groups()
        if s1:  # "section 3, steps 6-7": subsections of the (single) section named
            out += [(m.group(0), f"{a}.{s}") for s in expand(s1, s2)]
        elif b and " and " in m.group(0):
            out += [(m.group(0), a), (m.group(0), b)]
        else:
            out += [(m.group(0), x) for x in expand(a, b)]
    for m in RECIPE_SHORT.finditer(text):
        out += [(m.group(0), x) for x in expand(*m.groups())]
    return out


def test_no_citation_leaves_the_repository():
    hits = [f"{f}:{i}: {line.strip()[:120]}"
            for f in tracked_files() for i, line in enumerate(read(f).splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, ("these lines cite notes outside the repository; cite docs/recipe.md, docs/stack.md "
                      "or the papers instead:\n" + "\n".join(hits))


def test_recipe_citations_name_existing_sections():
    have = sections("recipe.md")
    assert {str(i) for i in range(1, 11)} <= have, f"docs/recipe.md lost a numbered section: {sorted(have)}"
    bad = [f"{f}: {cited!r} -> section {label}"
           for f in tracked_files() for cited, label in recipe_citations(read(f)) if label not in have]
    assert not bad, "citations of docs/recipe.md sections that do not exist:\n" + "\n".join(bad)


def test_stack_citations_name_existing_sections():
    have = sections("stack.md")
    bad = [f"{f}: {m.group(0)!r}" for f in tracked_files() for m in STACK_SECTION.finditer(read(f))
           if m.group(1) not in have]
    assert not bad, "citations of docs/stack.md sections that do not exist:\n" + "\n".join(bad)


def test_citation_parser():
    got = [x for _, x in recipe_citations(
        "recipe section 3; docs/recipe.md sections 2-3; `docs/recipe.md` section 4; recipe sections 2 and 3; "
        "docs/recipe.md section 3, steps 6-7; Recipe 3.2-3.5; recipe 3.6; (recipe 3: literal); RECIPE_32; "
        "the recipe's 12*d^2; docs/recipe.md 3.1")]
    assert got == ["3", "2", "3", "4", "2", "3", "3.6", "3.7", "3.2", "3.3", "3.4", "3.5", "3.6", "3", "3.1"]


# ---------------------------------------------------------------------------------------------
# README and docs/ say what the code does: commands, names, paths, the package map, the notebooks

PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "bash", "shell", "console"}
# an inline span is a command when it starts with a program (after env assignments, `time`, `cd X &&`)
PROGRAM = (r"(?:\.venv/bin/)?(?:bvvlab|python3?|papermill|make|torchrun|pytest|lm_eval|conda|pip|jupyter|apt-get)"
           r"(?=\s|$)")
INLINE_COMMAND = re.compile(rf"^(?:(?:[A-Z_]+=(?:\$\([^)]*\)|\S+)|time|cd\s+\S+\s+&&)\s+)*{PROGRAM}")
EXTERNAL = {"pip", "lm_eval", "jupyter", "apt-get"}  # other projects' commands: not bvvlab's to check
# commands on files outside the repository, quoted as what was measured
# (docs/stack.md's papermill timing ran on a 7-cell test notebook)
SCRATCH = {"papermill in.ipynb out.ipynb -k python3 -p n_points 100 -p seed 3"}
DOTTED = re.compile(r"(?<![\w./])bvvlab(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w./-])bvvlab/[\w/.]*\w/?")
PACKAGED_ONLY = {"bvvlab/_data"}  # exists in a built wheel only (pyproject's package-dir)


def page_text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


def notebook_markdown(nb: Path) -> str:
    import json

    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def shell_commands(text: str) -> list[tuple[str, bool]]:
    """(command, inline) for every line of a shell block (backslash continuations joined, comments
    dropped) and every inline code span that starts with a program."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang in SHELL:
            for line in re.sub(r"\\\n\s*", " ", body).splitlines():
                line = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
                if line:
                    out.append((line, False))
    prose = FENCE.sub("", text)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if INLINE_COMMAND.match(span):
            out.append((span, True))
    return out


def split_command(command: str) -> list[list[str]]:
    """The argument lists of a command line: `$(...)` kept as one word, `&&`/`;`/`|` split it,
    and leading `NAME=value`, `time`, `cd DIR` and `.venv/bin/` dropped."""
    import shlex

    words = shlex.split(re.sub(r"\$\([^)]*\)", "SUBST", command))
    parts, cur = [], []
    for w in words + ["&&"]:
        if w in ("&&", ";", "||", "|"):
            while cur and (re.fullmatch(r"[A-Z_]+=\S*", cur[0]) or cur[0] == "time"):
                cur = cur[1:]
            if cur and cur[0] != "cd":
                cur[0] = cur[0].removeprefix(".venv/bin/")
                parts.append(cur)
            cur = []
        else:
            cur.append(w)
    return parts


_PARSER = []


def bvvlab_parser():
    if not _PARSER:
        from bvvlab.cli import build_parser

        _PARSER.append(build_parser())
    return _PARSER[0]


def check_bvvlab(args: list[str], inline: bool) -> str | None:
    """Why `bvvlab ARGS` would not parse (None when it does): its subcommand, flags, key=value
    overrides (TrainConfig keys) and a `--config configs/...` file."""
    import argparse
    import contextlib
    import io

    parser = bvvlab_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if args in (["--help"], ["-h"]):
        return None
    if not args or args[0] not in sub.choices:
        return f"no such subcommand {args[:1]} (have {', '.join(sub.choices)})"
    if inline and len(args) == 1:
        return None  # a mention of the command, e.g. `bvvlab eval`
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1]
    from bvvlab.train.config import config_keys

    keys = set(config_keys())
    overrides = getattr(ns, "overrides", None) or []
    bad = [o for o in overrides if o.split("=")[0] not in keys and not o.startswith("model.")]
    if bad:
        return f"unknown TrainConfig key(s) {bad}"
    config = getattr(ns, "config", None)
    if config and config.startswith("configs/") and not (ROOT / config).is_file():
        return f"no config file {config}"
    return None


def notebook_parameters(nb: Path) -> set[str]:
    import ast
    import json

    cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def check_papermill(args: list[str], inline: bool) -> str | None:
    import yaml

    books = [a for a in args if a.endswith(".ipynb")]
    if not books:
        return None if inline else "papermill without a notebook"
    nb = ROOT / books[0]
    if not nb.is_file():
        return f"no notebook {books[0]}"
    have, named = notebook_parameters(nb), []
    for flag, value in zip(args, args[1:] + [""]):
        if flag == "-p":
            named.append(value)
        elif flag == "-y":
            named += list(yaml.safe_load(value))
    bad = [n for n in named if n not in have]
    return f"{books[0]} has no parameter(s) {bad}" if bad else None


def check_script(args: list[str], inline: bool) -> str | None:
    """`python FILE.py --flag ...`: the file exists and defines every flag given."""
    if args[:2] == ["-m", "bvvlab"]:
        return None if inline and len(args) == 2 else check_bvvlab(args[2:], False)
    if args[:1] in (["-c"], ["-m"]) or not args:
        return None
    script = ROOT / args[0]
    if not script.is_file():
        return f"no script {args[0]}"
    text = script.read_text(encoding="utf-8")
    bad = [a.split("=")[0] for a in args[1:] if a.startswith("--") and f'"{a.split("=")[0]}"' not in text]
    return f"{args[0]} has no flag(s) {bad}" if bad else None


def check_command(args: list[str], inline: bool) -> str | None:
    prog, rest = args[0], args[1:]
    if " ".join(args) in SCRATCH or (inline and not rest):  # `torchrun`, `bvvlab`: the program's name
        return None
    if prog == "srun":  # Slurm runs the command after its own options on every task (docs/cluster.md)
        i = next((k for k, a in enumerate(rest) if not a.startswith("-")), len(rest))
        return check_command(rest[i:], inline) if rest[i:] else "srun without a command"
    if prog == "export":  # an environment variable for the commands that follow (a job script)
        return None if all(re.match(r"^[A-Z_][A-Z0-9_]*=", a) for a in rest[:1]) else f"export {rest}: not NAME=VALUE"
    if prog == "bvvlab":
        return check_bvvlab(rest, inline)
    if prog in ("python", "python3"):
        return check_script(rest, inline)
    if prog == "torchrun":
        i = rest.index("-m") if "-m" in rest else -1
        return check_bvvlab(rest[i + 2:], False) if rest[i + 1:i + 2] == ["bvvlab"] else "torchrun without -m bvvlab"
    if prog == "papermill":
        return check_papermill(rest, inline)
    if prog == "make":
        targets = set(re.findall(r"^([\w-]+):", page_text("Makefile"), re.MULTILINE))
        bad = [t for t in rest if "=" not in t and t not in targets]
        return f"no Makefile target(s) {bad}" if bad else None
    if prog == "pytest":
        bad = [a for a in rest if not a.startswith("-") and not (ROOT / a.split("::")[0]).exists()]
        return f"no test file(s) {bad}" if bad else None
    if prog == "conda":
        return None if (ROOT / rest[rest.index("-f") + 1]).is_file() else "no environment file"
    if prog in EXTERNAL:
        return None
    return f"test_docs cannot check {prog!r}: teach check_command how"


def resolve_name(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def python_block_names(body: str) -> list[str]:
    """`bvvlab.x.y` names a python block uses: its imports, and attributes of imported modules."""
    import ast

    tree, alias, names = ast.parse(body), {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bvvlab"):
            for a in node.names:
                names.append(f"{node.module}.{a.name}")
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("bvvlab"):
                    alias[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in alias:
            names.append(f"{alias[node.value.id]}.{node.attr}")
    return names


def section(text: str, heading: str) -> str:
    """The text under the first heading that contains `heading`, up to the next heading of its level or above."""
    m = re.search(rf"^(#+)[^\n]*{re.escape(heading)}[^\n]*\n", text, re.MULTILINE | re.IGNORECASE)
    assert m, f"no heading containing {heading!r}"
    end = re.search(rf"^#{{1,{len(m.group(1))}}}\s", text[m.end():], re.MULTILINE)
    return text[m.end():m.end() + end.start()] if end else text[m.end():]


def map_rows(text: str) -> list[str]:
    """The packages of a package-map table, in order: rows `| N | `name/` | ... |`."""
    return re.findall(r"^\|\s*\d+\s*\|\s*`(\w+)/`\s*\|", section(text, "package map"), re.MULTILINE)


def test_command_parser():
    cmds = shell_commands("```sh\n.venv/bin/bvvlab train --preset tiny \\\n  lr=1e-3   # fast\n\n# note\nmake demo\n```\n"
                          "Run `time BVVLAB_CACHE=$(mktemp -d) make demo OUT=/tmp/x`, not `bvvlab.train` or `--steps 3`.\n"
                          "```text\nbvvlab pipeline --profile smoke|demo\n```\n")
    assert cmds == [(".venv/bin/bvvlab train --preset tiny lr=1e-3", False), ("make demo", False),
                    ("time BVVLAB_CACHE=$(mktemp -d) make demo OUT=/tmp/x", True)]
    assert split_command("cd /tmp && OMP_NUM_THREADS=1 .venv/bin/python x.py --a 1") == [["python", "x.py", "--a", "1"]]
    assert split_command(cmds[2][0]) == [["make", "demo", "OUT=/tmp/x"]]
    assert check_command(["bvvlab", "train", "--stepz", "3"], False)  # a wrong flag is caught
    assert check_command(["bvvlab", "train", "stepz=3"], False)  # and a wrong TrainConfig key
    assert check_command(["bvvlab", "nope"], True)
    assert check_command(["make", "nope"], False) and check_command(["wget", "x"], False)
    assert check_command(["papermill", "notebooks/02_train.ipynb", "o.ipynb", "-p", "stepz", "1"], False)
    assert check_command(["python", "scripts/report_screenshot.py", "r.html", "--nope"], False)
    assert check_command(["python", "-m", "bvvlab"], False) and check_command(["python", "-m", "bvvlab"], True) is None
    assert check_command(["bvvlab", "train", "--steps", "3", "lr=1e-3"], False) is None
    assert python_block_names("from bvvlab.app import widgets as w\nw.load_model('x')\nimport bvvlab.core\n") == [
        "bvvlab.app.widgets", "bvvlab.app.widgets.load_model"]


@pytest.mark.parametrize("page", PAGES)
def test_every_command_in_the_docs_is_real(page):
    """Each command names a real bvvlab subcommand and flags its parser accepts (TrainConfig keys
    for key=value), an existing notebook and its parameters, an existing script and its flags,
    a Makefile target, or an existing test file."""
    bad = []
    for command, inline in shell_commands(page_text(page)):
        for args in split_command(command):
            why = check_command(args, inline)
            if why:
                bad.append(f"{command!r}: {why}")
    assert not bad, f"{page}: commands that would not run as written:\n" + "\n".join(bad)


def test_the_docs_show_commands():
    """The extractor finds the commands (so the test above cannot pass by finding none)."""
    found = {page: len(shell_commands(page_text(page))) for page in PAGES}
    assert found["README.md"] >= 5 and sum(found.values()) >= 60, found


@pytest.mark.parametrize("page", PAGES + sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_names_and_paths_in_the_docs_exist(page):
    """Every `bvvlab.x.y` name and `bvvlab/x/y.py` path in README, docs/ and the notebooks' text
    exists in the code, and every name a python block uses resolves: a moved or renamed module
    shows up here."""
    if page.endswith(".ipynb"):
        text, blocks = notebook_markdown(ROOT / page), []
    else:
        text = page_text(page)
        blocks = [body for lang, body in FENCE.findall(text) if lang == "python"]
    names = set(DOTTED.findall(text)) | {n for body in blocks for n in python_block_names(body)}
    bad = sorted(n for n in names if not resolve_name(n))
    paths = {p.rstrip("/") for p in PATH.findall(text)}
    bad += sorted(p for p in paths if p not in PACKAGED_ONLY and not (ROOT / p).exists())
    assert not bad, f"{page} names what the code does not have: {bad}"


def test_readme_and_architecture_give_the_package_map_of_FLOORS():
    import bvvlab

    assert map_rows(page_text("README.md")) == list(bvvlab.FLOORS)
    arch = page_text("docs/architecture.md")
    assert map_rows(arch) == list(bvvlab.FLOORS)
    headed = re.findall(r"^###\s+`(\w+)/`", section(arch, "The packages"), re.MULTILINE)
    assert headed == list(bvvlab.FLOORS), "docs/architecture.md: one `### `pkg/`` section per floor, in order"
    missing = [f"{pkg}/{m.name}" for pkg in bvvlab.FLOORS for m in sorted((ROOT / "bvvlab" / pkg).glob("*.py"))
               if not m.name.startswith("_") and f"`{m.name}`" not in section(arch, f"`{pkg}/`")]
    assert not missing, f"docs/architecture.md does not describe these modules: {missing}"


def test_readme_names_every_notebook():
    readme = page_text("README.md")
    missing = [nb.name for nb in sorted((ROOT / "notebooks").glob("*.ipynb")) if f"notebooks/{nb.name}" not in readme]
    assert not missing, f"README.md does not say what these notebooks show: {missing}"


def test_readme_picture_is_committed_and_small():
    readme = page_text("README.md")
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert pictures, "README shows no picture of the report"
    for pic in pictures:
        path = ROOT / pic
        assert path.is_file() and path.suffix == ".png", pic
        assert path.stat().st_size < 200_000, f"{pic} is {path.stat().st_size:,} bytes; regenerate it smaller"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", pic


# the documented commands that cost seconds, run for real in this order (each must still be in the docs)
RUN_FOR_REAL = [
    "bvvlab corpus concepts --split validation -n 3",
    "bvvlab model-params",
    "bvvlab train --preset tiny --steps 20 --out runs/smoke",
    "bvvlab train --out runs/smoke --resume steps=40",
    "bvvlab pipeline --profile paper --dry-run",
]


@pytest.mark.slow
def test_cheap_documented_commands_run_as_written(tmp_path):
    """The commands a newcomer tries first run in a fresh folder and print what the docs say: the
    preset table of docs/model.md is the command's own output."""
    import json
    import os
    import sys

    documented = {" ".join(a) for page in PAGES for c, _ in shell_commands(page_text(page)) for a in split_command(c)}
    assert not [c for c in RUN_FOR_REAL if c not in documented], "RUN_FOR_REAL lists a command the docs dropped"
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = {}
    for c in RUN_FOR_REAL:
        done = subprocess.run([sys.executable, "-m", *c.split()], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{c}: {done.stderr[-2000:]}"
        out[c] = done.stdout
    assert [json.loads(line)["source"] for line in out[RUN_FOR_REAL[0]].splitlines()] == ["concepts"] * 3
    table = [re.sub(r" \([\d.]+[MBK]\)", "", line)  # "164,160 (0.2M)" -> "164,160"
             for line in out["bvvlab model-params"].splitlines() if line.startswith("| ")]
    documented_table = [line for line in section(page_text("docs/model.md"), "The model").splitlines()
                        if line.startswith("| ") and not line.startswith("| preset")]
    assert documented_table and documented_table == [r for r in table if not r.startswith("| preset")]
    assert (tmp_path / "runs/smoke/checkpoints/step_0000040").is_dir()
    assert "469,795,840 parameters" in out["bvvlab pipeline --profile paper --dry-run"]


@pytest.mark.parametrize("page", PAGES)
def test_links_lead_to_files(page):
    """Every relative link of README and docs/ opens a file of the repository."""
    targets = re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", page_text(page)))
    bad = [t for t in targets if not re.match(r"\w+:", t) and not (ROOT / page).parent.joinpath(t.split("#")[0]).exists()]
    assert not bad, f"{page} links to files that do not exist: {bad}"
