"""`keepwarm bench-batches`: online latency and job throughput with and without a batch job."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx

from keepwarm.cli.options import DATA_DIR_OPTION


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(data_dir: Path, extra: tuple[str, ...]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keepwarm", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--log-level", "warning", "--batch-chunk-inputs", "16", "--cache-mb", "0", *extra],  # measure compute
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return process, f"{url}/v1"
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise click.ClickException("the server did not become ready")


@click.command("bench-batches")
@click.option("--corpus", "corpus_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSONL with a `text` field: short texts become online queries, all become job documents.")
@click.option("--rate", default=4.0, show_default=True, type=click.FloatRange(0.1), help="Online requests per second.")
@click.option("--seconds", default=20.0, show_default=True, type=click.FloatRange(1), help="Length of each phase.")
@click.option("--model", default="all-minilm-l6-v2", show_default=True)
@click.option("--serve-option", "serve_options", multiple=True, help="Extra `keepwarm serve` argument. Repeatable.")
@DATA_DIR_OPTION
def bench_batches(corpus_path: Path, rate: float, seconds: float, model: str, serve_options: tuple[str, ...],
                  data_dir: Path) -> None:
    """Start a server and measure online latency idle vs during a batch job, and the job's throughput."""
    from keepwarm.batches.bench import Plan, run
    from keepwarm.reembed import Corpus

    texts = list(Corpus(corpus_path).texts())
    queries = [text for text in texts if len(text.split()) <= 16][:500]
    process, url = _start_server(data_dir, serve_options)
    try:
        report = run(Plan(url=url, model=model, queries=queries, documents=texts * 4, rate=rate, seconds=seconds))
    finally:
        process.terminate()
        process.wait(timeout=60)
    click.echo(json.dumps(report, indent=1))
