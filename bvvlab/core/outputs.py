"""Output folders and figures: one rule for every command that writes a folder (floor 1).

**The rule** (`check_output`, run before any work): a command's `--out` may be new, an empty
folder, or, with `--overwrite`, a folder holding an earlier result *of the same command*;
anything else (a training run, a checkpoint, another command's result, a user's folder, a file,
a folder that holds one of the command's inputs) is refused in one line and left as it is.
A result is recognised by the marker file `.bvvlab-output.json` the command writes into it
(`{"command": "probe", ...}`), or by a command's own test (`holds`: a fused checkpoint's
config.json, the files a folder written before markers existed has). probe, eval, embed and
fuse follow it; train, grow and pipeline have their own record of a run (meta.json,
pipeline.json) and resume rather than replace.

**Figures** (`write_figure`): plotly's `write_html(include_plotlyjs="directory")` writes
`plotly.min.js` beside the page with a plain `write_text` and never again once a file of that
name exists, so a full disk left a truncated bundle that every later run trusted. Here the
bundle is written through `write_atomic` and reused only when its size and sha256 match the
installed plotly's; the page itself is written atomically too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from bvvlab.core.atomic import sha256_file, write_atomic, write_json_atomic
from bvvlab.core.errors import BVVError

MARKER = ".bvvlab-output.json"


class OutputExistsError(BVVError, FileExistsError):
    """`--out` holds something the command may not replace: one line, nothing touched."""


def output_kind(folder: str | os.PathLike) -> str | None:
    """The command whose result `folder` holds, per its marker (None: no readable marker)."""
    try:
        info = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("command") if isinstance(info, dict) and isinstance(info.get("command"), str) else None


def mark_output(folder: str | os.PathLike, command: str) -> Path:
    """Write the marker that says `folder` holds `command`'s result (inside the folder being built)."""
    from bvvlab import __version__

    return write_json_atomic(Path(folder) / MARKER, {"command": command, "bvvlab_version": __version__})


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except (ValueError, OSError):
        return False
    return True


def check_output(out: str | os.PathLike, command: str, what: str, overwrite: bool, *,
                 holds: Callable[[Path], bool] | None = None, inputs: Iterable[str | os.PathLike] = (),
                 option: str = "--out", error: type[Exception] = OutputExistsError) -> Path:
    """`out` if `command` may write its result (`what`, e.g. "probe result") there; else one
    `error` line naming what is in the way and the fix (see the module docstring). `inputs`: paths
    the command reads; `out` may not be one of them or hold one (replacing it would delete it)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"{option} {out} is a file: choose a new or empty folder for the {what}")
    for p in inputs:
        p = Path(p)
        if out.exists() and p.exists() and _inside(p, out):
            raise error(f"{option} {out} {'is' if p.resolve() == out.resolve() else 'holds'} one of the inputs "
                        f"({p}): choose a new or empty folder for the {what}")
    try:
        empty = not out.is_dir() or not any(out.iterdir())
    except OSError as exc:
        raise error(f"{option} {out} cannot be read ({exc.strerror}): choose another folder") from None
    if empty:
        return out
    a = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
    ours = output_kind(out) == command or (holds is not None and output_kind(out) is None and holds(out))
    if not ours:
        raise error(f"{option} {out} is not empty and holds something other than {a} (it is left as it is; "
                    f"--overwrite replaces only an earlier {what}): choose a new or empty folder")
    if not overwrite:
        raise error(f"{option} {out} already holds {a}: pass --overwrite to replace it, or choose a new or "
                    "empty folder")
    return out


# ---------------------------------------------------------------------------------------------
# figures


@functools.lru_cache(maxsize=1)
def _plotlyjs() -> tuple[bytes, str]:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs().encode("utf-8")
    return js, hashlib.sha256(js).hexdigest()


def plotly_bundle(folder: str | os.PathLike) -> Path:
    """`folder/plotly.min.js`, the installed plotly's bundle: reused when its size and sha256
    match, else (missing, truncated, another version) written whole through `write_atomic`."""
    js, digest = _plotlyjs()
    path = Path(folder) / "plotly.min.js"
    try:
        intact = path.stat().st_size == len(js) and sha256_file(path) == digest
    except OSError:
        intact = False
    if not intact:
        write_atomic(path, js)
    return path


def write_figure(fig: Any, path: str | os.PathLike, **to_html: Any) -> Path:
    """A plotly figure as `path` (an HTML page that loads `plotly.min.js` from its folder, so it
    draws offline), the page and the bundle each written whole or not at all."""
    path = Path(path)
    plotly_bundle(path.parent)
    return write_atomic(path, fig.to_html(include_plotlyjs="directory", **to_html))
