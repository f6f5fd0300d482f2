"""One answered engine call, the same way for every dialect's route: limits, permission, metering.

The OpenAI, Cohere, text-embeddings-inference and Infinity routes differ only in how
they parse a body and write an answer; everything between is this one object: the
request limit, the body under its size limit, the key's model permission checked on the
exact version that answers, the token limit before anything is queued, the usage record
committed before the answer leaves, the answer handed to the middleware for metrics and
timing headers, and the `X-Model-Version` and rate-limit headers. So keys, limits, pins,
usage and metrics behave the same whichever dialect (and task: embed, rerank, classify)
a client speaks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from starlette.requests import Request

from keepwarm.api.auth import KeyChanged, check_model_allowed
from keepwarm.api.http import read_body, unless_disconnected
from keepwarm.api.limits import RateLimiter
from keepwarm.api.middleware import record_of
from keepwarm.api.responses import embeddings_headers, usage_event
from keepwarm.api.settings import ApiSettings
from keepwarm.api.store_access import StoreAccess
from keepwarm.catalog import ModelSpec
from keepwarm.engine import Answer, Embeddings, EmbedOptions, Engine, Inputs
from keepwarm.engine.types import Admission, Authorization
from keepwarm.errors import ModelNotFound
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
        """The request's body, after the key's request-per-minute limit (413 past the size limit)."""
        self.limiter.check_request(key)
        return await read_body(request, self.settings.max_body_bytes)

    async def answer(self, request: Request, key: ApiKey, model: str, call: Call[A]) -> A:
        """Run `call` for `model` under the key's permission and token limit, and meter its answer.

        A key not yet read for this request (`Auth.metered_caller`) is read in the usage
        transaction: a revoked key's answer is dropped (401), a changed key's call is run again.
        """
        admit = partial(self.limiter.check_tokens, key) if key.tpm is not None else None
        result = await unless_disconnected(request, call(self.authorizer(request, key, model), admit))
        record = record_of(request)
        check, record.key_check = record.key_check, None
        try:  # committed before the answer leaves
            await self.store.call(self.store.usage.record, usage_event(key.id, result), check)
        except KeyChanged as changed:  # its models or limits changed since it was last read
            record.key = changed.key
            self.limiter.check_request(changed.key)
            return await self.answer(request, changed.key, model, call)
        record.result = result
        return result

    async def embed(
        self, request: Request, key: ApiKey, model: str, inputs: Inputs, options: EmbedOptions
    ) -> Embeddings:
        """Embed with the version `model` resolves to, if `key` may use it; metered before it returns."""

        def call(authorize: Authorization, admit: Admission | None) -> Awaitable[Embeddings]:
            return self.engine.embed(model, inputs, options, admit=admit, authorize=authorize)

        return await self.answer(request, key, model, call)

    def authorizer(self, request: Request, key: ApiKey, model: str) -> Authorization:
        """The engine's check, on the exact version it then serves: may `key` use `model`?"""
        record = record_of(request)

        def authorize(spec: ModelSpec) -> None:
            check_model_allowed(key, model, spec.names)
            record.model = spec.name

        return authorize

    def headers(self, request: Request, result: Answer) -> dict[str, str]:
        """The model version that answered, and the rate-limit state of the key it was answered under."""
        key = record_of(request).key
        assert key is not None, "answered requests have a key"
        return embeddings_headers(result) | self.limiter.headers(key)

    def expected_version(self, request: Request) -> str | None:
        """The version the caller's index was built with, from the X-Expect-Model-Version header."""
        return request.headers.get("x-expect-model-version")

    def default_model(self, key: ApiKey, task: str) -> str:
        """For a request naming no model (TEI's dialect serves one per process): the first of `task`.

        The first current model in catalog order that does `task` and that the key may use,
        so a TEI client pointed at a server with several models reaches the same one each time.
        """
        for view in self.engine.catalog():
            if view.current and view.spec.task == task and key.may_use(view.spec.names):
                return view.spec.name
        raise ModelNotFound("(default)", [], f" (no {task} model this key may use)")
