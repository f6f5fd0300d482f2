"""What embedding work cost: tokens, time, speed and dollars at a configured price.

Shared by batch jobs (reported on the batch object) and `keepwarm reembed`, so both
report cost in the same shape.
"""

from __future__ import annotations

from typing import Any


def job_cost(tokens: int, seconds: float, price_per_million_tokens: float) -> dict[str, Any]:
    """Tokens embedded, seconds spent, tokens/s, and dollars at `price_per_million_tokens`."""
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "price_per_million_tokens": price_per_million_tokens,
        "dollars": round(tokens / 1_000_000 * price_per_million_tokens, 6),
    }
