"""How many CPU threads torch uses (``run.threads``, ``--threads``).

torch starts one thread per core. When other work already keeps cores busy, those threads fight
it for the same cores: on this project's 2-core machine, with one other single-threaded training
running, a small model trained at 43 steps/s with 2 threads and at 138 steps/s with 1. So the
automatic choice (0) takes the CPUs this process may use, less those other work keeps busy at
the moment it starts (the non-idle share of CPU time over a tenth of a second), and at least one.

The thread count can change results in the last bits (the quickstart's first validation KL is
14.413 with 2 threads and 14.410 with 1), so a training records the count it used in its saved
config (``run.threads``), a resumed run keeps it, and the commands that read a run use it too
unless told otherwise: a run repeats exactly whatever the load.
"""

from __future__ import annotations

import os
import time

import torch


def busy_cpus(interval: float = 0.1) -> float:
    """How many CPUs other work keeps busy right now: the non-idle share of all CPUs' time over
    ``interval`` seconds (Linux /proc/stat), times the CPU count; elsewhere the 1-minute load
    average. Sampled now, not averaged over the last minute, so that the install or the training
    that just ended does not count."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total_before, idle_before = sample()
        time.sleep(interval)
        total_after, idle_after = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    total = total_after - total_before
    return (1.0 - (idle_after - idle_before) / total) * (os.cpu_count() or 1) if total > 0 else 0.0


def automatic_choice() -> tuple[int, str]:
    """The CPUs this process may use less those other work keeps busy, at least 1, at most
    torch's own default (one per physical core); with the reason, for a user to read."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cpus()
    count = max(1, min(DEFAULT, cpus - int(busy + 0.5)))
    return count, f"{cpus} CPUs for this process, {busy:.1f} kept busy by other work when it started"


def automatic_threads() -> int:
    """:func:`automatic_choice`'s count."""
    return automatic_choice()[0]


DEFAULT = torch.get_num_threads()
"""torch's own choice when seqvae was imported."""


def use_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads: ``requested``, or the automatic choice for 0; returns it."""
    count = requested if requested > 0 else automatic_threads()
    torch.set_num_threads(count)
    return count
