"""Feedback on answers: ``answer_id`` on /api/ask, ``POST /api/feedback``, and what reaches the
SQLite file (the server's own record of the answer, nothing about the client).

The app runs over the tiny corpus with the hashing embedder and a scripted reader (so the
reader's name is recorded); one engine is shared by the module's apps.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ScriptedReader, make_settings, server_process, serving, write_tiny_corpus
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.ratelimit import is_limited_path
from service.engine import Engine
from service.feedback_store import SCHEMA_VERSION, FeedbackStore
from service.reranking import LinearRanker

DISC = "What was the reoperation rate after disc injections?"
KNEE = "Did knee cartilage grow back?"
OFF_TOPIC = "What is the capital of France?"
#: Every column of the table: a new one (an address, a user agent) must be a decision here.
COLUMNS = {
    "id", "answer_id", "rating", "comment", "ratings", "question", "answer", "answer_status",
    "citations", "resolution", "mode", "index_build", "index_built_at", "reader", "ranker",
    "answered_at", "created_at", "updated_at",
}  # fmt: skip


def _answers(_question: str, sentence: str) -> bool:
    return "reoperation" in sentence or "cartilage" in sentence


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = make_settings(tmp_path_factory.mktemp("feedback"))
    write_tiny_corpus(settings.corpus_dir)
    engine, _ = Engine.start(settings, reader=ScriptedReader(_answers))
    return engine


def app_with(engine: Engine, db: Path, **overrides: Any) -> FastAPI:
    settings = engine.settings.model_copy(update={"feedback_db": db, **overrides})
    return create_app(settings, engine=engine)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "feedback.sqlite3"


@pytest.fixture
def client(engine: Engine, db: Path) -> Iterator[TestClient]:
    with TestClient(app_with(engine, db)) as test_client:
        yield test_client


def ask(client: TestClient, question: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/ask", json={"question": question, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rate(client: TestClient, answer_id: Any, rating: Any = "up", **extra: Any) -> Any:
    return client.post("/api/feedback", json={"answer_id": answer_id, "rating": rating, **extra})


def rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]
    finally:
        conn.close()


# -- the round trip ----------------------------------------------------------------------------


def test_a_rating_stores_the_servers_record_of_the_answer(
    client: TestClient, engine: Engine, db: Path
) -> None:
    answer = ask(client, DISC, mode="bm25")
    assert len(answer["answer_id"]) == 32 and int(answer["answer_id"], 16) >= 0
    assert answer["answer_id"] != ask(client, DISC, mode="bm25")["answer_id"]  # one per answer

    response = rate(client, answer["answer_id"], "down", comment=" wrong\x00 study\u200b\x07 ")
    assert response.status_code == 201
    stored = response.json()
    assert stored == {
        "feedback_id": stored["feedback_id"],
        "answer_id": answer["answer_id"],
        "rating": "down",
        "replaced": False,
    }
    [row] = rows(db)
    assert set(row) == COLUMNS  # no client address, no user agent
    assert row["id"] == stored["feedback_id"]
    assert row["answer_id"] == answer["answer_id"]
    assert (row["rating"], row["comment"], row["ratings"]) == ("down", "wrong study", 1)
    assert row["question"] == DISC
    assert row["answer"] == answer["answer"]
    assert row["answer_status"] == "answered"
    assert json.loads(row["citations"]) == answer["citations"]  # as the response carried them
    assert [c["document_id"] for c in answer["citations"]] == ["disc"]
    assert row["resolution"] is None  # asked on its own
    assert row["mode"] == "bm25"
    assert row["index_build"] == engine.data.build_name
    assert row["index_built_at"] == client.get("/readyz").json()["index_built_at"]
    assert row["reader"] == "scripted"
    assert row["ranker"] is not None and row["ranker"].startswith("ranker-")
    assert row["ranker"] != "ranker-" and len(row["ranker"]) == len("ranker-") + 12
    assert row["answered_at"] <= row["created_at"] == row["updated_at"]
    assert row["created_at"].endswith("+00:00")  # UTC


def test_the_client_cannot_say_what_the_answer_was(client: TestClient, db: Path) -> None:
    answer = ask(client, DISC)
    forged = rate(client, answer["answer_id"], question="forged", answer="forged")
    assert forged.status_code == 422
    assert {d["field"] for d in forged.json()["details"]} == {"question", "answer"}
    assert not db.exists() or rows(db) == []


def test_the_default_mode_and_a_refusal_are_recorded(client: TestClient, db: Path) -> None:
    refused = ask(client, OFF_TOPIC)
    assert refused["answer_status"] == "not_covered"
    assert rate(client, refused["answer_id"], "down").status_code == 201
    [row] = rows(db)
    assert (row["mode"], row["answer_status"], row["citations"]) == ("rerank", "not_covered", "[]")


def test_a_follow_up_is_recorded_with_how_it_was_read(client: TestClient, db: Path) -> None:
    first = ask(client, KNEE)
    history = [
        {"role": "user", "text": KNEE},
        {"role": "assistant", "text": first["answer"], "document_ids": ["knee"]},
    ]
    follow_up = ask(client, "How many injections did that take?", history=history)
    assert follow_up["resolution"] is not None
    assert rate(client, follow_up["answer_id"], "up").status_code == 201
    [row] = rows(db)
    assert row["question"] == "How many injections did that take?"
    assert json.loads(row["resolution"]) == follow_up["resolution"]
    assert json.loads(row["citations"]) == follow_up["citations"]


def test_the_ranker_version_follows_its_weights(engine: Engine) -> None:
    from service.api.feedback_routes import ranker_version

    assert engine.ranker is not None
    shipped = ranker_version(engine.ranker)
    again = LinearRanker.load()
    assert ranker_version(again) == shipped
    changed = LinearRanker(again.features, again.mean, again.std, again.weights * 2, again.info)
    assert ranker_version(changed) != shipped
    assert ranker_version(None) is None


def test_a_second_rating_replaces_the_first(client: TestClient, db: Path) -> None:
    answer = ask(client, KNEE)
    first = rate(client, answer["answer_id"], "up", comment="helpful")
    second = rate(client, answer["answer_id"], "down")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["feedback_id"] == first.json()["feedback_id"]
    assert second.json()["replaced"] is True
    [row] = rows(db)
    assert (row["rating"], row["comment"], row["ratings"]) == ("down", None, 2)
    assert row["updated_at"] >= row["created_at"]


# -- refusals ------------------------------------------------------------------------------------


def test_unknown_answer_id_is_404(client: TestClient) -> None:
    response = rate(client, "0" * 32)
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown answer_id"
    assert body["details"][0]["field"] == "answer_id"
    assert "24 h" in body["details"][0]["message"]


def test_an_expired_answer_is_404(client: TestClient) -> None:
    answer = ask(client, DISC)
    recent = client.app.state.feedback.recent  # type: ignore[attr-defined]
    real_clock = recent.clock
    recent.clock = lambda: real_clock() + 86_400
    try:
        assert rate(client, answer["answer_id"]).status_code == 404
    finally:
        recent.clock = real_clock


def test_only_the_most_recent_answers_can_be_rated(engine: Engine, db: Path) -> None:
    with TestClient(app_with(engine, db, feedback_answers_kept=2)) as client:
        ids = [ask(client, q)["answer_id"] for q in (DISC, KNEE, OFF_TOPIC)]
        assert [rate(client, i).status_code for i in ids] == [404, 201, 201]


def test_comment_length_is_limited_after_cleaning(engine: Engine, db: Path) -> None:
    with TestClient(app_with(engine, db, feedback_max_comment_chars=20)) as client:
        answer_id = ask(client, DISC)["answer_id"]
        too_long = rate(client, answer_id, comment="x" * 21)
        assert too_long.status_code == 422
        assert too_long.json()["details"] == [
            {"field": "comment", "message": "must be at most 20 characters (it has 21)"}
        ]
        assert rate(client, answer_id, comment="\x01" * 10 + "x" * 20).status_code == 201
        assert rate(client, answer_id, comment="\x00\u200b  ").status_code == 200
        assert rows(db)[0]["comment"] is None  # nothing left after cleaning: no comment


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"answer_id": "a", "rating": "meh"}, "rating"),
        ({"answer_id": "a", "rating": 1}, "rating"),
        ({"answer_id": "a"}, "rating"),
        ({"rating": "up"}, "answer_id"),
        ({"answer_id": 7, "rating": "up"}, "answer_id"),
        ({"answer_id": "a" * 65, "rating": "up"}, "answer_id"),
        ({"answer_id": "a", "rating": "up", "comment": ["x"]}, "comment"),
        ({"answer_id": "a", "rating": "up", "client_ip": "1.2.3.4"}, "client_ip"),
    ],
)
def test_bad_fields_are_422(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/api/feedback", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid request"
    assert field in {d["field"] for d in response.json()["details"]}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: TestClient, content_type: str | None) -> None:
    answer_id = ask(client, DISC)["answer_id"]
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"answer_id": answer_id, "rating": "up"}).encode()
    response = client.post("/api/feedback", content=body, headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/feedback", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_feedback_is_rate_limited_like_the_other_api_routes(engine: Engine, db: Path) -> None:
    assert is_limited_path("/api/feedback")
    with TestClient(app_with(engine, db, rate_limit_per_minute=3)) as client:
        answer_id = ask(client, DISC)["answer_id"]
        statuses = [rate(client, answer_id).status_code for _ in range(3)]
        assert statuses == [201, 200, 429]
        assert (
            "429"
            in client.get("/openapi.json").json()["paths"]["/api/feedback"]["post"]["responses"]
        )


def test_ratings_are_counted_under_their_route_in_the_metrics(engine: Engine, db: Path) -> None:
    """Also the refusals answered before routing (429): the route is known to the metrics."""
    with TestClient(app_with(engine, db, rate_limit_per_minute=3)) as client:
        answer_id = ask(client, DISC)["answer_id"]
        assert [rate(client, answer_id).status_code for _ in range(3)] == [201, 200, 429]
        text = client.get("/metrics").text
    for status in (201, 200, 429):
        assert (
            f'qa_http_requests_total{{method="POST",route="/api/feedback",status="{status}"}} 1.0'
            in text
        )


# -- turned off, or the database unusable ---------------------------------------------------


def test_feedback_off(engine: Engine, db: Path) -> None:
    with TestClient(app_with(engine, db, feedback="off")) as client:
        assert ask(client, DISC)["answer_id"] is None
        response = rate(client, "0" * 32)
        assert response.status_code == 404
        assert response.json()["error"] == "feedback is turned off on this server (QA_FEEDBACK=off)"
        assert "/api/feedback" not in client.get("/openapi.json").json()["paths"]
    assert not db.exists()


def test_a_database_that_cannot_be_created_is_503(engine: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with TestClient(app_with(engine, blocker / "feedback.sqlite3")) as client:
        answer = ask(client, DISC)
        assert answer["answer_status"] == "answered"  # questions are still answered
        assert answer["answer_id"] is None  # but not offered for rating
        response = rate(client, "0" * 32)
        assert response.status_code == 503
        assert response.json()["error"].startswith(
            f"feedback cannot be stored: cannot create the feedback database {blocker}/"
        )


def test_a_database_from_a_newer_version_is_503(engine: Engine, db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with TestClient(app_with(engine, db)) as client:
        assert ask(client, DISC)["answer_id"] is None
        error = rate(client, "0" * 32).json()["error"]
        assert f"has schema version {SCHEMA_VERSION + 1}, newer than this service reads" in error


# -- restarts and concurrent writes ----------------------------------------------------------


def _post(url: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ratings_survive_a_restart_of_the_server_process(tmp_path: Path) -> None:
    write_tiny_corpus(tmp_path / "corpus")
    db = tmp_path / "feedback.sqlite3"
    stored = []
    for question in (DISC, KNEE):  # two processes, one after the other, over the same file
        with server_process(tmp_path, QA_FEEDBACK_DB=str(db)) as (url, _process):
            status, answer = _post(url, "/api/ask", {"question": question})
            assert status == 200
            status, body = _post(url, "/api/feedback", {"answer_id": answer["answer_id"]})
            assert status == 422  # no rating
            status, body = _post(
                url, "/api/feedback", {"answer_id": answer["answer_id"], "rating": "up"}
            )
            assert status == 201, body
            stored.append(body["feedback_id"])
        # What the server remembered about its answers is gone with the process.
    assert stored[1] > stored[0]
    assert [(r["id"], r["question"]) for r in rows(db)] == [(stored[0], DISC), (stored[1], KNEE)]
    store = FeedbackStore(db, create=False)
    try:
        assert store.count() == 2 and store.schema_version() == SCHEMA_VERSION
    finally:
        store.close()


def test_a_burst_of_concurrent_ratings_loses_nothing(engine: Engine, db: Path) -> None:
    """200 answers rated by 16 threads at once over HTTP, then 50 of them rated again."""
    with serving(app_with(engine, db)) as url:
        with ThreadPoolExecutor(16) as pool:
            asked = list(
                pool.map(
                    lambda i: _post(url, "/api/ask", {"question": f"{DISC} ({i})", "top_k": 2}),
                    range(200),
                )
            )
            assert {status for status, _ in asked} == {200}
            ids = [answer["answer_id"] for _, answer in asked]
            assert len(set(ids)) == 200
            seen_threads: set[int] = set()

            def rate_one(item: tuple[int, str]) -> tuple[int, dict[str, Any]]:
                seen_threads.add(threading.get_ident())
                n, answer_id = item
                rating = "up" if n % 2 else "down"
                return _post(url, "/api/feedback", {"answer_id": answer_id, "rating": rating})

            first = list(pool.map(rate_one, enumerate(ids)))
            again = list(pool.map(rate_one, enumerate(ids[:50], start=1)))
        assert len(seen_threads) == 16
    assert [status for status, _ in first] == [201] * 200
    assert [status for status, _ in again] == [200] * 50
    stored = rows(db)
    assert len(stored) == 200
    assert {r["answer_id"] for r in stored} == set(ids)
    assert len({r["id"] for r in stored}) == 200
    by_id = {r["answer_id"]: r for r in stored}
    for n, answer_id in enumerate(ids):
        row = by_id[answer_id]
        replaced = n < 50
        expected = ("up" if (n + 1) % 2 else "down") if replaced else ("up" if n % 2 else "down")
        assert (row["rating"], row["ratings"]) == (expected, 2 if replaced else 1)
        assert row["question"] == f"{DISC} ({n})"
