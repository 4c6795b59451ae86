"""Atomic writes, output folders and content hashes: the one copy of each.

Everything bvvlab saves goes through `write_atomic` / `write_json_atomic` (a file) or
`atomic_dir` (a folder, such as a checkpoint): the content is written under a temporary name
beside its destination and renamed into place, so a kill, a full disk or a read-only folder never
leaves half a file under the final name. On an OS error the temporary copy is removed and one
`OutputError` line says which path failed, why, and how much space it needed. Files get the
user's umask, like any other program's output (mkstemp alone would make them 0600).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bvvlab.core.errors import OutputError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a file is in the way of a folder",
    errno.EEXIST: "a file is in the way of a folder",
}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` the mode a plain `open()` / `mkdir()` would have: 0666 / 0777 less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def _existing_parent(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p if p.is_dir() else p.parent
    return Path.cwd()


_OS_ERROR = re.compile(r"os error (\d+)")


def as_oserror(exc: BaseException) -> OSError | None:
    """`exc` as an OSError when it is one, or wraps one: safetensors reports a full disk as
    `SafetensorError("... No space left on device (os error 28)")`, not as an OSError."""
    if isinstance(exc, OSError):
        return exc
    m = _OS_ERROR.search(str(exc)) if isinstance(exc, Exception) else None
    if m is None:
        return None
    code = int(m.group(1))
    return OSError(code, os.strerror(code))


def output_error(exc: OSError, path: str | os.PathLike, needed: int | None = None) -> OutputError:
    """One line for an OSError while writing `path`: which path, why, and the space it needed."""
    path = Path(path)
    reason = _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    space = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(_existing_parent(path)).free
            need = f"about {needed / 2**20:.1f} MiB needed, " if needed else ""
            space = f" ({need}{free / 2**20:.1f} MiB free)"
    return OutputError(f"cannot write {path}: {reason}{space}; free some space or choose another output folder "
                       "(nothing was left half-written, earlier files are intact)")


def ensure_dir(path: str | os.PathLike) -> Path:
    """`mkdir -p path`, with one clear line when a regular file stands where a folder must be."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise OutputError(f"{p} is a file, not a folder: choose another output folder (or move the file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path) from None
    return path


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


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` through a temporary sibling and a rename (fsync'd before the rename)."""
    path = Path(path)
    ensure_dir(path.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        apply_umask(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise output_error(exc, path, len(raw)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_atomic(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, replace: bool = False, needed: int | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; when the block ends without error it
    becomes `final` by rename. An existing `final` is an error unless `replace=True`, which swaps
    it out (`.old-NAME-PID`, removed after the new copy is in place: a kill in between leaves a
    complete copy under one of the two names; `checkpoints.clean_leftovers` sorts that out).
    On any error the temporary folder is removed (and a swapped-out copy put back); an OSError
    (or a library error wrapping one, such as safetensors' on a full disk) becomes one `OutputError` line."""
    final = Path(final)
    ensure_dir(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    _remove(tmp)
    try:
        tmp.mkdir()
        apply_umask(tmp, directory=True)
        yield tmp
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} already exists: choose another folder")
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            _remove(old)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except BaseException:
                os.replace(old, final)  # the previous copy goes back under its name
                raise
            _remove(old)
        else:
            os.replace(tmp, final)
    except OutputError as exc:  # a write inside the block: name the destination, not the temporary folder
        _remove(tmp)
        raise OutputError(str(exc).replace(str(tmp), str(final))) from None
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, FileExistsError) and exc.errno is None:
            raise
        os_exc = as_oserror(exc)
        if os_exc is None:
            raise
        raise output_error(os_exc, final, needed) from None


# ---------------------------------------------------------------------------------------------
# content hashes


def sha256_bytes(*parts: bytes | str) -> str:
    """sha256 of the parts, each length-prefixed (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, h: Any = None) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks); with `h`, feed an existing hasher too."""
    own = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            own.update(block)
            if h is not None:
                h.update(block)
    return own.hexdigest()


def hash_path(path: str | os.PathLike, h: Any) -> None:
    """Feed a file's (or a folder's files', with their relative names) bytes into the hasher `h`."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        sha256_file(f, h)
