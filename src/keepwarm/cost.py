"""What embedding work costs: one price model and one formula for every report.

Usage reports, batch jobs, `keepwarm reembed` and `keepwarm bench` all price work as
`tokens × per-million price + machine seconds × hourly price`, so the same work costs
the same dollars wherever it is reported.

A self-hosted machine costs its hourly price whether it is busy or not, so its price
per token depends on how much of its capacity is used: at full use a million tokens
take `10⁶ / tokens_per_second` seconds, at utilisation u 1/u times that. Self-hosting
breaks even with a per-token API at the utilisation where both prices meet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# USD per million tokens for text-embedding-3-small (OpenAI's price list).
OPENAI_PRICES = {"text-embedding-3-small": 0.02, "text-embedding-3-small (batch API)": 0.01}


@dataclass(frozen=True)
class Pricing:
    """What work costs: per million tokens, per hour of machine time, or both (summed).

    For online usage the seconds are each model call's time split across its inputs by
    their tokens, so a key pays for the share of the machine its requests used.
    """

    per_million_tokens: float = 0.0
    per_hour: float = 0.0

    def cost(self, tokens: int, seconds: float) -> float:
        """Dollars for `tokens` embedded in `seconds` of machine time."""
        return tokens / 1e6 * self.per_million_tokens + seconds / 3600 * self.per_hour


def job_cost(tokens: int, seconds: float, pricing: Pricing) -> dict[str, Any]:
    """Tokens embedded, seconds spent, tokens/s, the prices and the dollars they come to."""
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        "pricing": asdict(pricing),
        "dollars": round(pricing.cost(tokens, seconds), 6),
    }


def cost_report(price_per_hour: float, tokens_per_second: float) -> dict[str, Any]:
    """Our price per million tokens at full use, and the break-even utilisation per OpenAI offer."""
    ours = Pricing(per_hour=price_per_hour).cost(1_000_000, 1_000_000 / tokens_per_second)
    return {
        "price_per_hour": price_per_hour,
        "tokens_per_s": round(tokens_per_second, 1),
        "usd_per_million_tokens": round(ours, 6),
        "openai": [
            {
                "offer": offer,
                "usd_per_million_tokens": price,
                "break_even_utilisation": round(ours / price, 4),
                "breaks_even": ours <= price,
            }
            for offer, price in OPENAI_PRICES.items()
        ],
    }
