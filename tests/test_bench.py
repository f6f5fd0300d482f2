"""`keepwarm bench`: a tiny real run (server, load, baselines) reports sane figures.

Speeds are never asserted: only that every figure is there, consistent and plausible.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import MODEL, metric, start_server

from keepwarm.api.settings import ConnectionLimits
from keepwarm.bench import client
from keepwarm.bench.stats import Measurement, latency_summary
from keepwarm.cost import cost_report

TEXTS = [
    "What is the capital of France?",
    "def add(a, b):\n    return a + b",
    "Embeddings map text to vectors so that similar meanings land close together.",
    "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1;",
    "short",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Returns the number of items in a container; raises TypeError for objects without a length.",
    "A very long document that goes on and on. " * 60,  # over the model's limit: truncated
    "Résumé, naïve café — unicode survives the round trip.",
    "HTTP/1.1 keeps connections alive between requests, which a load generator relies on.",
    "import numpy as np\nx = np.zeros((3, 4))\nprint(x.shape)",
    "Tokens per second is the figure that decides what an embedding service costs.",
]


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keepwarm", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(TEXTS)))
    return path


@pytest.fixture(scope="module")
def run(tiny_corpus: Path, data_dir: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess]:
    """One small run of every phase against a server that bench starts itself."""
    output = tiny_corpus.parent / "report.json"
    finished = _bench(
        "--corpus",
        str(tiny_corpus),
        "--data-dir",
        str(data_dir),
        "--texts",
        "0",
        "--clients",
        "2",
        "--texts-per-request",
        "3",
        "--burst",
        "3",
        "--burst-gap",
        "0.05",
        "--idle-requests",
        "3",
        "--server-arg=--max-batch-size=16",
        "--sentence-transformers",
        "--price-per-hour",
        "0.5",
        "--json",
        str(output),
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(output.read_text()), finished


def test_every_phase_embeds_the_whole_tiny_corpus(run) -> None:  # noqa: ANN001
    phases = run[0]["phases"]
    required = {"inprocess", "engine", "closed", "bursts", "single_call", "idle", "sentence_transformers"}
    # onnx_fp32: the ONNX Runtime fp32 reference, measured apart when the server runs another runtime
    assert required <= set(phases) <= required | {"onnx_fp32"}
    for name in ("inprocess", "engine", "closed", "bursts", "sentence_transformers"):
        assert phases[name]["texts"] == len(TEXTS), name
        assert phases[name]["texts_per_s"] > 0 and phases[name]["tokens_per_s"] > phases[name]["texts_per_s"]


def test_server_and_in_process_count_the_same_tokens(run) -> None:  # noqa: ANN001
    phases = run[0]["phases"]
    assert phases["closed"]["tokens"] == phases["bursts"]["tokens"] == phases["inprocess"]["tokens"]
    assert phases["engine"]["tokens"] == phases["inprocess"]["tokens"]
    assert phases["engine"]["calls"] == phases["closed"]["calls"]  # one answer per request, as the server's
    assert run[0]["server"]["call_limits"]["max_batch_size"] == 16  # the engine batches as the server
    assert phases["idle"]["tokens"] == phases["single_call"]["tokens"]


def test_server_computes_every_text_rather_than_answering_from_its_cache(run) -> None:  # noqa: ANN001
    phases = run[0]["phases"]  # bursts resend the closed loop's texts: a cache would answer them
    assert [phases[name]["cached_texts"] for name in ("closed", "bursts", "idle")] == [0, 0, 0]


def test_server_latencies_split_into_the_model_call_the_server_and_the_http_exchange(run) -> None:  # noqa: ANN001
    phases, ratios = run[0]["phases"], run[0]["ratios"]
    for name in ("closed", "bursts", "idle"):  # from the server's own timing headers, per request
        phase = phases[name]
        assert 0 < phase["server_inference_p50_ms"] <= phase["server_p50_ms"] < phase["p50_ms"], name
        assert 0 < phase["outside_server_p50_ms"] < phase["p50_ms"], name
    assert "server_p50_ms" not in phases["single_call"]  # in-process: no server to split off
    assert ratios["idle_server_p50_minus_single_call_ms"] == pytest.approx(
        phases["idle"]["server_p50_ms"] - phases["single_call"]["p50_ms"], abs=0.01
    )
    assert ratios["idle_server_p50_minus_single_call_ms"] < ratios["idle_p50_minus_single_call_ms"]


def test_answers_without_keepwarms_timing_headers_report_no_server_split() -> None:
    other_server = Measurement()  # e.g. a peer benchmarked with --url
    other_server.add(1, 5, 0.010)
    assert "server_p50_ms" not in other_server.summary()
    ours = Measurement()
    ours.add(1, 5, 0.010, (0.007, 0.004))
    split = ours.summary()
    assert (split["server_p50_ms"], split["server_inference_p50_ms"], split["outside_server_p50_ms"]) == (
        pytest.approx(7.0),
        pytest.approx(4.0),
        pytest.approx(3.0),
    )


def test_latency_percentiles_are_ordered_and_plausible(run) -> None:  # noqa: ANN001
    for name, phase in run[0]["phases"].items():
        assert 0 < phase["p50_ms"] <= phase["p95_ms"] <= phase["p99_ms"] < 60_000, name


def test_server_vectors_match_the_in_process_reference_and_sentence_transformers(run) -> None:  # noqa: ANN001
    accuracy = run[0]["accuracy"]
    assert accuracy["server_vs_onnx_fp32"]["rows"] == len(TEXTS)
    assert accuracy["server_vs_onnx_fp32"]["min"] >= 0.9999
    assert accuracy["server_vs_sentence_transformers"]["min"] >= 0.9999


def test_ratios_come_from_the_same_run(run) -> None:  # noqa: ANN001
    report = run[0]
    phases, ratios = report["phases"], report["ratios"]
    expected = phases["closed"]["texts_per_s"] / phases["inprocess"]["texts_per_s"]
    assert ratios["closed_vs_inprocess"] == pytest.approx(expected, rel=0.01)
    # the server's loss splits into the engine's (forming calls from a queue) and HTTP's
    assert ratios["engine_vs_inprocess"] * ratios["closed_vs_engine"] == pytest.approx(expected, rel=0.02)
    assert ratios["idle_p50_minus_single_call_ms"] == pytest.approx(
        phases["idle"]["p50_ms"] - phases["single_call"]["p50_ms"], abs=0.01
    )
    assert {t["target"] for t in report["targets"]} >= {"bursts ≥ 0.9 × steady closed loop"}


def test_client_and_server_cpu_are_reported_as_shares_of_the_machine(run) -> None:  # noqa: ANN001
    report = run[0]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    family = re.search(r"^cpu family\s*:\s*(\d+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    if family:  # x86: the generation, which a guest's brand-only model name hides
        assert f"family {family[1]} model " in report["machine"]["cpu_id"]
    for name in ("closed", "bursts", "idle"):
        assert 0 <= report["phases"][name]["client_cpu_share"] <= 1, name
        assert 0 <= report["phases"][name]["server_cpu_share"] <= 1.5, name
    # the idle phase is a few milliseconds of work, below the kernel's CPU-time resolution
    assert report["phases"]["closed"]["server_cpu_share"] > 0


def test_server_start_and_memory_are_reported(run) -> None:  # noqa: ANN001
    server = run[0]["server"]
    assert 0 < server["ready_seconds"] < 300
    assert 50 < server["rss_mb_after_ready"] <= server["peak_rss_mb"]
    assert 50 < server["rss_mb_once_idle"] <= server["peak_rss_mb"]
    assert server["args"] == ["--max-batch-size=16"]


def test_cost_is_priced_beside_openai(run) -> None:  # noqa: ANN001
    cost = run[0]["cost"]
    tokens_per_s = run[0]["phases"]["closed"]["tokens_per_s"]
    assert cost["usd_per_million_tokens"] == pytest.approx(0.5 / (tokens_per_s * 3600) * 1e6, rel=0.01)
    assert [offer["usd_per_million_tokens"] for offer in cost["openai"]] == [0.02, 0.01]


def test_terminal_shows_progress_and_tables(run) -> None:  # noqa: ANN001
    _, finished = run
    assert "server, 2 clients × 3 texts" in finished.stderr
    for title in ("throughput and latency", "ratio (same run)", "issue 7 targets", "cost at $0.5/hour"):
        assert title in finished.stdout


def test_break_even_utilisation_is_where_the_prices_meet() -> None:
    # 1000 tokens/s for $0.036/hour is $0.01 per million tokens at full use
    report = cost_report(0.036, 1000.0)
    assert report["usd_per_million_tokens"] == pytest.approx(0.01)
    by_offer = {offer["usd_per_million_tokens"]: offer for offer in report["openai"]}
    assert by_offer[0.02]["break_even_utilisation"] == pytest.approx(0.5) and by_offer[0.02]["breaks_even"]
    assert by_offer[0.01]["break_even_utilisation"] == pytest.approx(1.0) and by_offer[0.01]["breaks_even"]
    assert not cost_report(0.072, 1000.0)["openai"][1]["breaks_even"]


def test_existing_server_is_driven_by_url(server, tiny_corpus, data_dir, tmp_path) -> None:  # noqa: ANN001
    output = tmp_path / "idle.json"
    finished = _bench(
        "--url",
        server.url,
        "--corpus",
        str(tiny_corpus),
        "--data-dir",
        str(data_dir),
        "--mode",
        "idle",
        "--idle-requests",
        "3",
        "--json",
        str(output),
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(output.read_text())
    assert set(report["phases"]) == {"single_call", "idle"}
    assert report["server"]["url"] == server.url and report["server_runtime"]


def test_without_a_corpus_bench_measures_the_built_in_one(server, data_dir, tmp_path) -> None:  # noqa: ANN001
    output = tmp_path / "built-in.json"
    finished = _bench(
        "--url",
        server.url,
        "--data-dir",
        str(data_dir),
        "--texts",
        "8",
        "--mode",
        "closed",
        "--clients",
        "2",
        "--texts-per-request",
        "4",
        "--json",
        str(output),
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["corpus"]["texts"] == 8 and report["phases"]["closed"]["texts"] == 8
    assert (
        report["corpus"]["source"].startswith("built-in") and "standard library" in report["corpus"]["source"]
    )
    assert " ".join(report["corpus"]["source"].split()) in " ".join(
        finished.stdout.split()
    )  # the terminal names it


def test_corpus_line_without_text_is_refused_with_its_line_number(tmp_path) -> None:  # noqa: ANN001
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"title": "no text here"}\n')
    finished = _bench("--corpus", str(corpus), "--data-dir", str(tmp_path))
    assert finished.returncode == 2 and f"{corpus}:2" in finished.stderr and "'text'" in finished.stderr


def test_missing_corpus_file_is_a_usage_error(tmp_path) -> None:  # noqa: ANN001
    finished = _bench("--corpus", str(tmp_path / "none.jsonl"), "--data-dir", str(tmp_path))
    assert finished.returncode == 2 and "cannot read corpus" in finished.stderr


def test_latency_summary_reports_each_quantile_and_the_mean_in_ms() -> None:
    summary = latency_summary([0.001 * n for n in range(1, 101)], (50, 90, 99))
    assert summary["requests"] == 100
    assert summary["p50_ms"] == 50.5 and summary["p90_ms"] == 90.1 and summary["mean_ms"] == 50.5
    assert latency_summary([], (50,)) == {"requests": 0, "p50_ms": None, "mean_ms": None}


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweeps(
    tiny_dir: Path, tiny_corpus: Path, data_dir: Path, tmp_path_factory
) -> tuple[dict[str, Any], Path]:  # noqa: ANN001
    """`--plot` with two points per sweep on a tiny model (not the 8K model's: its export is slow)."""
    root = tmp_path_factory.mktemp("plots")
    config = root / "tiny.toml"
    config.write_text(f'[[models]]\nname = "tiny"\nsource = "{tiny_dir}"\nruntime = "onnx"\n')
    finished = _bench(
        "--plot",
        str(root / "png"),
        "--config",
        str(config),
        "--corpus",
        str(tiny_corpus),
        "--data-dir",
        str(data_dir),
        "--sweep-clients",
        "1,2",
        "--sweep-lengths",
        "16,4096",  # over the tiny model's 128: capped there
        "--sweep-batch-tokens",
        "256,4096",
        "--sweep-long-lengths",
        "",
        "--sweep-texts",
        "4",
        "--clients",
        "2",
        "--texts-per-request",
        "1",
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads((root / "png" / "sweeps.json").read_text()), root / "png"


def test_plot_writes_one_valid_png_per_sweep(sweeps) -> None:  # noqa: ANN001
    _, directory = sweeps
    names = {"clients.png", "text_length.png", "batch_tokens.png", "cost.png"}
    assert {path.name for path in directory.glob("*.png")} == names
    for name in names:
        assert (directory / name).read_bytes()[:8] == PNG_SIGNATURE, name


def test_every_sweep_point_measured_positive_throughput_and_latency(sweeps) -> None:  # noqa: ANN001
    found, _ = sweeps
    assert [p["clients"] for p in found["clients"]] == [1, 2]
    assert [p["text_tokens"] for p in found["lengths"]] == [16, 128]
    assert [p["max_batch_tokens"] for p in found["batch_tokens"]] == [256, 4096]
    points = [*found["clients"], *found["lengths"], *found["batch_tokens"]]
    for point in points:
        assert point["tokens_per_s"] > point["texts_per_s"] > 0 and 0 < point["p50_ms"] <= point["p95_ms"]


def test_length_sweep_sends_texts_of_the_requested_token_count(sweeps) -> None:  # noqa: ANN001
    found, _ = sweeps
    # decoded pieces of the corpus re-tokenize to about as many tokens (word pieces may merge)
    assert [p["tokens_per_text"] for p in found["lengths"]] == [pytest.approx(16, abs=2), 128]


def test_cost_falls_with_utilisation_to_the_price_at_peak_throughput(sweeps) -> None:  # noqa: ANN001
    cost = sweeps[0]["cost"]
    prices = [point["usd_per_million_tokens"] for point in cost["points"]]
    assert prices == sorted(prices, reverse=True)
    assert prices[-1] == pytest.approx(0.09 / (cost["peak_tokens_per_s"] * 3600) * 1e6)
    assert cost["openai"]["text-embedding-3-small"] == 0.02


def test_a_burst_the_server_drops_is_counted_as_failed_requests_not_a_crash(own_data_dir, log_dir) -> None:  # noqa: ANN001
    """The server dies with a burst in flight: every request of it is reported failed, by reason."""
    running = start_server(own_data_dir, log_dir, "--cache-mb", "0", holdable=True)  # no cached answers
    requests = client.prepare(MODEL, TEXTS, 2)

    async def burst_then_kill(load: client.LoadClient) -> Measurement:
        await load.warm_up(requests)
        with running.holding():  # the burst stays queued until the server is killed
            burst = asyncio.ensure_future(load.bursts(requests, len(requests), 0.0, lambda _: None, math.inf))
            for _ in range(1200):  # until all are in; the scrape counts itself among them
                if metric(running, "keepwarm_requests_in_flight") > len(requests):
                    break
                await asyncio.sleep(0.05)
            running.process.kill()
            return await burst

    try:
        result, _ = client.run_phase(running.url, len(requests), None, burst_then_kill)
    finally:
        running.stop()
    assert result.texts == 0 and result.latencies == []
    assert sum(result.failures.values()) == len(requests)
    assert not any(reason.startswith("HTTP") for reason in result.failures)  # connections, not answers
    assert result.summary()["failed"] == len(requests)


def test_the_load_generator_closes_idle_connections_before_the_server_does(own_data_dir, log_dir) -> None:  # noqa: ANN001
    """A connection the server's keep-alive timeout closes as a request is written into it fails
    that request, so the client closes idle ones first (well before the 5 s many servers keep them).

    This server keeps idle connections for 30 s, so only the client can have closed them.
    """
    assert ConnectionLimits().keep_alive_timeout > client.IDLE_CONNECTION_SECONDS
    server = start_server(own_data_dir, log_dir, "--keep-alive-timeout", "30")
    requests = client.prepare(MODEL, TEXTS, 3)

    async def idle_between(load: client.LoadClient) -> Measurement:
        await load.warm_up(requests)
        assert metric(server, "keepwarm_connections_open") >= 1 + len(requests)  # the scrape's own, too
        # aiohttp closes idle connections within two of its idle periods
        await asyncio.sleep(2 * client.IDLE_CONNECTION_SECONDS + 0.3)
        assert metric(server, "keepwarm_connections_open") == 1  # the scrape's: the client closed its own
        result = Measurement()
        await asyncio.gather(*(load.send(request, result) for request in requests))
        return result

    try:
        result, _ = client.run_phase(server.url, len(requests), None, idle_between)
    finally:
        server.stop()
    assert not result.failures and result.texts == len(TEXTS)
