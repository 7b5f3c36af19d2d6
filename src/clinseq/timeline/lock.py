"""Exclusive locks on the folders clinseq writes: a store target and a run folder (design §2, Integrity).

:class:`FolderLock` holds an ``flock`` on a lock file that records the holder (pid, host, command,
time). The kernel releases an ``flock`` when its process ends, however it ends (SIGKILL included), so
a lock left by a dead process is never "held": the next run takes it at once (stale locks are
reclaimed by construction, and the file's old content only tells whose it was). A forked child (a
reader worker, a DataLoader worker) closes its inherited copy at once, so it never keeps a dead
parent's lock. A second run that finds
the lock held fails at once with :class:`LockHeldError`, naming the holder.

Where ``flock`` is not available (some network file systems answer ``ENOLCK``), the lock falls back to
an ``O_EXCL`` lock file: a file of a process that no longer exists on this host is reclaimed; one from
another host is reported with its host (remove it by hand once that run is over).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from clinseq.errors import LockHeldError

__all__ = ["FolderLock", "LockHeldError"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


#: Lock file descriptors held by this process; a forked child closes its copies at once (below), so a
#: worker process (a reader pool, a DataLoader) never keeps its parent's lock alive after the parent dies.
_HELD_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_FDS):
        try:
            os.close(fd)  # the child's reference only: the parent's flock stays
        except OSError:
            pass
    _HELD_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class FolderLock:
    """An exclusive, non-blocking lock on ``lock_path``, held from :meth:`acquire` to :meth:`release`.

    Args:
        lock_path: the lock file (created; removed on release).
        what: what the lock protects, for messages (e.g. ``"store target runs/x"``).

    Use as a context manager or call :meth:`acquire` / :meth:`release`. Not re-entrant: a second lock
    on the same file, even in this process, is refused (two writers in one process are a bug too).
    """

    def __init__(self, lock_path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(lock_path)
        self.what = what
        self._fd: int | None = None
        self._excl = False
        self._owner = os.getpid()

    @property
    def held(self) -> bool:
        return self._fd is not None or self._excl

    def _holder_text(self, info: dict[str, Any] | None) -> str:
        if not info:
            return "another process (its lock file holds no details)"
        started = info.get("started")
        return (
            f"pid {info.get('pid')} on host {info.get('host')}"
            + (f", since {started}" if started else "")
            + (f" ({info.get('command')})" if info.get("command") else "")
        )

    def _read_info(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _info(self) -> bytes:
        payload = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:300],
        }
        return json.dumps(payload).encode()

    def _held_error(self, info: dict[str, Any] | None) -> LockHeldError:
        return LockHeldError(
            f"{self.what} is being written by {self._holder_text(info)} (lock {self.path}); wait for that "
            "run to end or stop it: two runs must never write one folder"
        )

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`LockHeldError` at once (never waits)."""
        if self.held:
            raise LockHeldError(f"{self.path}: this lock is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._held_error(self._read_info()) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self._acquire_excl()
                raise
            # The file may have been removed (released) between our open and our flock: then we hold a
            # lock on an orphan inode; start again on the file now at the path.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, self._info())
            os.fsync(fd)
            os.set_inheritable(fd, False)
            self._fd, self._owner = fd, os.getpid()
            _HELD_FDS.add(fd)
            return self
        raise LockHeldError(f"{self.path}: could not take the lock (it keeps being replaced)")

    def _acquire_excl(self) -> FolderLock:
        """``O_EXCL`` fallback: the file's existence is the lock; a dead same-host holder is reclaimed."""
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self._read_info()
                same_host = info is not None and info.get("host") == socket.gethostname()
                if same_host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise self._held_error(info) from None
            with os.fdopen(fd, "wb") as f:
                f.write(self._info())
            self._excl, self._owner = True, os.getpid()
            return self
        raise LockHeldError(f"{self.path}: could not take the lock (it keeps being replaced)")

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent; a forked child never releases its
        parent's lock)."""
        if os.getpid() != self._owner:
            return
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD_FDS.discard(fd)
            try:
                self.path.unlink(missing_ok=True)  # while still locked: nobody can take a stale inode
            finally:
                os.close(fd)
        elif self._excl:
            self._excl = False
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a writer dropped without release: never leave the lock behind
        try:
            self.release()
        except Exception:
            pass
