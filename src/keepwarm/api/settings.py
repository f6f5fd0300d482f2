"""What the HTTP layer listens on, enforces and reports: the settings `keepwarm serve` fills in.

Plain frozen dataclasses with no heavy imports, so the command line can read its
defaults from here (they are stated once, in these fields) without loading the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keepwarm.api.lifecycle import ShutdownSettings
from keepwarm.cost import Pricing


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold open, send and stall (see api/protocol.py).

    The defaults leave ordinary clients far from every limit: OpenAI's clients send
    under 1 KiB of headers and their whole request at once.
    """

    max_connections: int = 1000  # open at once; more are answered 503 and closed
    max_header_bytes: int = 32 * 1024  # request line and headers; 431 above
    # seconds from a connection's opening (or a later request's first byte) to the end of its headers
    header_timeout: float = 10.0
    body_timeout: float = 30.0  # longest pause while a body is arriving
    min_body_rate: int = 1024  # bytes/s a body must average once its first `body_timeout` seconds are over
    # idle seconds between two requests before the connection is closed: longer than clients'
    # own idle limits (httpx 5 s, aiohttp 15 s) and load balancers' (60 s), so the client closes
    # first and never writes a request into a connection the server is closing
    keep_alive_timeout: float = 75.0


@dataclass(frozen=True)
class ApiSettings:
    """Where the HTTP API listens and what it enforces and reports around the engine."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 16 * 1024 * 1024
    # serve callers without a key while no active key exists (loopback, or --allow-unauthenticated)
    open_when_keyless: bool = True
    pricing: Pricing = field(default_factory=Pricing)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
