"""One writer per run folder (floor 1): the lock that `bvvlab train`, `grow` and `pipeline` take.

`folder_lock(folder, command)` holds an exclusive `flock` on `.NAME.lock` beside the folder
(in its parent, so the run folder itself never holds a stray file and need not exist yet). The
kernel releases a flock when its holder dies, however it dies (SIGKILL, power cut on a local
disk), so a lock whose process is gone is taken over at once, and a live one cannot be: pid
files alone get both wrong (a reused pid looks alive, two takers of a stale file both win).
The file's content (pid, command, host) is only for the message a second writer gets:

    another bvvlab grow (pid 4242 on host) is writing to runs/g: wait for it to finish, or ...

The lock file is removed on release, and so are the parent folders the lock had to create;
a leftover one (after SIGKILL) is harmless and reused. flock is advisory and local: on a
network file system that does not support it, two machines are not kept apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from bvvlab.core.atomic import output_error
from bvvlab.core.errors import BVVError


class LockedError(BVVError):
    """Another live process writes to the folder: one line naming it and the fix."""


def lock_path(folder: str | os.PathLike) -> Path:
    """Where the lock of `folder` lives: `.NAME.lock` in its parent."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name or 'root'}.lock"


def holder(path: str | os.PathLike) -> dict:
    """What a lock file says about its holder ({} when it cannot be read, or is still being written)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _make_parents(path: Path) -> list[Path]:
    """mkdir -p `path`; the folders it created, deepest first."""
    made = []
    for p in (path, *path.parents):
        if p.exists():
            break
        made.append(p)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path) from None
    return made


def _acquire(path: Path, folder: Path, command: str) -> int:
    """An fd holding the flock of `path` (the file at `path` now, not one a releasing holder has
    just unlinked), or LockedError."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise LockedError(f"{path} is a folder, where bvvlab keeps the lock of {folder}: move it away "
                              "(it is not bvvlab's), or choose another output folder") from None
        except OSError as exc:
            raise output_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            who = holder(path)
            pid = f"pid {who['pid']}" if who.get("pid") else "pid unknown"
            host = f" on {who['host']}" if who.get("host") and who.get("host") != socket.gethostname() else ""
            raise LockedError(f"another bvvlab {who.get('command', 'command')} ({pid}{host}) is writing to {folder}: "
                              f"wait for it to finish, or choose another output folder") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file between our open and flock: take the new one


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the lock of `folder` for the block (see the module docstring); yields the lock file.
    A second process asking for the same folder gets one `LockedError` line at once."""
    folder = Path(folder)
    path = lock_path(folder)
    made = _make_parents(path.parent)
    try:
        fd = _acquire(path, folder, command)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command, "host": socket.gethostname(),
                                 "folder": str(folder)}).encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a waiting taker then re-opens the new file
        os.close(fd)
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for p in folders:
        with contextlib.suppress(OSError):
            p.rmdir()  # only when empty: what the locked work wrote stays
