"""Safe file writing and checked file reading shared by the run directory's writers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from seqvae.errors import SeqVAEError


class StorageError(SeqVAEError):
    """A file could not be written: the disk is full, the folder is read-only or gone. The machine,
    not the input, is at fault, so the command exits with 1; the file it would have replaced is
    kept whole (every writer here goes through a temporary file)."""

    exit_code = 1


def cannot_write(path: str | Path, error: OSError, kept: str = "nothing was replaced") -> StorageError:
    """The one-line error for ``error`` met while writing ``path``: the file, the reason, what is kept."""
    reason = error.strerror or str(error)
    folder = Path(path).parent
    if isinstance(error, FileNotFoundError) and not folder.is_dir():
        reason = f"its folder {folder} does not exist"
    return StorageError(f"{path}: could not write it ({reason}); {kept}")


class _Recorded:
    """A binary handle that keeps the first OSError one of its writes met: a writer such as
    torch.save may report a failed write as an error of its own (a RuntimeError), and the error the
    user needs is the operating system's (disk full, file too large)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``, so a reader
    (or a crash half-way) never leaves half a file behind."""
    atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(handle)`` into a temporary file in the same folder, then rename it over ``path``:
    for writers that stream (a checkpoint), so the file's bytes are never held in memory at once.
    A write the system refuses (disk full, read-only folder) raises :class:`StorageError` naming
    ``path``, with the temporary file removed and ``path`` as it was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    handle = None
    try:
        with open(temporary, "wb") as raw:
            handle = _Recorded(raw)
            write(handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise cannot_write(path, error) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        if handle is not None and handle.error is not None:
            raise cannot_write(path, handle.error) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def read_utf8_text(path: str | Path, *, what: str = "file") -> str:
    """The whole text of a file (``-``: standard input; a pipe such as a shell's process
    substitution works too), without a leading byte-order mark, or a one-line
    :class:`SeqVAEError` naming it when it is missing, a folder, or not UTF-8 text."""
    if str(path) == "-":
        import sys

        data, path = sys.stdin.buffer.read(), Path("<stdin>")
    else:
        path = Path(path)
        if not path.exists():
            raise SeqVAEError(f"{path}: {what} not found")
        if path.is_dir():
            raise SeqVAEError(f"{path}: {what} is a folder, not a file")
        data = path.read_bytes()
    if b"\x00" in data:
        raise SeqVAEError(f"{path}: not UTF-8 text (it contains NUL bytes; is it a binary file?)")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise SeqVAEError(f"{path}: not UTF-8 text (invalid byte at line {line})") from None
