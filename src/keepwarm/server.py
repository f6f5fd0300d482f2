"""Running the service: uvicorn on the chosen address, models loading behind `/ready`.

The socket opens at once, so orchestrators can probe `/health` while models load; the
models load on a background thread and `/ready` turns 200 when all are warm. A model
that cannot load stops the process with the reason, rather than leaving a server that
can never become ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable

import uvicorn
from fastapi import FastAPI

from keepwarm.api import ApiSettings, create_app
from keepwarm.batches import BatchService, BatchSettings
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError

log = logging.getLogger("keepwarm")


def configure_logging(level: str = "info") -> None:
    """Plain, timestamped log lines on stderr for keepwarm and uvicorn alike."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


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


def _reload_logged(reload: Callable[[], None]) -> None:
    try:
        reload()
    except Exception as exc:  # noqa: BLE001 - a bad new catalog must not take the server down
        log.error("catalog reload refused, the old catalog keeps serving: %s", exc)


def serve(
    engine: Engine,
    host: str,
    port: int,
    api: ApiSettings | None = None,
    batch: BatchSettings | None = None,
    reload: Callable[[], None] | None = None,
) -> int:
    """Serve until interrupted; return the process exit code. SIGHUP calls `reload`."""
    batches = BatchService(engine, batch)
    app = create_app(engine, api, batches)
    app.state.reload = reload
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
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

    app.router.lifespan_context = lifespan
    server.run()
    return 1 if loader.failed or not server.started else 0
