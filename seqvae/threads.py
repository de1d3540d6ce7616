"""How many CPU threads torch uses (``run.threads``, ``--threads``).

torch starts one thread per core. When other work already keeps cores busy, those threads fight
it for the same cores: on this project's 2-core machine, with one other single-threaded training
running, a small model trained at 43 steps/s with 2 threads and at 138 steps/s with 1. So the
automatic choice (0) takes the CPUs this process may use, less the load already running (the
1-minute load average, rounded), and at least one.

The thread count can change results in the last bits (the quickstart's first validation KL is
14.413 with 2 threads and 14.410 with 1), so a training records the count it used in its saved
config (``run.threads``), a resumed run keeps it, and the commands that read a run use it too
unless told otherwise: a run repeats exactly whatever the load.
"""

from __future__ import annotations

import os

import torch


def automatic_threads() -> int:
    """The CPUs this process may use less the load already running, at least 1, at most torch's
    own default (one per physical core)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(DEFAULT, cpus - busy))


DEFAULT = torch.get_num_threads()
"""torch's own choice when seqvae was imported."""


def use_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads: ``requested``, or the automatic choice for 0; returns it."""
    count = requested if requested > 0 else automatic_threads()
    torch.set_num_threads(count)
    return count
