"""Per-key rate limits: requests and tokens per minute, as token buckets.

Each limited key has one bucket per limit, holding up to a minute's allowance and
refilling continuously, so a key can burst up to its limit and then proceeds at its
steady rate. Responses carry OpenAI's `x-ratelimit-*` headers; a refusal is a 429
`rate_limit_exceeded` with `Retry-After`.

Where buckets live: in this process's memory by default (one server; nothing to wait
for), or with `shared` buckets in the database (store/buckets.py), so that replicas on
one database enforce one limit together. A shared take is a short transaction on the
calling thread; the headers of a response come from the level that take saw, without
another round trip.

Background work (batch lines) draws on the same token bucket at a lower priority: it
never takes the bucket below a reserve kept for the key's online calls, and instead of
a refusal it learns how long to wait (`take_background`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from keepwarm.errors import RateLimited
from keepwarm.store import ApiKey
from keepwarm.store.buckets import BucketRow, BucketStore


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        # a shared bucket may have been updated by a replica whose clock runs a little ahead
        self.level = min(self.capacity, self.level + max(0.0, now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` is available (0 if it is now)."""
        return max(0.0, (amount - self.level) / self.rate)

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.rate


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


_UNITS = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


class RateLimiter:
    """Token buckets for every key that has limits; thread-safe. See the module docs for `shared`."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, shared: BucketStore | None = None
    ) -> None:
        self._clock = time.time if shared is not None else clock
        self._shared = shared
        self._buckets: dict[tuple[int, str], _Bucket] = {}  # the buckets, or (shared) the last ones taken
        self._lock = threading.RLock()  # a refusal builds its headers while holding it

    def check_request(self, key: ApiKey) -> None:
        """Count one request against the key's RPM, or raise RateLimited."""
        self._take(key, "requests", key.rpm, 1)

    def check_tokens(self, key: ApiKey, tokens: int) -> None:
        """Count a request's tokens against the key's TPM, or raise RateLimited."""
        self._take(key, "tokens", key.tpm, tokens)

    def take_background(self, key: ApiKey, tokens: int, reserve: float) -> float:
        """Spend `tokens` of the key's TPM for background work, leaving `reserve` (a share of the limit).

        Returns 0 once taken, or else the seconds until it would fit (nothing is taken).
        A request larger than the limit minus the reserve fits only into a full bucket; one
        larger than the whole limit is refused as online (RateLimited, waiting will not help).
        """
        limit = key.tpm
        if limit is None:
            return 0.0
        with self._bucket(key.id, "tokens", limit) as (bucket, now):
            if tokens > limit:
                raise self._too_large(key, "tokens", limit, tokens, now)
            wait = bucket.wait_for(tokens + min(reserve * limit, limit - tokens))
            if wait == 0:
                bucket.level -= tokens
            return wait

    def headers(self, key: ApiKey) -> dict[str, str]:
        """The `x-ratelimit-*` headers for the key's limits (none for an unlimited key)."""
        return self._headers(key, self._clock())

    def _take(self, key: ApiKey, kind: str, limit: int | None, amount: int) -> None:
        if limit is None:
            return
        with self._bucket(key.id, kind, limit) as (bucket, now):
            if amount > limit:
                raise self._too_large(key, kind, limit, amount, now)
            wait = bucket.wait_for(amount)
            if wait > 0:
                used = limit - math.floor(bucket.level)
                raise RateLimited(
                    f"Rate limit reached for key '{key.name}' on {_UNITS[kind]}: Limit {limit}, Used {used}, "
                    f"Requested {amount}. Please try again in {format_duration(wait)}.",
                    limit=kind,
                    retry_after=wait,
                    headers=self._headers(key, now),
                )
            bucket.level -= amount

    def _too_large(self, key: ApiKey, kind: str, limit: int, amount: int, now: float) -> RateLimited:
        return RateLimited(
            f"Request too large for key '{key.name}' on {_UNITS[kind]}: Limit {limit}, "
            f"Requested {amount}. Send fewer {kind} per request; waiting will not help.",
            limit=kind,
            retry_after=None,
            headers=self._headers(key, now),
        )

    @contextlib.contextmanager
    def _bucket(self, key_id: int, kind: str, limit: int) -> Iterator[tuple[_Bucket, float]]:
        """The key's bucket, refilled to now, held for one change; and the time now."""
        if self._shared is None:
            with self._lock:
                now = self._clock()
                yield self._local(key_id, kind, limit, now), now
            return
        now = self._clock()
        with self._shared.locked(key_id, kind, BucketRow(limit, limit, now)) as row:
            bucket = _Bucket(row.capacity, row.level, row.updated)
            _refill(bucket, limit, now)
            with self._lock:
                self._buckets[(key_id, kind)] = bucket  # what this process's headers show
            try:
                yield bucket, now
            finally:
                row.capacity, row.level, row.updated = bucket.capacity, bucket.level, bucket.updated

    def _local(self, key_id: int, kind: str, limit: int, now: float) -> _Bucket:
        """This process's own bucket, refilled to `now`."""
        bucket = self._buckets.get((key_id, kind))
        if bucket is None:
            bucket = self._buckets[(key_id, kind)] = _Bucket(float(limit), float(limit), now)
        _refill(bucket, limit, now)
        return bucket

    def _headers(self, key: ApiKey, now: float) -> dict[str, str]:
        result: dict[str, str] = {}
        for kind, limit in (("requests", key.rpm), ("tokens", key.tpm)):
            if limit is not None:
                with self._lock:
                    seen = self._buckets.get((key.id, kind))
                bucket = replace(seen) if seen else _Bucket(float(limit), float(limit), now)
                _refill(bucket, limit, now)  # a copy: reading never changes a bucket
                result[f"x-ratelimit-limit-{kind}"] = str(limit)
                result[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
                result[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.reset_seconds())
        return result


def _refill(bucket: _Bucket, limit: int, now: float) -> None:
    # a limit changed while the server runs applies from the bucket's last change: it refills at
    # the new rate, and a lowered limit caps what is left (refill never exceeds the capacity)
    bucket.capacity = float(limit)
    bucket.refill(now)
