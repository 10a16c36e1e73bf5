"""Reading and writing files inside run folders without following planted links.

Run folders travel (downloaded, shared on clusters), so a folder someone else prepared may hold a
symbolic link, FIFO or device where flowvae expects one of its own files. Everything here refuses
such entries with a one-line :class:`~flowvae.errors.CheckpointError` instead of writing through
them (which would change a file outside the folder) or reading from them (which could hang, grow
without bound, or leak an outside file into a report):

* :func:`atomic_write` writes through a fresh, randomly named temporary file created with
  ``O_EXCL | O_NOFOLLOW`` next to the target, fsyncs and renames it over the target; a target that
  exists as a symlink or anything but a regular file is refused.
* :func:`append_line` and :func:`open_for_log` append with ``O_NOFOLLOW``.
* :func:`read_bytes` opens with ``O_NOFOLLOW | O_NONBLOCK``, refuses anything that is not a regular
  file or is larger than ``max_bytes``, then reads.

Given ``root``, each also refuses a path whose parent folder resolves outside ``root`` (a
symlinked ``samples/`` or ``checkpoints/`` folder).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import IO

from .errors import CheckpointError

__all__ = ["append_line", "atomic_write", "open_for_log", "read_bytes", "read_text"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _check_root(path: Path, root: str | Path | None) -> None:
    if root is None:
        return
    parent = os.path.realpath(path.parent)
    top = os.path.realpath(root)
    if parent != top and not parent.startswith(top.rstrip(os.sep) + os.sep):
        raise CheckpointError(f"refusing {path}: its folder leads outside {root} (a symbolic link?)")


def _check_target(path: Path) -> None:
    """Refuse an existing target that is a symlink or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"refusing to write {path}: it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"refusing to write {path}: it is not a regular file")


def _open_error(path: Path, e: OSError, what: str) -> CheckpointError:
    if os.path.islink(path):
        return CheckpointError(f"refusing to {what} {path}: it is a symbolic link")
    return CheckpointError(f"cannot {what} {path}: {e.strerror or e}")


def atomic_write(path: str | Path, data: bytes, root: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` via a new temporary file in its folder, fsync and rename.

    Raises:
        CheckpointError: ``path`` exists as a symlink or non-regular file, (with ``root``) its
            folder resolves outside ``root``, or the file cannot be written (a full disk: the
            temporary file is removed and the previous ``path`` is left as it was).
    """
    path = Path(path)
    _check_root(path, root)  # before mkdir, so no folder is created through a link either
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_target(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        _check_target(path)  # once more, just before the rename
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # e.g. a full disk: the old file is untouched, say so
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}; the previous version, if any, "
                                  f"is unchanged") from None
        raise


def _open_append(path: Path, root: str | Path | None) -> int:
    _check_root(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _BINARY, 0o644)
    except OSError as e:
        raise _open_error(path, e, "append to") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"refusing to append to {path}: it is not a regular file")
    os.set_blocking(fd, True)
    return fd


def append_line(path: str | Path, text: str, root: str | Path | None = None) -> None:
    """Append ``text`` (plus a newline unless it ends in one) to ``path`` without following a symlink."""
    fd = _open_append(Path(path), root)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def open_for_log(path: str | Path, root: str | Path | None = None) -> IO[str]:
    """``path`` opened for appending text (a log file), without following a symlink."""
    return os.fdopen(_open_append(Path(path), root), "a", encoding="utf-8")


def read_bytes(path: str | Path, max_bytes: int, root: str | Path | None = None,
               follow_symlinks: bool = False) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    ``follow_symlinks`` is for files the user names themselves (``--config my.yaml``), never for
    files found inside a run folder.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: ``path`` is a symlink, FIFO, device or folder, is larger than
            ``max_bytes``, or (with ``root``) its folder resolves outside ``root``.
    """
    path = Path(path)
    _check_root(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | (0 if follow_symlinks else _NOFOLLOW) | _NONBLOCK | _BINARY)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _open_error(path, e, "read") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"refusing to read {path}: it is not a regular file")
        if st.st_size > max_bytes:
            raise CheckpointError(f"refusing to read {path}: {st.st_size:,} bytes, more than the "
                                  f"{max_bytes:,} allowed")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            # Not read(max_bytes + 1): that reserves the whole bound (16 GiB for a checkpoint) up front.
            data = f.read(min(st.st_size, max_bytes) + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise CheckpointError(f"refusing to read {path}: more than the {max_bytes:,} bytes allowed")
    return data


def read_text(path: str | Path, max_bytes: int, root: str | Path | None = None,
              follow_symlinks: bool = False) -> str:
    """:func:`read_bytes` decoded as UTF-8."""
    return read_bytes(path, max_bytes, root, follow_symlinks).decode("utf-8")
