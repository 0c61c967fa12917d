"""GET /metrics: the Prometheus exposition, what each request and answer moves, the settings.

Every app here runs over the tiny corpus (four documents, five chunks) with the hashing
embedder. Counters are read before and after the request under test, so each check is of the
exact increment, whatever ran before in the same app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedReader, make_settings, never, write_tiny_corpus
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.api.metrics import MetricsMiddleware, ServiceMetrics
from service.api.state import AppState
from service.config import Settings, SettingsError, load_settings
from service.engine import Engine
from service.reindexing import ReindexBusy, Reindexer

TOKEN = "metrics-admin-token-0123456789"
ANSWERED = "Did injected stem cells rebuild knee cartilage in older patients?"
UNCOVERED = "chocolate chip cookies: recipe?"
Labels = tuple[tuple[str, str], ...]


def tiny(tmp: Path, **overrides: object) -> Settings:
    settings = make_settings(tmp, **overrides)
    write_tiny_corpus(settings.corpus_dir)
    return settings


@pytest.fixture(scope="module")
def tiny_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = tiny(tmp_path_factory.mktemp("metrics"), admin_token=TOKEN)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        yield client


class Scrape:
    """One scrape of /metrics: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, Labels], float] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in self.families.values()
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a series not (yet) exposed."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]


def scrape(client: TestClient, **headers: str) -> Scrape:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Scrape(response.text)


def requests_total(snapshot: Scrape, method: str, route: str, status: str) -> float:
    return snapshot.value("qa_http_requests_total", method=method, route=route, status=status)


def ask(client: TestClient, question: str) -> Any:
    response = client.post("/api/ask", json={"question": question})
    assert response.status_code == 200, response.text
    return response.json()


# -- the exposition ---------------------------------------------------------------------------


def test_the_exposition_parses_and_names_every_metric(tiny_client: TestClient) -> None:
    ask(tiny_client, ANSWERED)
    snapshot = scrape(tiny_client)
    types = {name: family.type for name, family in snapshot.families.items()}
    assert {
        "qa_http_requests": "counter",
        "qa_http_request_duration_seconds": "histogram",
        "qa_answers": "counter",
        "qa_answer_stage_seconds": "histogram",
        "qa_reindex": "counter",
        "qa_reindex_running": "gauge",
        "qa_index_loaded": "gauge",
        "qa_index_info": "gauge",
        "qa_index_documents": "gauge",
        "qa_index_chunks": "gauge",
        "qa_index_sentences": "gauge",
        "qa_index_build_duration_seconds": "gauge",
        "qa_index_built_timestamp_seconds": "gauge",
        "qa_service_info": "gauge",
    }.items() <= types.items()
    assert "process_resident_memory_bytes" in types
    assert not [name for name in snapshot.families if name.endswith("_created")]
    # The index in service, from its manifest.
    assert snapshot.value("qa_index_loaded") == 1
    assert snapshot.value("qa_index_documents") == 4
    assert snapshot.value("qa_index_chunks") == 5
    (info,) = snapshot.series("qa_index_info")
    assert info["model"] == "hash-256" and info["index_type"] == "flat"
    assert info["build"].startswith("build-") and info["built_at"]
    assert abs(snapshot.value("qa_index_built_timestamp_seconds") - time.time()) < 3600
    # Every outcome is listed from the start, so a rate of "not_stated" is 0, not missing.
    outcomes = {(s["endpoint"], s["outcome"]) for s in snapshot.series("qa_answers_total")}
    assert outcomes == {
        (endpoint, outcome)
        for endpoint in ("/api/ask", "/v1/chat/completions")
        for outcome in ("answered", "not_stated", "not_covered")
    }
    assert {s["outcome"] for s in snapshot.series("qa_reindex_total")} == {
        "succeeded",
        "unchanged",
        "failed",
        "busy",
    }


def test_metrics_are_not_in_the_openapi_schema(tiny_client: TestClient) -> None:
    assert "/metrics" not in tiny_client.get("/openapi.json").json()["paths"]


def test_openmetrics_when_the_scraper_asks_for_it(tiny_client: TestClient) -> None:
    response = tiny_client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- requests ---------------------------------------------------------------------------------


def test_a_request_moves_its_own_counter_by_exactly_one(tiny_client: TestClient) -> None:
    before = scrape(tiny_client)
    assert tiny_client.get("/api/documents").status_code == 200
    after = scrape(tiny_client)
    assert requests_total(after, "GET", "/api/documents", "200") == (
        requests_total(before, "GET", "/api/documents", "200") + 1
    )
    # Nothing else moved but the scrape itself.
    moved = {
        (labels["method"], labels["route"], labels["status"])
        for (name, key), value in after.samples.items()
        if name == "qa_http_requests_total" and value != before.samples.get((name, key), 0.0)
        for labels in (dict(key),)
    }
    assert moved == {("GET", "/api/documents", "200"), ("GET", "/metrics", "200")}
    latency = "qa_http_request_duration_seconds_count"
    labels = {"method": "GET", "route": "/api/documents", "status": "200"}
    assert after.value(latency, **labels) == before.value(latency, **labels) + 1
    assert after.value("qa_http_request_duration_seconds_sum", **labels) > before.value(
        "qa_http_request_duration_seconds_sum", **labels
    )


def test_routes_are_counted_by_template_not_raw_path(tiny_client: TestClient) -> None:
    before = scrape(tiny_client)
    assert tiny_client.get("/api/documents/no-such-one").status_code == 404
    assert tiny_client.get("/api/documents/another-one").status_code == 404
    assert tiny_client.get("/api/documents/knee").status_code == 200
    assert tiny_client.get("/no/such/page/12345").status_code == 404
    after = scrape(tiny_client)
    template = "/api/documents/{document_id}"
    assert requests_total(after, "GET", template, "404") == (
        requests_total(before, "GET", template, "404") + 2
    )
    assert requests_total(after, "GET", template, "200") == (
        requests_total(before, "GET", template, "200") + 1
    )
    assert requests_total(after, "GET", "other", "404") == (
        requests_total(before, "GET", "other", "404") + 1
    )
    routes = {s["route"] for s in after.series("qa_http_requests_total")}
    assert not [r for r in routes if "no-such" in r or "another" in r or "12345" in r]
    assert "/api/documents/knee" not in routes


def test_unusual_methods_share_one_label(tiny_client: TestClient) -> None:
    before = scrape(tiny_client)
    assert tiny_client.request("BREW", "/healthz").status_code == 405
    after = scrape(tiny_client)
    assert requests_total(after, "other", "/healthz", "405") == (
        requests_total(before, "other", "/healthz", "405") + 1
    )
    assert "BREW" not in {s["method"] for s in after.series("qa_http_requests_total")}


# -- answers ----------------------------------------------------------------------------------


def test_answered_and_abstained_questions_move_the_outcome_counter(
    tiny_client: TestClient,
) -> None:
    def answers(snapshot: Scrape) -> dict[str, float]:
        return {
            outcome: snapshot.value("qa_answers_total", endpoint="/api/ask", outcome=outcome)
            for outcome in ("answered", "not_stated", "not_covered")
        }

    start = scrape(tiny_client)
    assert ask(tiny_client, ANSWERED)["answer_status"] == "answered"
    middle = scrape(tiny_client)
    assert ask(tiny_client, UNCOVERED)["answer_status"] == "not_covered"
    end = scrape(tiny_client)
    first, second, third = answers(start), answers(middle), answers(end)
    assert second == {**first, "answered": first["answered"] + 1}
    assert third == {**second, "not_covered": second["not_covered"] + 1}
    # A question sent with its conversation (the page's follow-ups) is counted the same way.
    history = [{"role": "user", "text": ANSWERED}, {"role": "assistant", "document_ids": []}]
    response = tiny_client.post("/api/ask", json={"question": UNCOVERED, "history": history})
    assert response.json()["answer_status"] == "not_covered"
    after_history = answers(scrape(tiny_client))
    assert after_history == {**third, "not_covered": third["not_covered"] + 1}
    # Both answers were timed, stage by stage (no reader here: reader off).
    for stage in ("encode", "retrieval", "answer", "total"):
        count = "qa_answer_stage_seconds_count"
        assert end.value(count, stage=stage) == start.value(count, stage=stage) + 2, stage
    assert end.value("qa_answer_stage_seconds_count", stage="reader") == 0
    total = end.value("qa_answer_stage_seconds_sum", stage="total")
    encode = end.value("qa_answer_stage_seconds_sum", stage="encode")
    assert 0 < encode < total < 5


def test_not_stated_is_counted_with_the_reader_time(tmp_path: Path) -> None:
    settings = tiny(tmp_path)
    engine, _ = Engine.start(settings, reader=ScriptedReader(never))
    with TestClient(create_app(settings, engine=engine)) as client:
        before = scrape(client)
        assert ask(client, ANSWERED)["answer_status"] == "not_stated"
        after = scrape(client)
    labels = {"endpoint": "/api/ask", "outcome": "not_stated"}
    assert (
        after.value("qa_answers_total", **labels) == before.value("qa_answers_total", **labels) + 1
    )
    assert after.value("qa_answer_stage_seconds_count", stage="reader") == 1


def test_a_streamed_chat_completion_is_counted_once_with_its_status(
    tiny_client: TestClient,
) -> None:
    body = {
        "model": "msc-evidence-qa",
        "stream": True,
        "messages": [{"role": "user", "content": ANSWERED}],
    }
    route = "/v1/chat/completions"
    before = scrape(tiny_client)
    with tiny_client.stream("POST", route, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    after = scrape(tiny_client)
    assert (
        requests_total(after, "POST", route, "200")
        == requests_total(before, "POST", route, "200") + 1
    )
    labels = {"method": "POST", "route": route, "status": "200"}
    count = "qa_http_request_duration_seconds_count"
    assert after.value(count, **labels) == before.value(count, **labels) + 1
    outcome = {"endpoint": route, "outcome": "answered"}
    assert (
        after.value("qa_answers_total", **outcome)
        == before.value("qa_answers_total", **outcome) + 1
    )
    # A refused one (unknown model) is counted with its 404 and gives no answer.
    refused = tiny_client.post(route, json={**body, "model": "gpt-4"})
    assert refused.status_code == 404
    last = scrape(tiny_client)
    assert (
        requests_total(last, "POST", route, "404")
        == requests_total(after, "POST", route, "404") + 1
    )
    assert last.value("qa_answers_total", **outcome) == after.value("qa_answers_total", **outcome)


def test_the_middleware_passes_a_stream_through_and_times_it_to_the_end() -> None:
    """A fake streaming app: each body piece reaches the server before the next is made, and
    the request is timed until the last piece, not until the headers."""
    settings = load_settings(model="hash")
    state = AppState(settings=settings)
    metrics = ServiceMetrics(CollectorRegistry(), state, Reindexer())
    sent: list[dict[str, Any]] = []
    seen_by_app: list[int] = []

    async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one", b"two", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            seen_by_app.append(len(sent))  # what the server has received so far
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def server_send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = MetricsMiddleware(streaming_app, metrics, routes=[])
    scope = {"type": "http", "method": "GET", "path": "/stream", "headers": []}
    asyncio.run(middleware(scope, receive, server_send))
    assert seen_by_app == [2, 3, 4]  # start + each piece, forwarded at once
    assert [m.get("body") for m in sent[1:]] == [b"one", b"two", b"three", b""]
    families = Scrape(metrics.exposition(None)[0].decode())
    labels = {"method": "GET", "route": "other", "status": "200"}
    assert families.value("qa_http_requests_total", **labels) == 1
    assert families.value("qa_http_request_duration_seconds_sum", **labels) >= 0.15


def test_a_failing_app_is_counted_as_a_500() -> None:
    metrics = ServiceMetrics(
        CollectorRegistry(),
        AppState(settings=load_settings(model="hash")),
        Reindexer(),
    )

    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def nowhere(message: Any) -> None:  # pragma: no cover - nothing is sent
        raise AssertionError(message)

    middleware = MetricsMiddleware(failing_app, metrics, routes=[])
    with pytest.raises(RuntimeError):
        asyncio.run(middleware({"type": "http", "method": "POST", "path": "/x"}, nowhere, nowhere))
    families = Scrape(metrics.exposition(None)[0].decode())
    assert families.value("qa_http_requests_total", method="POST", route="other", status="500") == 1


# -- rate limit, token, off -------------------------------------------------------------------


def test_metrics_are_not_rate_limited_while_the_api_is(tmp_path: Path) -> None:
    settings = tiny(tmp_path, rate_limit_per_minute=3)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        codes = [client.get("/api/limits").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        for _ in range(10):
            snapshot = scrape(client)
    # The 429s are counted under the route's template, as answered by the rate limit.
    assert requests_total(snapshot, "GET", "/api/limits", "429") == 2
    assert requests_total(snapshot, "GET", "/api/limits", "200") == 3
    assert requests_total(snapshot, "GET", "/metrics", "200") == 9  # the tenth is being served


def test_with_metrics_auth_admin_the_token_is_required(tmp_path: Path) -> None:
    settings = tiny(tmp_path, admin_token=TOKEN, metrics_auth="admin")
    with TestClient(create_app(settings, load_in_background=False)) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 30})
        snapshot = scrape(client, Authorization=f"Bearer {TOKEN}")
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        body = response.json()
        assert set(body) == {"error", "details"} and "token" in body["error"]
    assert "qa_http_requests" in snapshot.families
    assert requests_total(snapshot, "GET", "/metrics", "401") == 2


def test_metrics_off_answers_404_and_keeps_nothing(tmp_path: Path) -> None:
    settings = tiny(tmp_path, metrics="off")
    app = create_app(settings, load_in_background=False)
    assert app.state.metrics is None
    with TestClient(app) as client:
        assert client.get("/api/documents").status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {
        "error": "metrics are off; set QA_METRICS=on to serve them",
        "details": [],
    }


def test_bad_metrics_settings_are_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="QA_METRICS"):
        make_settings(tmp_path, metrics="maybe")
    with pytest.raises(SettingsError, match="QA_METRICS_AUTH"):
        make_settings(tmp_path, metrics_auth="token")
    with pytest.raises(SettingsError, match="QA_METRICS_AUTH=admin needs QA_ADMIN_TOKEN"):
        make_settings(tmp_path, metrics_auth="admin")
    assert make_settings(tmp_path, metrics="off").metrics == "off"


# -- the index and re-indexing ----------------------------------------------------------------


def test_a_reindex_is_counted_and_the_new_build_shown(tmp_path: Path) -> None:
    settings = tiny(tmp_path, admin_token=TOKEN)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings, load_in_background=False)) as client:
        first = scrape(client)
        assert client.post("/api/admin/reindex", headers=admin).status_code == 200
        same = scrape(client)
        (settings.corpus_dir / "heart.md").write_text(
            "---\nid: heart\ntitle: Heart Failure\nyear: 2026\n---\n\n# Heart Failure\n\n"
            "Cord blood cells raised the ejection fraction in heart failure.\n",
            encoding="utf-8",
        )
        assert client.post("/api/admin/reindex", headers=admin).status_code == 200
        changed = scrape(client)
        for path in settings.corpus_dir.iterdir():
            path.unlink()
        assert client.post("/api/admin/reindex", headers=admin).status_code == 500
        failed = scrape(client)

    def reindexes(snapshot: Scrape) -> dict[str, float]:
        return {
            o: snapshot.value("qa_reindex_total", outcome=o)
            for o in ("succeeded", "unchanged", "failed", "busy")
        }

    assert reindexes(first) == {"succeeded": 0, "unchanged": 0, "failed": 0, "busy": 0}
    assert reindexes(same) == {"succeeded": 0, "unchanged": 1, "failed": 0, "busy": 0}
    assert reindexes(changed) == {"succeeded": 1, "unchanged": 1, "failed": 0, "busy": 0}
    assert reindexes(failed) == {"succeeded": 1, "unchanged": 1, "failed": 1, "busy": 0}
    builds = [s.series("qa_index_info")[0]["build"] for s in (first, same, changed, failed)]
    assert builds[0] != builds[1] != builds[2] and builds[3] == builds[2]  # failed: kept
    assert [s.value("qa_index_documents") for s in (first, same, changed, failed)] == [4, 4, 5, 5]
    assert changed.value("qa_index_chunks") == 6
    assert changed.value("qa_reindex_running") == 0


def test_a_second_reindex_while_one_runs_is_counted_busy(tmp_path: Path) -> None:
    reindexer = Reindexer()
    reindexer.lock.acquire()  # as while a re-index runs
    try:
        with pytest.raises(ReindexBusy):
            reindexer.run(tiny(tmp_path), None)
    finally:
        reindexer.lock.release()
    assert reindexer.counts == {"succeeded": 0, "unchanged": 0, "failed": 0, "busy": 1}


def test_no_index_loaded_is_shown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # an empty corpus: nothing to load
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert client.get("/readyz").status_code == 503
        snapshot = scrape(client)
    assert snapshot.value("qa_index_loaded") == 0
    assert snapshot.series("qa_index_info") == [] and "qa_index_documents" not in snapshot.families
