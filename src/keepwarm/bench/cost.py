"""What the measured throughput costs, beside OpenAI's price for the same tokens.

A self-hosted machine costs its hourly price whether it is busy or not, so its price
per token depends on how much of its capacity is used. At full use a million tokens
cost `price_per_hour / (tokens_per_second × 3600) × 10⁶`; at utilisation u they cost
1/u times that. Self-hosting breaks even with a per-token API at the utilisation where
both prices meet; above 100 % it never does.
"""

from __future__ import annotations

from typing import Any

# USD per million tokens for text-embedding-3-small (OpenAI's price list).
OPENAI_PRICES = {"text-embedding-3-small": 0.02, "text-embedding-3-small (batch API)": 0.01}


def dollars_per_million_tokens(price_per_hour: float, tokens_per_second: float) -> float:
    """Cost of a million tokens with the machine fully used."""
    return price_per_hour / (tokens_per_second * 3600) * 1_000_000


def cost_report(price_per_hour: float, tokens_per_second: float) -> dict[str, Any]:
    """Our price per million tokens at full use, and the break-even utilisation per OpenAI offer."""
    ours = dollars_per_million_tokens(price_per_hour, tokens_per_second)
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
