"""Where things live, and how every run describes itself (DESIGN.md: "every run describes itself").

`run_meta()` is the common part of every `meta.json`: bvvlab version, git commit, package
versions, device, seed and the caller's config. `write_json_atomic` writes through a temporary
name and a rename, so an interrupted write never leaves half a file behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow", "scikit-learn")


def data_dir() -> Path:
    """The embedded data folder (`data/` of the repo); `BVVLAB_DATA` overrides it."""
    return Path(os.environ.get("BVVLAB_DATA", REPO_ROOT / "data"))


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
    """The commit of the bvvlab checkout (with `-dirty` when it has uncommitted changes)."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
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


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


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


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(to_jsonable(obj), fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a run's meta is for colleagues to read too
    os.replace(tmp, path)
