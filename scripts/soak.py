#!/usr/bin/env python3
"""Soak test: a real keepwarm server under mixed traffic for a bounded time, then three verdicts.

Clients send valid requests, invalid ones (bad JSON, bad values, unknown model, wrong
key), oversized bodies, requests over a key's rate limit, and requests whose client
hangs up before the answer. Afterwards:

1. no response was a 5xx, neither one a client saw nor one the server counted (answers to
   clients that had already hung up included);
2. no usage was lost: the usage the admin route reports for each key equals the tokens
   its answered requests reported (the hang-up key is only bounded: an answer can be
   computed and metered just as its client leaves);
3. memory stayed flat: the server's RSS grew by at most --max-rss-growth-mb between the
   end of warm-up (--warm-up-answers valid answers: runtimes' memory pools grow with the
   number of shapes they have seen, then level off) and the end of the run. (The server's
   embedding cache is set to 1 MiB, so it fills and evicts during the run instead of
   growing towards its default 256 MiB.)

All traffic goes to 127.0.0.1, every loop is bounded in time, and the server is stopped
at the end. Exit status 0 when all checks pass. Run it on a scratch data directory:

    python scripts/soak.py --seconds 180 [--config models.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from keepwarm.bench.process import ServerFailed, ServerProcess

MODEL = "all-minilm-l6-v2"
WORDS = [
    "embedding",
    "vector",
    "service",
    "queue",
    "batch",
    "token",
    "model",
    "latency",
    "memory",
    "request",
    "answer",
    "server",
    "client",
    "error",
    "limit",
    "usage",
    "metric",
    "shutdown",
    "deadline",
    "cache",
    "index",
    "search",
    "query",
    "document",
]


@dataclass
class Tally:
    """What the clients saw; shared by all client threads."""

    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    tokens: Counter = field(default_factory=Counter)  # per key name, from answered requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, scenario: str, response: httpx.Response, key_name: str | None = None) -> None:
        with self.lock:
            self.statuses[(scenario, response.status_code)] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{scenario}: {response.status_code} {response.text[:200]}")
            elif response.status_code == 200 and key_name:
                self.tokens[key_name] += response.json()["usage"]["total_tokens"]


class Soak:
    def __init__(self, url: str, keys: dict[str, str], tally: Tally, seed: int) -> None:
        self.url = url
        self.keys = keys
        self.tally = tally
        self.random = random.Random(seed)

    def text(self, words: int) -> str:
        return " ".join(self.random.choice(WORDS) for _ in range(words))

    def post(self, client: httpx.Client, key: str | None, body: bytes | dict) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        if isinstance(body, dict):
            return client.post("/v1/embeddings", json=body, headers=headers)
        return client.post(
            "/v1/embeddings", content=body, headers={**headers, "content-type": "application/json"}
        )

    def valid(self, client: httpx.Client) -> None:
        inputs = [self.text(self.random.randint(1, 300)) for _ in range(self.random.randint(1, 16))]
        body = {
            "model": MODEL,
            "input": inputs,
            "encoding_format": self.random.choice(["float", "base64"]),
            "truncate": True,
        }
        if self.random.random() < 0.3:
            body["dimensions"] = self.random.randint(1, 384)
        self.tally.saw("valid", self.post(client, "soak", body), "soak")

    def invalid(self, client: httpx.Client) -> None:
        choice = self.random.randrange(6)
        bodies: list[tuple[str | None, bytes | dict]] = [
            ("soak", b'{"model": "all-minilm-l6-v2", "input": ["unterminated'),
            ("soak", {"model": MODEL, "input": ["ok", ""]}),
            ("soak", {"model": MODEL, "input": [[1, 2], "mixed"]}),
            ("soak", {"model": "no-such-model", "input": "x"}),
            ("soak", {"model": MODEL, "input": ["x"] * 2049}),
            (None, {"model": MODEL, "input": "no key"}),
        ]
        key, body = bodies[choice]
        self.tally.saw("invalid", self.post(client, key, body))

    def oversized(self, client: httpx.Client) -> None:
        body = {"model": MODEL, "input": [self.text(40)] * 4000}  # ~1.2 MB: over --max-body-mb 1
        self.tally.saw("oversized", self.post(client, "soak", body))

    def limited(self, client: httpx.Client) -> None:
        body = {"model": MODEL, "input": self.text(10)}
        self.tally.saw("limited", self.post(client, "limited", body), "limited")

    def hang_up(self, _: httpx.Client) -> None:
        body = json.dumps({"model": MODEL, "input": [self.text(100) for _ in range(32)]}).encode()
        host, port = self.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                "POST /v1/embeddings HTTP/1.1\r\nHost: soak\r\n"
                f"Authorization: Bearer {self.keys['hangup']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(self.random.uniform(0, 0.05))
        with self.tally.lock:
            self.tally.statuses[("hang_up", 0)] += 1

    def run(self, stop: threading.Event) -> None:
        """Each scenario once (so even a short run has them all), then a weighted random mix."""
        kinds = [self.valid, self.invalid, self.oversized, self.limited, self.hang_up]
        mix = (
            [self.valid] * 10
            + [self.invalid] * 4
            + [self.oversized]
            + [self.limited] * 2
            + [self.hang_up] * 2
        )
        self.random.shuffle(kinds)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not stop.is_set():
                try:
                    (kinds.pop() if kinds else self.random.choice(mix))(client)
                except httpx.TransportError as exc:
                    with self.tally.lock:
                        self.tally.server_errors.append(f"transport error: {exc!r}")


def keepwarm(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "keepwarm", *args], check=True, capture_output=True, text=True
    ).stdout


def server_errors_counted(url: str) -> dict[str, float]:
    """The server's own count of 5xx answers (keepwarm_requests_total), by status."""
    counted: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("keepwarm_requests_total{") and 'status="5' in line:
            status = line.split('status="')[1][:3]
            counted[status] = counted.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counted


def start_server(data_dir: Path, extra: list[str]) -> ServerProcess:
    """The server under test: small body limit and cache, so both are exercised; its log in `data_dir`."""
    server = ServerProcess(
        data_dir,
        ("--max-body-mb", "1", "--cache-mb", "1", "--log-level", "warning", *extra),
        log_dir=data_dir,
    )
    try:
        server.start()
    except ServerFailed as exc:
        raise SystemExit(f"server did not become ready: {exc}") from None
    return server


def warm_up(url: str, key: str) -> None:
    """Run the largest model-call shape (32 distinct rows of 256 tokens) once: the runtime's memory
    arena grows to its working size here, not during the measured run."""
    body = {"model": MODEL, "input": [f"{n} " + " ".join(WORDS) * 20 for n in range(32)], "truncate": True}
    response = httpx.post(
        f"{url}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300
    )
    response.raise_for_status()


def soak(
    data_dir: Path,
    seconds: float,
    clients: int,
    max_growth_mb: float,
    seed: int,
    extra: list[str],
    warm_up_answers: int,
) -> dict:
    run = f"soak-{int(time.time())}"  # key names are unique per run, so a data directory can be reused
    names = {"soak": [], "limited": ["--rpm", "120"], "hangup": [], "admin": ["--admin"]}
    keys = {
        name: keepwarm(
            "keys", "create", "--name", f"{run}-{name}", *flags, "--data-dir", str(data_dir)
        ).strip()
        for name, flags in names.items()
    }
    server = start_server(data_dir, extra)
    url = server.url

    def rss_mb() -> float:
        return server.memory_mb()["rss_mb"]

    warm_up(url, keys["hangup"])  # its usage is not compared exactly
    served = httpx.get(f"{url}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {keys['soak']}"}).json()
    counted_before = server_errors_counted(url)  # /ready said 503 while the model loaded
    tally = Tally()
    stop = threading.Event()
    workers = [
        threading.Thread(target=Soak(url, keys, tally, seed + n).run, args=(stop,)) for n in range(clients)
    ]
    started = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        # warm-up: arenas, kernel caches and thread pools grow with the shapes the runtime has
        # seen, so it lasts a number of answers (the same on a fast or a slow machine), not a time
        while tally.statuses[("valid", 200)] < warm_up_answers and time.monotonic() < started + 600:
            time.sleep(0.2)
        warmed_up = time.monotonic()
        baseline = rss_mb()
        samples = [baseline]
        while time.monotonic() < warmed_up + seconds:
            time.sleep(min(1.0, max(0.0, warmed_up + seconds - time.monotonic())))
            samples.append(rss_mb())
        stop.set()
        for worker in workers:
            worker.join(timeout=180)
        final = rss_mb()
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        metered = {
            name: httpx.get(f"{url}/admin/usage", params={"key": f"{run}-{name}"}, headers=admin).json()[
                "total"
            ]
            for name in ("soak", "limited", "hangup")
        }
        server_5xx = {
            status: n - counted_before.get(status, 0)
            for status, n in server_errors_counted(url).items()
            if n > counted_before.get(status, 0)
        }
    finally:
        stop.set()
        exit_code = server.stop(timeout=120)
    answered = {name: tally.tokens[name] for name in ("soak", "limited")}
    checks = {
        "no_5xx": not tally.server_errors and not server_5xx,
        "no_lost_usage": all(metered[name]["tokens"] == answered[name] for name in answered),
        "flat_memory": final - baseline <= max_growth_mb,
        "clean_exit": exit_code == 0,
    }
    return {
        "seconds": round(time.monotonic() - started, 1),
        "warm_up_seconds": round(warmed_up - started, 1),
        "runtime": f"{served.get('runtime')} {served.get('dtype')}",
        "requests": sum(tally.statuses.values()),
        "statuses": {f"{scenario} {status}": n for (scenario, status), n in sorted(tally.statuses.items())},
        "server_errors": tally.server_errors[:20],
        "server_5xx_counted": server_5xx,
        "answered_tokens": answered,
        "metered": metered,
        "rss_mb": {
            "after_warm_up": round(baseline, 1),
            "peak": round(max(samples), 1),
            "final": round(final, 1),
            "every_10_s": [round(v, 1) for v in samples[::10]],
        },
        "checks": checks,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=180,
        help="how long to send traffic after warm-up, with memory measured (default 180)",
    )
    parser.add_argument(
        "--warm-up-answers",
        type=int,
        default=150,
        help="valid answers before memory is measured (default 150)",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument(
        "--max-rss-growth-mb", type=float, default=64, help="allowed RSS growth after warm-up"
    )
    parser.add_argument("--data-dir", type=Path, help="scratch data directory (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, help=f"model catalog for the server; it must serve '{MODEL}'")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="keepwarm-soak-"))
    extra = ["--config", str(args.config)] if args.config else []
    result = soak(
        data_dir, args.seconds, args.clients, args.max_rss_growth_mb, args.seed, extra, args.warm_up_answers
    )
    print(json.dumps(result, indent=2))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
