"""One training at a time per run directory.

A run directory is locked by an advisory ``flock`` on a small file beside it (``.NAME.lock`` in
the same parent folder, so that replacing the run directory cannot drop the lock). The operating
system releases the lock when its holder exits in any way, killed included, so a stale lock never
blocks; the file keeps the holder's process id for the message.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from seqvae.errors import SeqVAEError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None


def lock_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


def _holder(handle) -> str:
    """The process id written into a lock file by its holder."""
    handle.seek(0)
    return handle.read().strip() or "another process"


@contextlib.contextmanager
def run_directory_lock(run_dir: str | Path):
    """Hold the lock of ``run_dir`` for the block, or raise a one-line SeqVAEError naming the
    process that holds it."""
    if fcntl is None:
        yield
        return
    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:  # a read-only folder: no training can write there
        from seqvae.files import cannot_write

        raise cannot_write(path, error, kept="the run directory is untouched") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            raise SeqVAEError(
                f"{run_dir}: another training is writing this run directory (process {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock


def wait_until_unlocked(run_dir: str | Path, on_wait: Callable[[str], None] | None = None) -> bool:
    """Block while another process holds the lock of ``run_dir``; return whether it had to wait.

    ``on_wait`` is called once, with the holder's process id, before waiting. The lock is not
    kept: the caller takes it again (train() does), so a third process may still get there
    first, and is then refused as usual."""
    if fcntl is None:
        return False
    path = lock_path(run_dir)
    if not path.is_file():
        return False
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder(handle))
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            return True
