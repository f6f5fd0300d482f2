"""Running the service: uvicorn on the chosen address, models loading behind `/ready`.

The socket opens at once, so orchestrators can probe `/health` while models load; once
it is listening, the models load on a background thread and `/ready` turns 200 when all
are warm. A model that cannot load, or an address that cannot be bound, stops the
process with the reason (exit status 1), rather than leaving a server that can never
become ready.

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
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from types import FrameType

import uvicorn
from fastapi import FastAPI

from keepwarm.api.app import create_app
from keepwarm.api.auth import Auth
from keepwarm.api.lifecycle import Lifecycle
from keepwarm.api.limits import RateLimiter
from keepwarm.api.protocol import LimitedHttpProtocol
from keepwarm.api.settings import ApiSettings
from keepwarm.api.store_access import StoreAccess
from keepwarm.batches import BatchService, BatchSettings
from keepwarm.batches.routes import batch_router
from keepwarm.dashboard import DashboardServices, dashboard_router
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError
from keepwarm.store import Database
from keepwarm.store.buckets import BucketStore

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
            if self.server.should_exit:  # stopped while loading: the failure is the stop's doing
                log.info("stopped while loading models")
                return
            log.error("could not load models: %s", exc, exc_info=not isinstance(exc, ConfigError))
            self.failed = True
            self.server.should_exit = True
            return
        names = ", ".join(m.spec.name for m in self.engine.models)
        log.info("ready in %.1fs: serving %s", time.perf_counter() - started, names)
        self.on_ready()


class _DrainingServer(uvicorn.Server):
    """uvicorn, but a stop signal drains the app first (see the module docstring)."""

    def __init__(
        self, config: uvicorn.Config, lifecycle: Lifecycle, on_listening: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.on_listening = on_listening
        self.cut_off = 0  # requests still running when the grace time ran out
        self._announced = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # exits (SystemExit) if the address cannot be bound
        self.on_listening()

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
                self.lifecycle.in_flight,
                self.lifecycle.settings.grace_seconds,
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
    api: ApiSettings | None = None,
    batch: BatchSettings | None = None,
    reload: Callable[[], None] | None = None,
) -> int:
    """Serve until stopped; return the process exit code. SIGHUP and POST /admin/reload call `reload`.

    This is where the service is wired together: the HTTP layer's collaborators are built
    here and handed to `create_app`, with the Batch API's routes.
    """
    api = api or ApiSettings()
    store = StoreAccess(db)
    auth = Auth(store, open_when_keyless=api.open_when_keyless)
    limiter = RateLimiter(shared=BucketStore(db) if db.shared else None)
    lifecycle = Lifecycle(api.shutdown)
    batches = BatchService(engine, db, batch)
    app = create_app(
        engine,
        store=store,
        auth=auth,
        limiter=limiter,
        lifecycle=lifecycle,
        settings=api,
        reload=reload,
        routers=[
            batch_router(batches, auth, limiter),
            dashboard_router(
                DashboardServices(engine, store, api.pricing, api.open_when_keyless, batches, reload)
            ),
        ],
    )

    def listening() -> None:
        log.info(
            "keepwarm listening on http://%s:%d; loading %d model(s)", api.host, api.port, len(engine.specs)
        )
        loader.start()

    server = _DrainingServer(_uvicorn_config(app, api, engine), lifecycle, on_listening=listening)
    loader = _Loader(engine, server, on_ready=batches.start)
    engine.metrics.connections_open.set_function(lambda: len(server.server_state.connections))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if reload is not None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload_logged, reload))
        yield
        batches.stop()
        engine.close()
        store.close()

    app.router.lifespan_context = lifespan
    try:
        server.run()
    except SystemExit as stop:  # uvicorn gave up starting (the address is taken, ...) and logged why,
        return 1 if stop.code else 0  # or a stop signal came before uvicorn took over signals
    return 1 if loader.failed or not server.started or server.cut_off else 0


def _uvicorn_config(app: FastAPI, api: ApiSettings, engine: Engine) -> uvicorn.Config:
    """uvicorn on `api.host:api.port`, its connections held to `api.connections` (see api/protocol.py)."""
    limits = api.connections
    return uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        http=partial(LimitedHttpProtocol, limits=limits, metrics=engine.metrics),  # type: ignore[arg-type]
        ws="none",  # no WebSocket routes: an upgrade request is an ordinary request
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # uvicorn takes any number
        log_config=None,
        access_log=False,
        lifespan="on",
    )
