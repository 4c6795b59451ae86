"""The repository is self-contained: code, notebooks and tests cite docs/recipe.md and
docs/stack.md (or the papers), never notes kept outside the repository, and every section
they cite exists there."""

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
