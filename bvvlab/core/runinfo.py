"""Where things live, and how every run describes itself.

`run_meta()` is the common part of every `meta.json`: bvvlab version, git commit, package
versions, device, seed and the caller's config. Writes go through `bvvlab.core.atomic`.

Where things live: the embedded data (`data_dir()`: the package's `data/`, or `BVVLAB_DATA`),
the content-addressed caches (`cache_dir()`: `~/.cache/bvvlab`, or `BVVLAB_CACHE`) and run
outputs, which always go where the caller says (relative to the working directory), never
next to the installed package.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bvvlab.core.atomic import to_jsonable, write_json_atomic  # noqa: F401  (re-exported: older imports)

# the checkout the package runs from: its git commit is recorded; outputs never go here (see above)
REPO_ROOT = Path(__file__).resolve().parents[2]

_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow", "scikit-learn")


def data_dir() -> Path:
    """The embedded data (the font, the parallel corpora, the evaluation suites).

    In a checkout it is the top-level `data/`; a wheel maps that folder into the package as
    `bvvlab/_data/` (pyproject's package-dir), so an installed bvvlab finds it offline with no
    checkout present. `BVVLAB_DATA` overrides both (a folder with the same layout)."""
    return Path(os.environ["BVVLAB_DATA"]) if "BVVLAB_DATA" in os.environ else embedded_data_dir()


def embedded_data_dir() -> Path:
    """The data that ships with bvvlab, ignoring `BVVLAB_DATA`: `bvvlab/_data/` when installed
    from a wheel, else the checkout's `data/`."""
    installed = Path(__file__).resolve().parents[1] / "_data"
    return installed if installed.is_dir() else REPO_ROOT / "data"


def cache_dir() -> Path:
    """Content-addressed caches (embedding matrices, token shards).

    `BVVLAB_CACHE` overrides; the default is `~/.cache/bvvlab` so that every project checkout
    on a machine shares one cache (entries are keyed by content, never by path).
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bvvlab"
    path = Path(os.environ.get("BVVLAB_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """The commit of the bvvlab checkout (with `-dirty` when tracked files have changes).

    Read without taking `.git/index.lock` (`--no-optional-locks`), so a training run never
    collides with the user's own git command in the same checkout."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=10, env=env).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict[str, Any]:
    """CPU model and thread count, and the CUDA devices if torch sees any."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def run_meta(config: Any = None, **extra: Any) -> dict[str, Any]:
    """The self-description every run directory carries in `meta.json`."""
    from bvvlab import __version__

    meta = {
        "bvvlab_version": __version__,
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "device": device_info(),
    }
    if config is not None:
        meta["config"] = to_jsonable(config)
    meta.update(to_jsonable(extra))
    return meta
