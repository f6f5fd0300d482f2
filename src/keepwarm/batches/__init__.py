"""OpenAI's Batch and Files APIs for `/v1/embeddings`: durable jobs at background priority, per API key.

Modules, by concern: `service` (what a request may do) over `files` and `records`
(the stores) and `tenancy` (ownership, quotas); `routes` (HTTP); the runner: `loop`
(its thread), `leader` (one runner per data directory), `validation`, `execution`
(with `budget`, the key's tokens per minute), `expiry`, `finalize`, `output`.

The names below load on first use, so the command line can read `TenantLimits`'
defaults without importing the HTTP stack that the service needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BatchService": "keepwarm.batches.service",
    "BatchSettings": "keepwarm.batches.service",
    "Limits": "keepwarm.batches.validation",
    "RunnerSettings": "keepwarm.batches.loop",
    "TenantLimits": "keepwarm.batches.tenancy",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keepwarm.batches' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
