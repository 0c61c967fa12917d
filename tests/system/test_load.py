"""A bounded load test: many concurrent clients, a re-index in the middle, memory after.

The server is the real thing, ``python -m service serve`` (uvicorn, as deployed) in a child
process on 127.0.0.1 with the hashing embedder, so its memory can be read from /proc on its
own. Sixteen client threads mix /api/ask, /api/search, /api/documents and
/api/documents/{id}; each question is unique, so a response carrying another request's data
would show. At a third a document is added to the corpus and POST /api/admin/reindex swaps the
new index in under load; at two thirds it re-indexes again. Checked: no request fails, every
response echoes its own question or query, every citation and passage names a document that
exists (before or after the swap) and a chunk of that document, the new document is served
after the swap, and the server's RSS is back near its warmed-up baseline afterwards. Also runs
the hand-run ``soak`` command briefly against a server. About 30 seconds in all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CORPUS, server_process

from service.evaluation.bench.harness import free_port
from service.evaluation.soak import rss_bytes

ADMIN_TOKEN = "load-test-admin-token-0123456789"
CLIENTS = 16
REQUESTS_PER_CLIENT = 100
QUESTIONS = [
    "What was the reoperation rate after MSC disc injection?",
    "Do nebulized vesicles improve lung function in fibrosis?",
    "Are stem cells safe for older patients with knee pain?",
    "How do mesenchymal stem cells affect aging skin?",
    "Which microRNA did the vesicles increase?",
    "What is the capital of Australia?",
]
EXTRA_DOC = (
    "---\nid: load-extra\ntitle: Cord Blood Cells in Heart Failure\nyear: 2026\n---\n\n"
    "# Cord Blood Cells in Heart Failure\n\n"
    "Umbilical cord blood cells were infused in forty patients with heart failure. "
    "Ejection fraction rose by five points at six months.\n"
)


def _rss(pid: int) -> int:
    value = rss_bytes(pid)
    assert value is not None, "cannot read the server's memory from /proc"
    return value


class Load:
    """Counts and problems shared by the client threads."""

    def __init__(self, known: set[str]) -> None:
        self.lock = threading.Lock()
        self.known = set(known)  # documents of the old index and, once swapped, the new one
        self.ids = sorted(known)
        self.problems: list[str] = []
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def _check_passages(load: Load, where: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        doc = item["document_id"]
        if doc not in load.known:
            load.problem(f"{where}: unknown document {doc}")
        if not item["chunk_id"].startswith(f"{doc}:"):
            load.problem(f"{where}: chunk {item['chunk_id']} is not from {doc}")


def client_thread(url: str, number: int, load: Load, requests: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(requests):
            kind = ("ask", "search", "ask", "documents", "search", "document")[(number + i) % 6]
            base = QUESTIONS[(number * 7 + i) % len(QUESTIONS)]
            question = f"{base} (client {number}, request {i})"
            started = time.perf_counter()
            where = f"client {number} request {i} {kind}"
            try:
                if kind == "ask":
                    response = client.post("/api/ask", json={"question": question})
                elif kind == "search":
                    response = client.get("/api/search", params={"q": question, "top_k": 5})
                elif kind == "documents":
                    response = client.get("/api/documents")
                else:
                    with load.lock:
                        doc_id = load.ids[(number + i) % len(load.ids)]
                    response = client.get(f"/api/documents/{doc_id}")
            except httpx.HTTPError as exc:
                load.problem(f"{where}: {type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            with load.lock:
                load.counts[kind] += 1
                load.latencies.append(elapsed)
            if response.status_code != 200:
                load.problem(f"{where}: HTTP {response.status_code} {response.text[:200]}")
                continue
            body = response.json()
            if kind == "ask":
                if body["question"] != question:
                    load.problem(f"{where}: answered '{body['question']}'")
                quoted = [
                    {**p, "document_id": c["document_id"]}
                    for c in body["citations"]
                    for p in c["passages"]
                ]
                _check_passages(load, where, quoted + body["passages"])
            elif kind == "search":
                if body["query"] != question:
                    load.problem(f"{where}: results for '{body['query']}'")
                _check_passages(load, where, body["results"])
            elif kind == "documents":
                unknown = {d["id"] for d in body["documents"]} - load.known
                if unknown:
                    load.problem(f"{where}: unknown documents {unknown}")
            elif body["id"] != doc_id:
                load.problem(f"{where}: asked for {doc_id}, got {body['id']}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    return tmp_path


def test_concurrent_clients_with_a_reindex_midway(workdir: Path) -> None:
    with server_process(workdir, QA_ADMIN_TOKEN=ADMIN_TOKEN) as (url, proc):
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        before = {d["id"] for d in httpx.get(f"{url}/api/documents").json()["documents"]}
        assert len(before) == 5
        load = Load(before)
        # Warm up (imports, caches, allocator pools) before taking the memory baseline.
        warm = [
            threading.Thread(target=client_thread, args=(url, n, Load(before), 12))
            for n in range(CLIENTS)
        ]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()
        baseline = _rss(proc.pid)

        started = time.monotonic()
        threads = [
            threading.Thread(target=client_thread, args=(url, n, load, REQUESTS_PER_CLIENT))
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        # Midway: a new document, re-indexed while the clients keep asking.
        while sum(load.counts.values()) < CLIENTS * REQUESTS_PER_CLIENT // 3:
            time.sleep(0.05)
        (workdir / "corpus" / "load-extra.md").write_text(EXTRA_DOC, encoding="utf-8")
        with load.lock:
            load.known.add("load-extra")
        reindex = httpx.post(f"{url}/api/admin/reindex", headers=admin, timeout=120)
        served_during = sum(load.counts.values())
        assert reindex.status_code == 200, reindex.text
        first = reindex.json()
        assert first["documents"] == 6 and first["problems"] == []
        assert first["embedded"] > 0 and first["reused"] > 0  # only the new text embedded
        with load.lock:
            load.ids = sorted(load.known)
        # And again at two thirds, with nothing changed: nothing to embed, a new build all the same.
        while sum(load.counts.values()) < 2 * CLIENTS * REQUESTS_PER_CLIENT // 3:
            time.sleep(0.05)
        reindex = httpx.post(f"{url}/api/admin/reindex", headers=admin, timeout=120)
        assert reindex.status_code == 200, reindex.text
        result = reindex.json()
        assert result["embedded"] == 0 and result["previous_build"] == first["build"]["build"]
        for thread in threads:
            thread.join(timeout=120)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads)

        total = sum(load.counts.values())
        assert load.problems == [], "\n".join(load.problems[:20])
        assert total == CLIENTS * REQUESTS_PER_CLIENT
        assert served_during < CLIENTS * REQUESTS_PER_CLIENT * 2 // 3  # answered meanwhile
        after = {d["id"] for d in httpx.get(f"{url}/api/documents").json()["documents"]}
        assert after == before | {"load-extra"}
        found = httpx.get(f"{url}/api/search", params={"q": "cord blood heart failure"}).json()
        assert found["results"][0]["document_id"] == "load-extra"
        status = httpx.get(f"{url}/api/admin/status", headers=admin).json()
        assert status["serving"]["build"] == result["build"]["build"]
        assert status["running"] is None and status["last_reindex"]["status"] == "ok"

        time.sleep(1)
        final = _rss(proc.pid)
        latencies = sorted(load.latencies)
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"\n{total} requests in {elapsed:.1f} s by {CLIENTS} clients, p95 {p95 * 1000:.0f} ms;"
            f" RSS baseline {baseline / 1e6:.0f} MB, after {final / 1e6:.0f} MB"
        )
        # Two indexes are in memory only while swapping; afterwards the old one is freed.
        assert final < baseline * 1.25 + 30e6, (baseline, final)


def test_soak_command_briefly(workdir: Path) -> None:
    """The hand-run soak command, for a few seconds, with a re-index every 2 s."""
    with server_process(workdir, QA_ADMIN_TOKEN=ADMIN_TOKEN) as (url, _proc):
        out = workdir / "soak.json"
        env = {**os.environ, "QA_ADMIN_TOKEN": ADMIN_TOKEN}
        result = subprocess.run(
            [sys.executable, "-m", "service", "soak", "--url", url, "--minutes", "0.1",
             "--clients", "4", "--interval", "2", "--reindex-every", "2", "--json", str(out)],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(out.read_text())
        assert report["requests"] > 50 and report["errors"] == 0, report["error_kinds"]
        assert report["reindexes"] >= 1 and report["reindex_failures"] == 0
        assert report["rss_mb"]["start"] and report["rss_mb"]["end"]  # found from the port
        assert len(report["windows"]) >= 2
        assert {"p50", "p95", "p99"} <= set(report["latency_ms"])
        assert "0 failed" in result.stdout and "p95" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://10.0.0.1:8000"], "refusing to load 10.0.0.1"),
        (["--url", "http://example.org"], "refusing to load example.org"),
        (["--url", "http://192.168.1.1"], "refusing to load 192.168.1.1"),
        (["--url", "ftp://127.0.0.1"], "not an http:// or https:// URL"),
        (["--minutes", "0"], "duration must be more than 0"),
        (["--minutes", "100000"], "at most 1440 minutes"),
        (["--clients", "500"], "--clients must be between 1 and 64"),
        (["--url", f"http://127.0.0.1:{free_port()}"], "cannot reach"),
    ],
)
def test_soak_refuses_other_machines_and_unbounded_runs(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    assert main(["soak", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
