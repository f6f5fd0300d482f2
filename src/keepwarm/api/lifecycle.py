"""Serving, then draining: what a stop signal changes, and when the process may exit.

On SIGTERM (or Ctrl-C) the server keeps its socket open but turns away new work with
503 and reports not ready, so load balancers move on, while the requests it already
accepted finish. It exits as soon as none is left (after at least `drain_seconds`, the
time a load balancer needs to notice), and at the latest after `grace_seconds`, when
whatever is still running is cancelled.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ShutdownSettings:
    drain_seconds: float = 0.0
    grace_seconds: float = 30.0


class Lifecycle:
    """Counts requests in flight and decides when a draining server may stop (event loop only)."""

    def __init__(self, settings: ShutdownSettings | None = None) -> None:
        self.settings = settings or ShutdownSettings()
        self.in_flight = 0
        self.draining = False
        self._started = math.inf

    def begin_drain(self, now: float | None = None) -> None:
        """Stop taking new work (idempotent)."""
        if not self.draining:
            self.draining = True
            self._started = time.monotonic() if now is None else now

    def grace_left(self, now: float) -> float:
        return max(0.0, self._started + self.settings.grace_seconds - now)

    def may_exit(self, now: float) -> bool:
        """True once draining and either idle after the minimum drain time, or out of grace."""
        if not self.draining:
            return False
        idle = self.in_flight == 0 and now >= self._started + self.settings.drain_seconds
        return idle or self.grace_left(now) == 0
