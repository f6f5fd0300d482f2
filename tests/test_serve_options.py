"""`keepwarm serve` options and environment variables, each seen taking effect in a running server,
and one price giving the same dollars in every report.

One server carries every option here that does not interfere with the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from helpers import MODEL, RunningServer, keepwarm, metric, start_server, state_dir, wait_for
from helpers.batching import embedding_lines, submit, wait_finished
from helpers.texts import write_corpus

from keepwarm.cost import Pricing, cost_report, job_cost
from keepwarm.store import UsageRow, usage_report

PRICES = {"KEEPWARM_PRICE_PER_MILLION_TOKENS": "2.5", "KEEPWARM_PRICE_PER_HOUR": "3.6"}
PRICING = Pricing(per_million_tokens=2.5, per_hour=3.6)
ROUNDING = 1.5e-6  # dollars: what rounding seconds to milliseconds and dollars to six places can move
BATCH_ROWS, BATCH_TOKENS, PADDING_TOKENS = 7, 1000, 50


@pytest.fixture(scope="module")
def prices() -> Iterator[None]:
    """The price variables in this process's environment: commands and servers started here inherit them."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in PRICES.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def configured(server, data_dir, log_dir, tmp_path_factory, prices) -> Iterator[RunningServer]:  # noqa: ANN001
    own = state_dir(data_dir, tmp_path_factory.mktemp("options") / "data")
    running = start_server(
        own,
        log_dir,
        "--cache-mb",
        "0",
        "--queue-timeout",
        "0",
        "--max-batch-size",
        str(BATCH_ROWS),
        "--max-batch-tokens",
        str(BATCH_TOKENS),
        "--max-batch-padding-tokens",
        str(PADDING_TOKENS),
        holdable=True,
    )
    yield running
    running.stop()


def _embed(server: RunningServer, inputs: list[str]) -> httpx.Response:
    return httpx.post(f"{server.v1}/embeddings", json={"model": MODEL, "input": inputs}, timeout=120)


def test_max_batch_flags_reach_every_model(configured) -> None:  # noqa: ANN001
    [model] = httpx.get(f"{configured.v1}/models").json()["data"]
    assert (model["max_batch_tokens"], model["max_padding_tokens"]) == (BATCH_TOKENS, PADDING_TOKENS)
    assert model["max_batch_size"] == BATCH_ROWS
    assert model["token_multiple"] == 1  # both flags given: nothing measured, widths stay exact
    calls, rows = (
        metric(configured, "keepwarm_batch_rows_count"),
        metric(configured, "keepwarm_batch_rows_sum"),
    )
    texts = [f"text {letter}" for letter in "abcdefghijklmnopqrst"]  # 4 tokens each
    with ThreadPoolExecutor(20) as pool:
        with configured.holding():  # all twenty wait together, then are cut into model calls
            answers = [pool.submit(_embed, configured, [text]) for text in texts]
            assert wait_for(lambda: metric(configured, "keepwarm_queue_tokens") == 4 * 20)
        assert all(answer.result().status_code == 200 for answer in answers)
    assert metric(configured, "keepwarm_batch_rows_sum") - rows == 20
    assert metric(configured, "keepwarm_batch_rows_count") - calls == math.ceil(20 / BATCH_ROWS)


def test_queue_timeout_0_lets_a_request_wait_as_long_as_it_must(configured) -> None:  # noqa: ANN001
    """Held past any deadline a 0 could mean, the request is still computed."""
    with ThreadPoolExecutor(1) as pool:
        with configured.holding():
            answer = pool.submit(_embed, configured, ["waits while the model is held"])
            assert wait_for(lambda: metric(configured, "keepwarm_queue_tokens") > 0)
        assert answer.result().status_code == 200


def test_cache_mb_0_computes_a_repeated_input_again(configured) -> None:  # noqa: ANN001
    hits = metric(configured, 'keepwarm_cache_lookups_total{result="hit"}')
    first, again = (_embed(configured, ["asked twice, computed twice"]) for _ in range(2))
    assert first.status_code == again.status_code == 200
    assert again.json()["cache"] == {"cached_inputs": 0, "cached_tokens": 0}
    assert metric(configured, 'keepwarm_cache_lookups_total{result="hit"}') == hits


def test_price_variables_set_the_servers_prices(configured) -> None:  # noqa: ANN001
    report = httpx.get(f"{configured.url}/admin/usage").json()  # open: the server has no keys
    assert report["pricing"] == {"per_million_tokens": 2.5, "per_hour": 3.6}


def test_data_dir_variable_replaces_the_option(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("KEEPWARM_DATA_DIR", str(tmp_path / "from-env"))
    keepwarm("keys", "create", "--name", "found-by-env")
    listed = json.loads(keepwarm("keys", "list", "--json", "--data-dir", str(tmp_path / "from-env")).stdout)
    assert [key["name"] for key in listed] == ["found-by-env"]


def _dollars(tokens: int, seconds: float, pricing: Pricing) -> float:
    """What usage reports charge for this work."""
    row = UsageRow(
        day="2026-01-01",
        key_id=0,
        key_name="k",
        model=MODEL,
        version="v",
        requests=1,
        tokens=tokens,
        cache_hits=0,
        compute_seconds=seconds,
    )
    return usage_report([row], pricing)["data"][0]["cost"]


def test_the_same_work_costs_the_same_in_usage_batches_reembed_and_bench(configured, tmp_path) -> None:  # noqa: ANN001
    tokens, seconds = 1_234_567, 89.125
    usage = _dollars(tokens, seconds, PRICING)
    assert usage == job_cost(tokens, seconds, PRICING)["dollars"] == round(PRICING.cost(tokens, seconds), 6)
    # bench: the price per million tokens of a machine at full use, from its hourly price and speed
    speed = tokens / seconds
    bench = cost_report(PRICING.per_hour, speed)["usd_per_million_tokens"]
    assert bench == _dollars(1_000_000, 1_000_000 / speed, Pricing(per_hour=PRICING.per_hour))

    # a real batch, priced by the server from the variables it started with
    client = openai.OpenAI(base_url=configured.v1, api_key="unused", max_retries=0)
    batch = submit(client, embedding_lines(["the batch's first text", "and its second"]))
    assert wait_finished(client, batch.id).status == "completed"
    cost = httpx.get(f"{configured.v1}/batches/{batch.id}").json()["cost"]
    assert cost["pricing"] == {"per_million_tokens": 2.5, "per_hour": 3.6} and cost["seconds"] > 0
    # seconds are reported to the millisecond (±$0.0000005 at $3.60 an hour) and dollars to six places
    assert cost["dollars"] == pytest.approx(_dollars(cost["tokens"], cost["seconds"], PRICING), abs=ROUNDING)

    # reembed, priced from the same variables in its own environment
    corpus = write_corpus(tmp_path / "corpus.jsonl", ["reembed's first text", "and its second"])
    result = keepwarm(
        "reembed",
        str(corpus),
        str(tmp_path / "out"),
        "--model",
        MODEL,
        "--url",
        configured.v1,
        "--quiet",
        "--data-dir",
        str(tmp_path / "data"),
    )
    summary = json.loads(result.stdout)["cost"]
    assert summary["pricing"] == cost["pricing"] and summary["seconds"] > 0
    assert summary["dollars"] == pytest.approx(
        _dollars(summary["tokens"], summary["seconds"], PRICING), abs=ROUNDING
    )
