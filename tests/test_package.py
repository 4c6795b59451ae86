"""The embedded data lives in the checkout's top-level `data/` (the layout the project asked
for) and ships inside the wheel as `bvvlab/_data/` (pyproject's package-dir), so an installed
bvvlab works offline with no checkout present; an editable install reads the checkout's."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import bvvlab
from bvvlab.core.runinfo import REPO_ROOT, data_dir, embedded_data_dir
from bvvlab.corpus.concepts import LEXICON_FILES
from bvvlab.glyph.font import FONT_FILE

PKG = Path(bvvlab.__file__).resolve().parent


def test_data_dir_is_the_checkout_s_data(monkeypatch):
    monkeypatch.delenv("BVVLAB_DATA", raising=False)
    assert data_dir() == REPO_ROOT / "data" == embedded_data_dir()
    assert (data_dir() / FONT_FILE).is_file() and (data_dir() / "corpora" / "manifest.json").is_file()
    monkeypatch.setenv("BVVLAB_DATA", "/somewhere/else")
    assert data_dir() == Path("/somewhere/else")
    assert embedded_data_dir() == REPO_ROOT / "data"  # the suites never follow the override


def test_every_subpackage_is_declared():
    """pyproject lists the packages by hand (the data mapping needs an explicit list): a new
    folder under bvvlab/ that is not listed would be missing from the wheel."""
    conf = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {"bvvlab"} | {f"bvvlab.{p.parent.name}" for p in PKG.glob("*/__init__.py")}
    assert set(conf["packages"]) == folders | {"bvvlab._data"}
    assert conf["package-dir"] == {"bvvlab._data": "data"}


@pytest.mark.slow
def test_wheel_works_offline_without_a_checkout(tmp_path):
    """Build the wheel, install it (no dependencies: they come from this environment's
    site-packages, never from a download) into a fresh virtual environment, and run two commands
    from another directory with no checkout on the path."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO_ROOT)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("bvvlab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert f"bvvlab/_data/{FONT_FILE}" in names and "bvvlab/_data/eval/manifest.json" in names
    assert "bvvlab/_data/corpora/manifest.json" in names
    assert {f"bvvlab/_data/concepts/{p.name}" for p in LEXICON_FILES} <= set(names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # this environment's third-party packages, but not its editable bvvlab (a .pth to the checkout)
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "deps.pth").write_text("\n".join(ours) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "BVVLAB_DATA"}}
    # no PYTHONPATH for pip either: with a checkout on it, pip finds bvvlab "already satisfied"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env["BVVLAB_CACHE"] = str(tmp_path / "cache")
    probe = subprocess.run([str(py), "-c", "import bvvlab, sys; from bvvlab.core.runinfo import data_dir; "
                            "print(bvvlab.__file__); print(data_dir())"], cwd=work, env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert str(REPO_ROOT) not in probe[0] and probe[1].endswith("bvvlab/_data"), probe
    bvv = venv / "bin" / "bvvlab"
    corpus = subprocess.run([str(bvv), "corpus", "libreoffice-en-ru", "-n", "2"], cwd=work, env=env, capture_output=True, text=True)
    assert corpus.returncode == 0, corpus.stderr
    assert corpus.stdout.strip()
    concepts = subprocess.run([str(bvv), "corpus", "concepts", "-n", "2"], cwd=work, env=env, capture_output=True,
                              text=True)  # the lexicon is read from the wheel's data
    assert concepts.returncode == 0, concepts.stderr
    assert len(concepts.stdout.splitlines()) == 2
    embed = subprocess.run([str(bvv), "embed", "--vocab", "compact", "--out", str(work / "emb")], cwd=work, env=env,
                           capture_output=True, text=True)
    assert embed.returncode == 0, embed.stderr
    assert (work / "emb" / "meta.json").is_file()
