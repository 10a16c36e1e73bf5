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

PyTorch files from elsewhere (checkpoints, the authors' ``model.pt``) are loaded through
:func:`load_weights_only`: :func:`check_torch_archive` first refuses a zip archive that would
expand in memory beyond its own size, then ``torch.load(weights_only=True)`` runs with torch's
pickle warnings silenced, and a refusal is one line without torch's advice to retry unsafely.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CheckpointError

__all__ = ["append_line", "atomic_write", "open_for_log", "read_bytes", "read_text", "check_torch_archive",
           "load_weights_only", "weights_only_refusal", "MAX_ARCHIVE_DIRECTORY_BYTES"]

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


# ---------------------------------------------------------------------------------------------- PyTorch files

# The zip directory of a torch.save archive takes about 80 bytes per tensor storage; 16 MiB holds
# some 200,000 of them, far more than any model's checkpoint. Bounded because zipfile builds an
# object of a few hundred bytes per entry before anything can be checked.
MAX_ARCHIVE_DIRECTORY_BYTES = 16 << 20
_ZIP_MAGIC = b"PK\x03\x04"  # what torch.load looks for to take a file as a zip archive
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_METHODS = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _directory_size(f: IO[bytes], size: int) -> int | None:
    """The central directory size the end record of the zip ``f`` (``size`` bytes) states, or ``None``
    when there is no end record (zipfile then refuses the file itself)."""
    tail = min(size, 22 + 0xFFFF)  # the end record, then a comment of at most 65,535 bytes
    f.seek(size - tail)
    buf = f.read(tail)
    at = buf.rfind(_EOCD)
    if at < 0 or at + 22 > len(buf):
        return None
    stated = int(struct.unpack_from("<I", buf, at + 12)[0])
    if stated != 0xFFFFFFFF or at < 20 or buf[at - 20:at - 16] != _ZIP64_LOCATOR:
        return stated
    offset = int(struct.unpack_from("<Q", buf, at - 12)[0])  # of the zip64 end record
    if offset + 56 > size:
        return None
    f.seek(offset)
    record = f.read(56)
    return int(struct.unpack_from("<Q", record, 40)[0]) if len(record) == 56 else None


def check_torch_archive(source: bytes | bytearray | memoryview | IO[bytes] | str | Path,
                        name: str | Path | None = None) -> None:
    """Refuse a ``torch.save`` zip archive whose loading would take more memory than the file's size.

    ``torch.load`` inflates each entry of an archive whole into memory, at the size the archive
    states, before anything can look at it: a 1 MB entry compressed with deflate can state 4 GiB.
    ``torch.save`` writes every entry stored (uncompressed), so an archive is refused when an entry
    is compressed, when the sizes its entries state add up to more than the file (stored entries
    cannot), or when its zip directory is larger than :data:`MAX_ARCHIVE_DIRECTORY_BYTES`. Only the
    directory is read (``zipfile``, nothing extracted). A file that does not start as a zip
    (torch's legacy format, or no torch file at all) is left to ``torch.load`` to judge.

    Args:
        source: the file's bytes, a seekable binary file (read from its start; its position is
            restored), or the path of a file already vetted (opened as it is).
        name: the file for messages (default: the path, or the name of the open file).

    Raises:
        CheckpointError: one line naming the file and the entry, if any.
    """
    if name is None:
        name = source if isinstance(source, (str, Path)) else getattr(source, "name", None)
    what = str(name) if isinstance(name, (str, Path)) else "the file"
    with contextlib.ExitStack() as stack:
        if isinstance(source, (bytes, bytearray, memoryview)):
            f: IO[bytes] = io.BytesIO(source)
        elif isinstance(source, (str, Path)):
            f = stack.enter_context(open(source, "rb"))
        else:
            f = source
            start = f.tell()
            stack.callback(f.seek, start)
        f.seek(0)
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return
        size = f.seek(0, os.SEEK_END)
        directory = _directory_size(f, size)
        if directory is not None and directory > MAX_ARCHIVE_DIRECTORY_BYTES:
            raise CheckpointError(f"refusing {what}: its zip directory states {directory:,} bytes, more than the "
                                  f"{MAX_ARCHIVE_DIRECTORY_BYTES:,} of any archive torch.save writes; it is not read")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as zf:
                entries = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"refusing {what}: it starts as a zip archive but its directory cannot be read "
                                  f"({' '.join(str(e).split())}); it is not a file torch.save wrote") from None
    for info in entries:
        if info.compress_type != zipfile.ZIP_STORED:
            method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise CheckpointError(f"refusing {what}: its entry {info.filename!r} is compressed ({method}, stating "
                                  f"{info.file_size:,} bytes from {info.compress_size:,}), which torch.save never "
                                  f"writes and torch.load would inflate whole into memory; it is not read")
    stated = sum(max(info.file_size, info.compress_size) for info in entries)
    if stated > size:
        big = max(entries, key=lambda i: i.file_size)
        raise CheckpointError(f"refusing {what}: its entries state {stated:,} bytes in all ({big.filename!r} "
                              f"{big.file_size:,}), more than the {size:,} of the file itself, which an archive "
                              f"torch.save wrote cannot; it is not read")


# torch's own sentences in the message of a refused load that advise loading the file unsafely
# (weights_only=False, allow-listing its classes), or filing an issue: never shown for a file
# from elsewhere.
_TORCH_ADVICE = re.compile(r"weights_only|trusted source|file an issue|documentation|safe_globals|allowlist|"
                           r"In PyTorch \d", re.IGNORECASE)
_UNSAFE_OBJECT = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")
_NOT_WEIGHTS = ("Weights only load failed", "WeightsUnpickler", "Invalid magic number", "invalid load key",
                "could not find MARK", "pickle data was truncated", "Unsupported operand")


def weights_only_refusal(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, on one line, without torch's advice:
    torch suggests that re-running with ``weights_only=False`` "will likely succeed", which for a
    file from elsewhere means running whatever code it carries."""
    text = str(e)
    unsafe = _UNSAFE_OBJECT.search(text)
    if unsafe:
        return (f"it holds a Python object of {unsafe.group(1) or unsafe.group(2)}, which a weights-only load "
                f"refuses since loading it could run code")
    core = text.split("WeightsUnpickler error:", 1)[-1]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", core) if s.strip()]
    detail = " ".join(s for s in sentences if not _TORCH_ADVICE.search(s)).strip()
    detail = detail if len(detail) <= 200 else detail[:197] + "..."
    if any(marker in text for marker in _NOT_WEIGHTS) or type(e).__name__ == "UnpicklingError":
        return (f"it is not a weights-only PyTorch archive (torch.save of tensors and plain containers"
                f"{f'; torch: {detail}' if detail else ''}), and flowvae will not unpickle it")
    return f"{type(e).__name__}: {detail or 'unreadable'}"


@contextlib.contextmanager
def _quiet_torch_load() -> Iterator[None]:
    """torch's warnings while it unpickles (a pickle protocol other than its own, ...): about a file
    that is refused or loaded anyway, and each one advises something unsafe or irrelevant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch(\.|$)")
        yield


def load_weights_only(source: bytes | bytearray | IO[bytes], name: str | Path, hint: str = "") -> Any:
    """``torch.load(source, map_location="cpu", weights_only=True)`` of a file from elsewhere: never
    executes code from it, and never inflates it beyond its size (:func:`check_torch_archive`).

    Args:
        source: the file's bytes, or a seekable binary file positioned at its start.
        name: the file for messages.
        hint: what to do, appended when the file holds Python objects (e.g. "save the state dict alone").

    Raises:
        CheckpointError: the archive check, or one line saying why the load was refused
            (:func:`weights_only_refusal`).
    """
    import torch

    check_torch_archive(source, name)
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with _quiet_torch_load():
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a file we will not use
        reason = weights_only_refusal(e)
        if hint and reason.startswith("it holds a Python object"):
            reason += f"; {hint}"
        raise CheckpointError(f"{name} cannot be loaded as weights only: {reason}") from None
