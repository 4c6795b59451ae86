"""The package finds its data through its own resources (issue 9), so an installed wheel works
offline and an editable install never reads or writes another checkout's folders by accident."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import bvvlab
from bvvlab.font import FONT_FILE
from bvvlab.runinfo import data_dir

PKG = Path(bvvlab.__file__).resolve().parent


def test_data_dir_is_the_package_s_own(monkeypatch):
    monkeypatch.delenv("BVVLAB_DATA", raising=False)
    assert data_dir() == PKG / "assets"
    assert (data_dir() / FONT_FILE).is_file() and (data_dir() / "corpora" / "manifest.json").is_file()
    monkeypatch.setenv("BVVLAB_DATA", "/somewhere/else")
    assert data_dir() == Path("/somewhere/else")


def test_every_asset_is_declared_as_package_data():
    conf = tomllib.loads((PKG.parent / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = conf["tool"]["setuptools"]["package-data"]["bvvlab"]
    files = [p.relative_to(PKG).as_posix() for p in (PKG / "assets").rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, missing
