"""Batch lines spend their key's tokens per minute at background priority: they wait, never fail.

The engine tells an admission hook how many tokens a request holds before anything is
queued. For a batch line that hook asks the rate limiter for the tokens beyond the
reserve kept for the key's online calls (`RateLimiter.take_background`); when they are
not there yet, the line waits until the bucket has refilled enough and tries again.
Lines of keys with a TPM ask one at a time, in order, so a waiting line is the next to
be served and the others do not tokenize again and again while the budget is short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from keepwarm.api.limits import RateLimiter
from keepwarm.engine import Answer
from keepwarm.store import ApiKey

Admission = Callable[[int], None]
A = TypeVar("A", bound=Answer)  # embeddings, or a rerank line's scores


class _NotYet(Exception):
    """The key's budget does not hold the line's tokens yet (internal to this module)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class TokenBudget:
    """Admits batch lines against their key's TPM, leaving `reserve` of it to online calls."""

    def __init__(self, limiter: RateLimiter, reserve: float) -> None:
        self.limiter = limiter
        self.reserve = reserve
        self._turn = asyncio.Lock()

    def use_limiter(self, limiter: RateLimiter) -> None:
        """Draw from `limiter`'s buckets: the ones the key's online calls use."""
        self.limiter = limiter

    async def embed(
        self,
        key: ApiKey,
        embed: Callable[[Admission | None], Awaitable[A]],
        on_wait: Callable[[float], None],
    ) -> A:
        """`embed(admit)` once the key's budget holds its tokens; `on_wait(seconds)` before each wait."""
        if key.tpm is None:
            return await embed(None)
        async with self._turn:
            task = await self._admitted(key, embed, on_wait)
        return await task

    async def _admitted(
        self,
        key: ApiKey,
        embed: Callable[[Admission | None], Awaitable[A]],
        on_wait: Callable[[float], None],
    ) -> asyncio.Future[A]:
        """The running embed call, once it is past admission (its tokens are taken)."""
        while True:
            admitted = asyncio.get_running_loop().create_future()

            def admit(tokens: int, admitted: asyncio.Future = admitted) -> None:
                wait = self.limiter.take_background(key, tokens, self.reserve)
                if wait > 0:
                    raise _NotYet(wait)
                admitted.set_result(None)

            task = asyncio.ensure_future(embed(admit))
            try:
                await asyncio.wait({task, admitted}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if admitted.done():
                return task
            short = task.exception()
            if not isinstance(short, _NotYet):
                return task  # it failed before admission (a bad body, say): awaiting it raises that error
            on_wait(short.seconds)
            await asyncio.sleep(short.seconds)
