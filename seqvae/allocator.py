"""Memory reuse for long CPU work: let the C allocator keep freed blocks instead of returning them.

glibc's malloc serves blocks of 128 KB and more with fresh ``mmap`` pages by default (raising
that threshold as it sees blocks freed) and hands memory at the top of its heap back to the system
once 128 KB of it is free. A loop that allocates and frees the same large tensors every step
(the logits of each chunk of the importance-weighted bound, the activations of each training
step) then faults every page in anew: on the PTB evaluation that was over a quarter of the CPU
time, spent in the kernel. :func:`keep_freed_memory` sets both thresholds once, so blocks up to
32 MB (the most glibc allows for the mmap threshold) come from the heap and freed memory stays
there for the next step. It does not raise the peak: memory kept is memory that was in use.

The ``seqvae`` command and the recipes call it at start; a Python user running long evaluations
can call it too. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
"""The largest mmap threshold glibc accepts (HEAP_MAX_SIZE / 2 on 64-bit systems)."""
TRIM_THRESHOLD = 1024 * 1024 * 1024
"""Free memory at the top of the heap kept before any is returned to the system."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds as the module docstring says; True when they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
