"""Safe file writing and checked file reading shared by the run directory's writers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from seqvae.errors import SeqVAEError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it over ``path``, so a reader
    (or a crash half-way) never leaves half a file behind."""
    atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(handle)`` into a temporary file in the same folder, then rename it over ``path``:
    for writers that stream (a checkpoint), so the file's bytes are never held in memory at once."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


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
