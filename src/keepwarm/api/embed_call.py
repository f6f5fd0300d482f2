"""One embed call as every dialect makes it: limits, permissions, the engine, metering, headers.

The OpenAI, Cohere, text-embeddings-inference and Infinity routes differ only in how
they parse a body and write an answer; everything between is this one path, so keys,
rate limits, model permissions, version pins, usage records, metrics and the
`X-Model-Version` header behave the same whichever dialect a client speaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from starlette.requests import Request

from keepwarm.api.auth import check_model_allowed
from keepwarm.api.http import read_body, unless_disconnected
from keepwarm.api.limits import RateLimiter
from keepwarm.api.middleware import record_of
from keepwarm.api.responses import embeddings_headers, usage_event
from keepwarm.api.settings import ApiSettings
from keepwarm.api.store_access import StoreAccess
from keepwarm.catalog import ModelSpec
from keepwarm.engine import Embeddings, EmbedOptions, Engine, Inputs
from keepwarm.engine.types import Authorization
from keepwarm.store import ApiKey


@dataclass(frozen=True)
class EmbedCall:
    """What an embed route needs from the server, and the steps every dialect shares."""

    engine: Engine
    store: StoreAccess
    limiter: RateLimiter
    settings: ApiSettings

    async def body(self, request: Request, key: ApiKey) -> bytes:
        """The request body, once the key's request rate allows it (413 past the size limit)."""
        self.limiter.check_request(key)
        return await read_body(request, self.settings.max_body_bytes)

    async def embed(
        self, request: Request, key: ApiKey, model: str, inputs: Inputs, options: EmbedOptions
    ) -> Embeddings:
        """Embed with the version `model` resolves to, if `key` may use it; metered before it returns."""
        admit = partial(self.limiter.check_tokens, key) if key.tpm is not None else None
        work = self.engine.embed(
            model, inputs, options, admit=admit, authorize=self.authorizer(request, key, model)
        )
        result = await unless_disconnected(request, work)
        await self.store.call(self.store.usage.record, usage_event(key.id, result))  # committed first
        record_of(request).result = result
        return result

    def authorizer(self, request: Request, key: ApiKey, model: str) -> Authorization:
        """The engine's check, on the exact version it then serves: may `key` use `model`?"""
        record = record_of(request)

        def authorize(spec: ModelSpec) -> None:
            check_model_allowed(key, model, spec.names)
            record.model = spec.name

        return authorize

    def headers(self, key: ApiKey, result: Embeddings) -> dict[str, str]:
        """The answer's headers: the version that made it and the key's rate-limit state."""
        return embeddings_headers(result) | self.limiter.headers(key)

    def expected_version(self, request: Request) -> str | None:
        """The version the caller's index was built with, from the X-Expect-Model-Version header."""
        return request.headers.get("x-expect-model-version")
