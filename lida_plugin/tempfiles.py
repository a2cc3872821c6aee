"""Temporary output files that a crash may leave behind, and removing them safely.

Every temporary file lida writes next to an output is named ``.<name>.lida-tmp-<pid>-<8 hex>``
(:func:`temp_path`) and is held under an exclusive ``flock`` by its writer for as long as it
exists (:func:`writing`). A SIGKILL leaves such a file behind; :func:`sweep_stale_temps` removes
one only when

* its name matches that exact pattern, and
* no process holds its lock (the lock dies with its holder, on any file system with ``flock``), and
* its writer is gone: the pid in the name is not a live process (a pid reused by an unrelated
  process keeps the file until it is a day old, which errs on the side of keeping).

So a sweep never removes the temporary file of a live writer, in this process or another one.
Names without a pid (written by older versions, and the watcher's report temps
``.lida-tmp-<name>...``) are removed only when the caller owns the folder exclusively
(``owned=True``: ``lida watch`` holds the lock on its journal) and no one holds a lock on them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

TMP_MARK = ".lida-tmp-"
#: ``.<name>.lida-tmp-<pid>-<8 hex>``: what :func:`temp_path` makes.
TEMP_RE = re.compile(r"^\..+\.lida-tmp-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}$")
#: A temp whose pid is alive but which nobody locks is removed after this long (pid reuse).
REUSED_PID_AGE_S = 24 * 3600


def temp_path(dest: Path) -> Path:
    """A fresh temporary name beside ``dest``: ``.<dest name>.lida-tmp-<pid>-<hex>``."""
    return dest.parent / f".{dest.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def writing(path: Path) -> Iterator[BinaryIO]:
    """Create ``path`` exclusively and hold an exclusive lock on it until the block ends (also
    after the file is closed or renamed: the lock lives on its own descriptor)."""
    f = open(path, "x+b")  # noqa: SIM115 - closed below, after the lock
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield f
    finally:
        f.close()


def hold(path: Path) -> int:
    """Open ``path`` and lock it exclusively; returns the descriptor (close it to release)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _unlink_if_unlocked(path: Path) -> bool:
    """Remove ``path`` if no one holds a lock on it (the lock is held while unlinking)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False  # a live writer
            raise
        # the name may have been replaced since it was opened: only remove what was checked
        if os.fstat(fd).st_ino != os.lstat(path).st_ino:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_stale(path: Path, *, owned: bool = False, now: float | None = None) -> bool:
    """Whether ``path`` is a temp of ours whose writer is gone (see the module docstring); the
    lock is checked when removing."""
    m = TEMP_RE.match(path.name)
    if m is None:
        return owned and path.name.startswith(".") and TMP_MARK in path.name
    pid = int(m.group("pid"))
    if pid == os.getpid():  # this process's own: locked while written, never stale while it runs
        return False
    if not _pid_alive(pid):
        return True
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except OSError:
        return False
    return age > REUSED_PID_AGE_S


def sweep_stale_temps(dirs: Iterable[Path], *, recursive: bool = False, owned: bool = False) -> list[Path]:
    """Remove the stale temporary files in ``dirs`` (and below them with ``recursive``); returns them."""
    removed: list[Path] = []
    for d in dirs:
        walk = os.walk(d) if recursive else [(str(d), [], _names(d))]
        for root, _, files in walk:
            for f in files:
                if TMP_MARK not in f or not f.startswith("."):
                    continue
                p = Path(root) / f
                if is_stale(p, owned=owned) and _unlink_if_unlocked(p):
                    removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed), removed[:5])
    return removed


def _names(d: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(d) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []
