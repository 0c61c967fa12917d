"""``curl /metrics`` shows the counters moving under a short load run, on a live server.

The server is the real thing, ``python -m service serve`` (uvicorn) in a child process over the
tiny corpus with the hashing embedder. Eight client threads send 60 requests of six kinds at
once (search, answerable and unrelated questions, documents by id known and unknown, streamed
chat completions); /metrics is read before and after, and every counter must have moved by
exactly the number of requests of its kind, no more, no less. About 2 seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from conftest import server_process, write_tiny_corpus
from prometheus_client.parser import text_string_to_metric_families

Sample = tuple[str, tuple[tuple[str, str], ...]]

ANSWERABLE = [
    "Did injected stem cells rebuild knee cartilage?",
    "What lowered the reoperation rate after disc injections?",
    "Did nebulized vesicles improve lung function in fibrosis?",
    "Did exosomes restore skin elasticity in aging mice?",
]
UNRELATED = "chocolate chip cookies: recipe?"
# (kind, count): 60 requests in all.
PLAN = {"search": 20, "ask": 12, "uncovered": 8, "known": 6, "unknown": 6, "chat": 8}


def scrape(url: str) -> dict[Sample, float]:
    """GET /metrics (what ``curl URL/metrics`` shows), parsed into samples."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    text = response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delta(
    before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str
) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def send(client: httpx.Client, kind: str, n: int) -> tuple[str, int, str | None]:
    """One request of ``kind``; its kind, status and answer status (if any)."""
    if kind == "search":
        response = client.get("/api/search", params={"q": f"stem cells {n}"})
    elif kind in ("ask", "uncovered"):
        question = ANSWERABLE[n % len(ANSWERABLE)] if kind == "ask" else UNRELATED
        response = client.post("/api/ask", json={"question": question})
    elif kind == "known":
        response = client.get(f"/api/documents/{['knee', 'disc', 'lung'][n % 3]}")
    elif kind == "unknown":
        response = client.get(f"/api/documents/missing-{n}")
    else:
        body = {
            "model": "msc-evidence-qa",
            "stream": True,
            "messages": [{"role": "user", "content": ANSWERABLE[n % len(ANSWERABLE)]}],
        }
        with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
            lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
            final = json.loads(lines[-1].removeprefix("data: "))
            return kind, streamed.status_code, final.get("answer_status")
    status = response.json().get("answer_status") if kind in ("ask", "uncovered") else None
    return kind, response.status_code, status


def test_counters_move_by_exactly_the_load(tmp_path: Path) -> None:
    write_tiny_corpus(tmp_path / "corpus")
    with server_process(tmp_path, QA_READER="off") as (url, _proc):
        before = scrape(url)
        jobs = [(kind, n) for kind, count in PLAN.items() for n in range(count)]
        with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda job: send(client, *job), jobs))
        after = scrape(url)

    assert len(results) == sum(PLAN.values()) == 60
    statuses = Counter((kind, status) for kind, status, _ in results)
    assert statuses == {
        ("search", 200): 20,
        ("ask", 200): 12,
        ("uncovered", 200): 8,
        ("known", 200): 6,
        ("unknown", 404): 6,
        ("chat", 200): 8,
    }
    outcomes = Counter((kind, answer) for kind, _, answer in results if answer is not None)
    assert outcomes == {
        ("ask", "answered"): 12,
        ("uncovered", "not_covered"): 8,
        ("chat", "answered"): 8,
    }

    def requests(route: str, status: str, method: str = "GET") -> float:
        labels = {"method": method, "route": route, "status": status}
        counted = delta(before, after, "qa_http_requests_total", **labels)
        timed = delta(before, after, "qa_http_request_duration_seconds_count", **labels)
        assert counted == timed, (route, status)
        return counted

    assert requests("/api/search", "200") == 20
    assert requests("/api/ask", "200", "POST") == 20
    assert requests("/api/documents/{document_id}", "200") == 6
    assert requests("/api/documents/{document_id}", "404") == 6
    assert requests("/v1/chat/completions", "200", "POST") == 8
    assert requests("/metrics", "200") == 1  # the first scrape; the second was being served
    # Nothing else was counted: the raw paths never became labels.
    http_moved = sum(
        after[key] - before.get(key, 0.0) for key in after if key[0] == "qa_http_requests_total"
    )
    assert http_moved == 61
    answers = {
        (endpoint, outcome): delta(
            before, after, "qa_answers_total", endpoint=endpoint, outcome=outcome
        )
        for endpoint in ("/api/ask", "/v1/chat/completions")
        for outcome in ("answered", "not_stated", "not_covered")
    }
    assert answers == {
        ("/api/ask", "answered"): 12,
        ("/api/ask", "not_stated"): 0,
        ("/api/ask", "not_covered"): 8,
        ("/v1/chat/completions", "answered"): 8,
        ("/v1/chat/completions", "not_stated"): 0,
        ("/v1/chat/completions", "not_covered"): 0,
    }
    # Each of the 28 answers was timed; encoding is part of the total.
    stages = {
        stage: delta(before, after, "qa_answer_stage_seconds_count", stage=stage)
        for stage in ("encode", "retrieval", "answer", "total")
    }
    assert stages == dict.fromkeys(stages, 28)
    encoded = delta(before, after, "qa_answer_stage_seconds_sum", stage="encode")
    assert 0 < encoded < delta(before, after, "qa_answer_stage_seconds_sum", stage="total")
