"""Facts about the machine this process runs on, shared by the runtimes, the engine and the benchmarks."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPU cores this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
