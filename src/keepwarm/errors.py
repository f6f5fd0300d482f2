"""Every error keepwarm reports, in one place.

Each exception carries what the HTTP layer needs to render OpenAI's error envelope
(status, type, param, code), so the engine and the catalog can raise them without
knowing anything about HTTP.
"""

from __future__ import annotations


class KeepwarmError(Exception):
    """Base class: an error with a client-facing message and an OpenAI error type."""

    status: int = 500
    type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.headers = headers or {}


class InvalidRequest(KeepwarmError):
    """The request is malformed or asks for something the model cannot do (400)."""

    status = 400
    type = "invalid_request_error"


class InputTooLong(InvalidRequest):
    """One input has more tokens than the model accepts and truncation was not asked for."""

    default_code = "context_length_exceeded"

    def __init__(self, index: int, tokens: int | None, limit: int) -> None:
        counted = f" ({tokens} tokens)" if tokens is not None else ""
        super().__init__(
            f"input[{index}] is longer{counted} than this model's maximum of {limit} tokens. "
            'Shorten it, or send "truncate": true to embed only its first tokens.',
            param=f"input[{index}]",
        )
        self.index = index
        self.limit = limit


class WrongTask(InvalidRequest):
    """A request for a task the model does not serve (embeddings from a reranker, or the reverse)."""

    default_code = "wrong_model_task"
    ENDPOINTS = {
        "embed": "POST /v1/embeddings",
        "rerank": "POST /v1/rerank (also /v2/rerank and /rerank)",
        "classify": "POST /v1/classify (also /predict)",
    }
    _KINDS = {"embed": "an embedding model", "rerank": "a reranker", "classify": "a classifier"}

    def __init__(self, model: str, serves: str, asked: str) -> None:
        super().__init__(
            f"The model '{model}' is {self._KINDS[serves]}, not {self._KINDS[asked]}: "
            f"send it to {self.ENDPOINTS[serves]}.",
            param="model",
        )


class ModelNotFound(KeepwarmError):
    """The requested model name is not served here (404)."""

    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, model: str, available: list[str], detail: str = "") -> None:
        names = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"The model '{model}' does not exist on this server{detail}. Available models: {names}.",
            param="model",
        )
        # kept, so the HTTP layer can name only the models the caller's key may use
        self.model = model
        self.available = available
        self.detail = detail


class InvalidApiKey(KeepwarmError):
    """No API key, or one that is unknown or revoked (401). The message never echoes the key."""

    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(KeepwarmError):
    """A valid key asked for something it may not do: another model, an admin route (403)."""

    status = 403
    type = "invalid_request_error"
    default_code = "permission_denied"


class NotFound(KeepwarmError):
    """A file, batch or other object the request names does not exist (404)."""

    status = 404
    type = "invalid_request_error"


class Conflict(KeepwarmError):
    """The object exists but its state does not allow this operation (409)."""

    status = 409
    type = "invalid_request_error"


class VersionConflict(KeepwarmError):
    """The model name now resolves to another version than the caller's index was built with (409)."""

    status = 409
    type = "invalid_request_error"
    default_code = "model_version_mismatch"


class RequestTimeout(KeepwarmError):
    """The request's head or body stopped arriving, or came in too slowly (408)."""

    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class HeadersTooLarge(KeepwarmError):
    """The request line and headers are over the configured size limit (431)."""

    status = 431
    type = "invalid_request_error"
    default_code = "headers_too_large"


class PayloadTooLarge(KeepwarmError):
    """The request body is over the configured size limit (413)."""

    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class Overloaded(KeepwarmError):
    """The model's queue is full; the client should retry after a pause (429)."""

    status = 429
    type = "rate_limit_error"
    default_code = "server_overloaded"


class RateLimited(KeepwarmError):
    """The caller's key used up its requests or tokens per minute (429).

    As OpenAI does, `type` names the limit that was hit ("requests" or "tokens").
    """

    status = 429
    default_code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, limit: str, retry_after: float | None, headers: dict[str, str]
    ) -> None:
        super().__init__(message, retry_after=retry_after, headers=headers)
        self.type = limit


class QuotaExceeded(KeepwarmError):
    """The caller's key holds as much as it may (stored bytes, open batches); waiting will not help (429).

    Unlike RateLimited, nothing refills with time: the key must delete files or let batches finish.
    """

    status = 429
    type = "invalid_request_error"


class NotReady(KeepwarmError):
    """The server is starting, stopping or the model failed in a retryable way (503)."""

    status = 503
    type = "server_error"
    default_code = "service_unavailable"


class DeadlineExceeded(NotReady):
    """A request waited in the queue past the server's deadline and was dropped uncomputed (503)."""

    default_code = "deadline_exceeded"

    def __init__(self, waited: float, limit: float, retry_after: float) -> None:
        super().__init__(
            f"This request waited {waited:.1f}s in the queue, longer than this server's limit of "
            f"{limit:g}s, so it was dropped without being computed. The server is busy; retry later.",
            retry_after=retry_after,
        )


class ConfigError(Exception):
    """A configuration or model directory problem found before the server starts."""
