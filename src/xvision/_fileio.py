"""Atomic writes, content hashing and folder locks shared by every stage."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def csv_float(value: float) -> str:
    """A probability as CSV text that reads back as the same float64 (Python's shortest round-trip form).

    Six decimals rounded a saturated head's 0.9999996 to 1.000000, so decisions at a threshold could not be
    recomputed from the file, and scores the model told apart were tied in it. The shortest float32 text
    (``0.99999994``) is not enough either: read as float64 it falls just below the float32 value it stands
    for, and so below a threshold equal to it.
    """
    return repr(float(value))


def stable_safetensors(payload: bytes) -> bytes:
    """The bytes of a serialised safetensors file with its metadata in sorted order.

    safetensors writes its ``__metadata__`` map in a random order (a Rust hash map), so the same tensors and
    metadata gave other bytes on every save: two identical trainings' ``model.safetensors`` had different
    SHA-256s. The tensors' entries and data are already in a fixed order and are kept as they are.
    """
    import struct

    (length,) = struct.unpack("<Q", payload[:8])
    header = json.loads(payload[8 : 8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format aligns the data that follows on 8 bytes
    return struct.pack("<Q", len(text)) + text + payload[8 + length :]


def not_regular(path: str | Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder ("a named pipe", "a device"...), else None
    (a missing path too: opening it says so). Opening a named pipe blocks until someone writes to it, and a device
    such as /dev/zero never ends: a folder or manifest received from someone else may hold either."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or other special file"


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes, read in chunks.

    Raises:
        OSError: The file cannot be read, or is no regular file (:func:`not_regular`).
    """
    kind = not_regular(path)
    if kind:
        raise OSError(errno.EINVAL, f"not a regular file but {kind}", str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    A reader never sees a half-written file: either the old content or the new one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # At most 150 bytes of the name: with the dot, random part and suffix, a valid 250-byte name (or 244 bytes
        # of 結節) made a temporary name over the file system's 255 bytes.
        stem = os.fsencode(path.name)[:150].decode("utf-8", "ignore")
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=path.parent)
    except OSError as error:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:  # mkdir says only "File exists", naming the file the caller asked for
            message = f"{blocking} is a file, not a folder; cannot write"
            raise NotADirectoryError(errno.ENOTDIR, message, str(path)) from None
        raise _naming(error, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as error:
        if error.filename not in (None, tmp, str(tmp_path)):
            raise
        # The hidden .part name would only puzzle the user, and a failed write() (a full disk) names no file.
        raise _naming(error, path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """The same error about the file the caller asked for."""
    return type(error)(error.errno, error.strerror, str(path))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically, indented and with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def exclusive_lock(path: str | Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block.

    Another process that asks for the same lock logs ``waiting`` once and waits for it. The lock is
    ``flock``'s: the system releases it when its holder exits or is killed, so no stale lock is ever left to
    delete by hand. Where there is no ``flock`` (Windows) or the filesystem refuses it, the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:  # e.g. a network filesystem without locks
            log.debug("%s: not locked (%s)", path, error)
        yield


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (links and ``..`` resolved) lies in ``folder`` or below it."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())
