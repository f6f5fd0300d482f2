"""Running the service: uvicorn on the chosen address, models loading behind `/ready`.

The socket opens at once, so orchestrators can probe `/health` while models load; the
models load on a background thread and `/ready` turns 200 when all are warm. A model
that cannot load stops the process with the reason, rather than leaving a server that
can never become ready.

Stopping: the first SIGTERM or SIGINT starts draining (see api.lifecycle): /ready and
new requests get 503 while accepted requests finish, then the process exits with 0. If
the grace time runs out first, what is left is cancelled and the exit status is 1. A
second signal stops at once. keepwarm does not re-raise the signal the way plain
uvicorn does, so a clean stop is a plain exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from keepwarm.api import ApiSettings, create_app
from keepwarm.api.lifecycle import Lifecycle
from keepwarm.batches import BatchService, BatchSettings
from keepwarm.dashboard import DashboardServices, dashboard_router
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError
from keepwarm.store import Database

log = logging.getLogger("keepwarm")


class _Loader:
    """Loads the engine's models on a thread; asks the server to exit if that fails."""

    def __init__(self, engine: Engine, server: uvicorn.Server, on_ready: Callable[[], None]) -> None:
        self.engine = engine
        self.server = server
        self.on_ready = on_ready
        self.failed = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="keepwarm-loader", daemon=True).start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.engine.load()
        except Exception as exc:  # noqa: BLE001 - report any load failure and stop
            log.error("could not load models: %s", exc, exc_info=not isinstance(exc, ConfigError))
            self.failed = True
            self.server.should_exit = True
            return
        names = ", ".join(m.spec.name for m in self.engine.models)
        log.info("ready in %.1fs: serving %s", time.perf_counter() - started, names)
        self.on_ready()


class _DrainingServer(uvicorn.Server):
    """uvicorn, but a stop signal drains the app first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.cut_off = 0  # requests still running when the grace time ran out
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # runs as a signal handler: only set flags here (no logging, no locks)
        if self.lifecycle.draining:
            self.should_exit = self.force_exit = True
        else:
            self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if not self.lifecycle.draining:
            return False
        now = time.monotonic()
        if not self._announced:
            self._announced = True
            log.info(
                "stop requested: draining (%d request(s) in flight, grace %.0fs)",
                self.lifecycle.in_flight, self.lifecycle.settings.grace_seconds,
            )
        if not self.lifecycle.may_exit(now):
            return False
        self.cut_off = self.lifecycle.in_flight
        if self.cut_off:
            log.warning("grace time over: cancelling %d request(s) still in flight", self.cut_off)
        self.config.timeout_graceful_shutdown = max(1, int(self.lifecycle.grace_left(now)))
        return True


def _reload_logged(reload: Callable[[], None]) -> None:
    try:
        reload()
    except Exception as exc:  # noqa: BLE001 - a bad new catalog must not take the server down
        log.error("catalog reload refused, the old catalog keeps serving: %s", exc)


def serve(
    engine: Engine,
    db: Database,
    host: str,
    port: int,
    api: ApiSettings | None = None,
    batch: BatchSettings | None = None,
    reload: Callable[[], None] | None = None,
) -> int:
    """Serve until stopped; return the process exit code. SIGHUP calls `reload`."""
    batches = BatchService(engine, batch)
    app = create_app(engine, db, api, batches)
    app.state.reload = reload
    api = api or ApiSettings()
    app.include_router(dashboard_router(DashboardServices(
        engine, app.state.store, api.pricing, api.open_when_keyless, batches, reload
    )))
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = _DrainingServer(config, app.state.lifecycle)
    loader = _Loader(engine, server, on_ready=batches.start)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info("keepwarm listening on http://%s:%d; loading %d model(s)", host, port, len(engine.specs))
        if reload is not None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload_logged, reload))
        loader.start()
        yield
        batches.stop()
        engine.close()
        app.state.store.close()

    app.router.lifespan_context = lifespan
    server.run()
    return 1 if loader.failed or not server.started or server.cut_off else 0
