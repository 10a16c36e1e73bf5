"""One training process per run folder, and clean-up of what a killed one left behind.

:class:`RunLock` holds ``RUN/.lock`` for the whole of ``flowvae train``: a second ``train`` into the
same folder is refused in one line that names the holder, instead of both writing config, weights
and metrics into it. Where the operating system offers ``fcntl.flock`` the lock is the kernel's, so
a process that died (SIGKILL, power loss on a local disk) holds nothing and its lock file is stale
by construction. Elsewhere the file's pid is checked: a pid that no longer runs on this host is a
stale lock and is taken over with a warning. The file itself is opened without following links.

:func:`remove_temporary_files` deletes the temporary files of :func:`flowvae.safe_io.atomic_write`
(``.NAME.RANDOM.tmp``) and of earlier releases (``NAME.tmpPID``) that a kill left in the run folder,
which can be as large as a checkpoint. It runs once the lock is held, so no live writer owns them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from .. import safe_io
from ..errors import CheckpointError

__all__ = ["RunLock", "remove_temporary_files"]

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: pid-based stale detection only
    fcntl = None  # type: ignore[assignment]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$|\.tmp\d+$")
_MAX_LOCK_BYTES = 4096


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class RunLock:
    """Exclusive ownership of a run folder while training writes into it (a context manager).

    Raises:
        CheckpointError: another live process holds the folder (its pid and host are named), or
            ``RUN/.lock`` is a symbolic link or not a regular file.
    """

    def __init__(self, run: str | Path):
        self.path = Path(run) / ".lock"
        self.fd: int | None = None

    def _holder(self) -> dict:
        try:
            return json.loads(safe_io.read_text(self.path, _MAX_LOCK_BYTES))
        except Exception:  # noqa: BLE001 - an empty or foreign lock file still means "held"
            return {}

    def _busy(self, holder: dict) -> CheckpointError:
        who = (f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})"
               if holder else "another process")
        return CheckpointError(f"{self.path.parent} is being trained by {who}; wait for it to finish, "
                               f"or choose another --run folder (if no such process runs, delete {self.path})")

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | (0 if fcntl else os.O_EXCL), 0o644)
            except FileExistsError:  # no flock: an existing file is a lock unless its pid is gone
                holder = self._holder()
                if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    log.warning("removing the stale lock of process %s, which no longer runs", holder["pid"])
                    self.path.unlink()
                    continue
                raise self._busy(holder) from None
            except OSError as e:
                if os.path.islink(self.path):
                    raise CheckpointError(f"refusing {self.path}: it is a symbolic link") from None
                raise CheckpointError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise CheckpointError(f"refusing {self.path}: it is not a regular file")
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._busy(self._holder()) from None
                try:  # the holder may have removed the file between our open and our flock
                    same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(record).encode())
            self.fd = fd
            return self
        raise self._busy(self._holder())

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            # Remove the file while still holding it, so no other process can see it unlocked and ours.
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def remove_temporary_files(run: str | Path) -> list[Path]:
    """Delete leftover temporary files in ``run``, ``run/checkpoints`` and ``run/samples``.

    Only names made by flowvae's atomic writes are touched; a symlink is removed as a link (its
    target is never followed). Returns the removed paths.
    """
    removed = []
    for folder in (Path(run), Path(run) / "checkpoints", Path(run) / "samples"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for p in folder.iterdir():
            if _TEMP.search(p.name):
                try:
                    st = os.lstat(p)
                    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        p.unlink()
                        removed.append(p)
                except OSError:
                    continue
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                 ", ".join(p.name for p in removed[:5]))
    return removed
