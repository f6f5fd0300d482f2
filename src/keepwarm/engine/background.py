"""Workers for background work (Batch API jobs, re-embedding) that the OS pre-empts for online work.

Waiting for a running background model call would cost an online request up to a whole
call's time (seconds, for a large call on a small CPU), so background work does not
share the online worker. It runs on its own threads, one per core, each with a
single-threaded copy of the model's runtime (which computes on the calling thread)
and each at the lowest CPU priority (nice 19). When online work arrives, the kernel gives its
threads the cores at once; when there is none, background work has every core. No
work is wasted and nothing has to be interrupted. The workers (and their sessions)
are only created when the first background work arrives.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from keepwarm.engine.scheduler import Scheduler
from keepwarm.engine.work import BACKGROUND
from keepwarm.engine.worker import CallObserver, ModelWorker
from keepwarm.machine import available_cores
from keepwarm.runtimes.base import Runtime

log = logging.getLogger(__name__)

LOWEST_PRIORITY = 19


def lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to every normal thread (Linux: per-thread nice)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted: run at normal priority
        log.warning("could not lower the priority of background work: %s", exc)


class BackgroundWorkers:
    """Lazily started low-priority workers serving one model's background lane."""

    def __init__(
        self,
        name: str,
        make_runtime: Callable[[], Runtime],
        scheduler: Scheduler,
        pad_id: int,
        observe: CallObserver | None,
        count: int,
    ) -> None:
        self._name = name
        self._make_runtime = make_runtime
        self._scheduler = scheduler
        self._pad_id = pad_id
        self._observe = observe
        self._count = count
        self._workers: list[ModelWorker] = []
        self._lock = threading.Lock()

    @classmethod
    def for_runtime(
        cls, name: str, runtime: Runtime, scheduler: Scheduler, pad_id: int, observe: CallObserver | None
    ) -> BackgroundWorkers | None:
        """Workers for `runtime`'s model, or None when it cannot run single-threaded copies (torch, GPU)."""
        if not runtime.single_threaded_copies:
            return None
        return cls(name, runtime.single_threaded_copy, scheduler, pad_id, observe, available_cores())

    def start(self) -> None:
        """Start the workers if they are not running yet (cheap once they are)."""
        if self._workers:
            return
        with self._lock:
            if self._workers:
                return
            for number in range(self._count):
                worker = ModelWorker(
                    f"{self._name}-background-{number}",
                    self._make_runtime(),
                    self._scheduler,
                    self._pad_id,
                    self._observe,
                    priorities=(BACKGROUND,),
                    on_start=lower_thread_priority,
                )
                worker.start()
                self._workers.append(worker)
            log.info(
                "model '%s': %d background worker(s) at low CPU priority", self._name, len(self._workers)
            )

    def join(self, timeout: float) -> None:
        for worker in self._workers:
            worker.join(timeout)
