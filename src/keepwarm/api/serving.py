"""One answered engine call, the same way for every dialect's route: limits, permission, metering.

`/v1/embeddings` does these steps in api/app.py; the rerank and classify dialects share
this object instead of repeating them: the request limit, the body under its size limit,
the key's model permission checked on the exact version that answers, the token limit
before anything is queued, the usage record committed before the answer leaves, and the
answer handed to the middleware for metrics and timing headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from starlette.requests import Request

from keepwarm.api.auth import check_model_allowed
from keepwarm.api.http import read_body, unless_disconnected
from keepwarm.api.limits import RateLimiter
from keepwarm.api.middleware import record_of
from keepwarm.api.responses import embeddings_headers, usage_event
from keepwarm.api.settings import ApiSettings
from keepwarm.api.store_access import StoreAccess
from keepwarm.catalog import ModelSpec
from keepwarm.engine import Answer, Engine
from keepwarm.engine.types import Admission, Authorization
from keepwarm.errors import InvalidRequest
from keepwarm.store import ApiKey

A = TypeVar("A", bound=Answer)
Call = Callable[[Authorization, Admission | None], Awaitable[A]]  # (authorize, admit) -> the engine's answer


@dataclass(frozen=True)
class Serving:
    """The collaborators every answered call needs (see the module docs)."""

    engine: Engine
    store: StoreAccess
    limiter: RateLimiter
    settings: ApiSettings

    async def body(self, request: Request, key: ApiKey) -> bytes:
        """The request's body, after the key's request-per-minute limit."""
        self.limiter.check_request(key)
        return await read_body(request, self.settings.max_body_bytes)

    async def answer(self, request: Request, key: ApiKey, model: str, call: Call[A]) -> A:
        """Run `call` for `model` under the key's permission and token limit, and meter its answer."""
        record = record_of(request)

        def authorize(spec: ModelSpec) -> None:  # on the exact version the engine then serves
            check_model_allowed(key, model, spec.names)
            record.model = spec.name

        admit = partial(self.limiter.check_tokens, key) if key.tpm is not None else None
        result = await unless_disconnected(request, call(authorize, admit))
        await self.store.call(self.store.usage.record, usage_event(key.id, result))
        record.result = result
        return result

    def headers(self, result: Answer, key: ApiKey) -> dict[str, str]:
        """The model version that answered, and the key's rate-limit state."""
        return embeddings_headers(result) | self.limiter.headers(key)

    def only_model(self, key: ApiKey, task: str) -> str:
        """For a request naming no model (TEI's dialect): the one model of `task` the key may use."""
        names = [
            view.spec.name
            for view in self.engine.catalog()
            if view.current and view.spec.task == task and key.may_use(view.spec.names)
        ]
        if len(names) != 1:
            served = ", ".join(sorted(names)) or "none"
            raise InvalidRequest(
                f"This request names no model, and this server has {len(names)} {task} models for "
                f'this key ({served}); send "model" to choose one.',
                param="model",
            )
        return names[0]
