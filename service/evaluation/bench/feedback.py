"""The ``feedback`` section: what storing a rating costs.

- Over HTTP, on a server started here with its own feedback database in a temporary folder:
  ``POST /api/feedback`` latency with one keep-alive client (each request a new rating of a
  different answer, so every one is an insert), then throughput and p99 with
  :data:`CLIENTS` clients, and a count of the rows afterwards (nothing may be lost).
- In process: :meth:`FeedbackStore.rate` on one thread (the insert and its commit), and the
  insert rate from :data:`CLIENTS` threads at once.

The answers to rate are asked for first (untimed). Each run sends ``requests_1_client``
ratings (at most :data:`MAX_RATINGS`) with one client and as many again with :data:`CLIENTS`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from service.evaluation.bench.config import BenchConfig, BenchError, Say
from service.evaluation.bench.harness import HOST, ServerError, ServerProcess, server_env
from service.evaluation.bench.load import LoadResult, QuestionSource, load_base_questions, run_raw
from service.evaluation.bench.machine import cpu_seconds
from service.evaluation.bench.results import ConcurrentRow, FeedbackResult, LatencySummary
from service.evaluation.bench.stats import latency, summary
from service.feedback_store import FeedbackStore
from service.recent_answers import AnswerRecord

if TYPE_CHECKING:
    from service.config import Settings

CLIENTS = 16
MAX_RATINGS = 150  # per run and client count: asking for the answers to rate is the slow part
ASKING_CLIENTS = 4


def ratings_per_run(config: BenchConfig) -> int:
    return max(1, min(config.requests_1_client, MAX_RATINGS))


def feedback_request(answer_id: str, port: int, n: int) -> bytes:
    rating = "up" if n % 2 else "down"
    body = json.dumps({"answer_id": answer_id, "rating": rating, "comment": f"bench {n}"})
    head = (
        f"POST /api/feedback HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
    )
    return (head + body).encode()


def _answer_ids(port: int, questions: list[str]) -> list[str]:
    """Ask each question (``ASKING_CLIENTS`` keep-alive clients); the answers' ids, in order."""

    def ask(chunk: list[str]) -> list[str]:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        ids = []
        try:
            for question in chunk:
                body = json.dumps({"question": question, "top_k": 3})
                conn.request("POST", "/api/ask", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = json.loads(response.read())
                if response.status != 200 or not data.get("answer_id"):
                    raise BenchError(f"/api/ask gave no answer_id ({response.status}): {data}")
                ids.append(str(data["answer_id"]))
        finally:
            conn.close()
        return ids

    chunks = [questions[i::ASKING_CLIENTS] for i in range(ASKING_CLIENTS)]
    with ThreadPoolExecutor(ASKING_CLIENTS) as pool:
        results = list(pool.map(ask, chunks))
    ordered = [""] * len(questions)
    for i, ids in enumerate(results):
        ordered[i::ASKING_CLIENTS] = ids
    return ordered


def _rate(server: ServerProcess, ids: list[str], clients: int) -> tuple[LoadResult, float]:
    """Rate each of ``ids`` once; the load result and the server's CPU ms per request."""
    cpu = cpu_seconds(server.pid)
    result = asyncio.run(
        run_raw(
            server.port,
            lambda i: feedback_request(ids[i], server.port, i),
            clients,
            len(ids),
            600.0,
        )
    )
    cpu = cpu_seconds(server.pid) - cpu
    return result, cpu * 1000 / max(1, result.requests)


def _count_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM feedback").fetchone()[0])
    finally:
        conn.close()


def _record(n: int) -> AnswerRecord:
    return AnswerRecord(
        answer_id=f"bench-{n:08d}",
        question=f"How many patients were in the disc injection studies? ({n})",
        answer="The meta-analysis pooled 12 studies with 445 patients. [1]",
        answer_status="answered",
        citations_zlib=AnswerRecord.pack(json.dumps([{"document_id": "d", "text": "x" * 1500}])),
        resolution_json=None,
        mode="rerank",
        index_build="build-bench",
        index_built_at="2026-01-01T00:00:00+00:00",
        reader="reader-bench",
        ranker="ranker-bench",
        answered_at="2026-01-01T00:00:00.000+00:00",
    )


def _threaded_inserts(store: FeedbackStore, first: int, per_thread: int) -> float:
    """Inserts per second from ``CLIENTS`` threads writing ``per_thread`` ratings each."""
    start = threading.Barrier(CLIENTS + 1)

    def write(worker: int) -> None:
        start.wait()
        for i in range(per_thread):
            store.rate(_record(first + worker * per_thread + i), "down", None)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return CLIENTS * per_thread / (time.perf_counter() - t0)


def _store_runs(folder: Path, config: BenchConfig) -> tuple[LatencySummary, list[float]]:
    """The store alone, in process: one thread, then ``CLIENTS`` threads, per run."""
    one_thread, threaded = [], []
    n = ratings_per_run(config)
    per_thread = max(1, n // CLIENTS)
    for run in range(config.repeats):
        store = FeedbackStore(folder / f"store-{run}.sqlite3")
        try:
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                store.rate(_record(i), "up", "a comment")
                times.append(time.perf_counter() - t0)
            one_thread.append(latency(times))
            threaded.append(_threaded_inserts(store, n, per_thread))
            if store.count() != n + CLIENTS * per_thread:
                raise BenchError("the feedback store lost rows under concurrent writes")
        finally:
            store.close()
    return LatencySummary.of(one_thread), threaded


def bench_feedback(settings: Settings, config: BenchConfig, say: Say) -> FeedbackResult:
    folder = Path(tempfile.mkdtemp(prefix="bench-feedback-"))
    try:
        n = ratings_per_run(config)
        say(f"feedback: {n} store inserts x {config.repeats} runs")
        store_ms, store_rates = _store_runs(folder, config)
        db = folder / "server.sqlite3"
        env = {**server_env(settings), "QA_FEEDBACK": "on", "QA_FEEDBACK_DB": str(db)}
        server = ServerProcess(
            folder / "server.log", env=env, args=["-q"], timeout_s=config.server_timeout_s
        )
        try:
            server.start()
        except ServerError as exc:
            raise BenchError(str(exc)) from None
        try:
            source = QuestionSource(load_base_questions(), "feedback ")
            say(f"feedback: asking {2 * n * config.repeats} questions to rate")
            ids = _answer_ids(server.port, source.take(2 * n * config.repeats))
            single, concurrent = [], []
            for run in range(config.repeats):
                say(f"feedback over HTTP: 1 client, then {CLIENTS}, run {run + 1}/{config.repeats}")
                batch = ids[2 * n * run : 2 * n * (run + 1)]
                single.append(_rate(server, batch[:n], 1))
                concurrent.append(_rate(server, batch[n:], CLIENTS))
        finally:
            server.stop()
        runs = single + concurrent
        errors = sum(result.errors for result, _ in runs)
        examples = [e for result, _ in runs for e in result.error_examples][:5]
        rows = _count_rows(db)
        return FeedbackResult(
            requests_per_run=n,
            http_1_client_ms=LatencySummary.of([latency(r.latencies) for r, _ in single]),
            http_1_client_server_cpu_ms=summary([cpu for _, cpu in single]),
            http_concurrent=ConcurrentRow(
                endpoint="/api/feedback",
                clients=CLIENTS,
                requests_per_s=summary([r.requests / r.seconds for r, _ in concurrent]),
                p50=summary([latency(r.latencies).p50 for r, _ in concurrent]),
                p99=summary([latency(r.latencies).p99 for r, _ in concurrent]),
                server_cpu_ms_per_request=summary([cpu for _, cpu in concurrent]),
                errors=summary([r.errors for r, _ in concurrent]),
                requests=summary([r.requests for r, _ in concurrent]),
            ),
            rows_stored=rows,
            rows_expected=2 * n * config.repeats,
            errors=errors,
            error_examples=examples,
            store_insert_ms=store_ms,
            store_inserts_per_s_threads=summary(store_rates),
            note="POST /api/feedback: each request rates a new answer (an insert) over keep-alive "
            f"HTTP/1.1 to 127.0.0.1; the store: FeedbackStore.rate in process, one thread, then "
            f"{CLIENTS} threads (WAL, synchronous=NORMAL)",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
