"""Faults, through the service as it runs: a missing, damaged or mismatched index at start-up;
live re-indexing and each way it can fail; processes killed mid-ingest and mid-re-index; an
index folder that cannot be written. (Loading damaged files is tested at the function level
in tests/core/test_index_store.py; here the same faults go through the app, the API and the CLI.)

Everything uses the hashing embedder. Kills are real SIGKILLs of child processes slowed down
at one stage by patching the child's own functions (no test hooks in the service code).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CORPUS, copy_of_build, make_settings, running, serving, wait_for_marker
from fastapi.testclient import TestClient

from service import index_store
from service.api.app import create_app
from service.config import Settings
from service.embedding import HashEmbedder
from service.engine import Engine
from service.evaluation.bench.harness import ServerProcess, free_port
from service.index_store import MANIFEST, POINTER, VECTORS, current_build, load_index
from service.ingest import build_index

TOKEN = "faults-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FIX = "rebuild with `python -m service ingest`"
NEW_DOC = (
    "---\nid: new-study\ntitle: Cord Blood Cells in Heart Failure\nyear: 2026\n---\n\n"
    "# Cord Blood Cells in Heart Failure\n\n"
    "Umbilical cord blood cells were infused in forty patients with heart failure.\n"
)


@pytest.fixture
def built(template: Settings, tmp_path: Path) -> Settings:
    """The real corpus, indexed with the hashing embedder; admin enabled."""
    return copy_of_build(template, tmp_path, admin_token=TOKEN)


@pytest.fixture
def served(built: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(built, load_in_background=False)) as client:
        yield client


def builds(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.index_dir.glob("build-*"))


def leftovers(settings: Settings) -> list[str]:
    """Hidden files a build left behind (the build lock stays: it is not a leftover)."""
    hidden = (p.name for p in settings.index_dir.iterdir() if p.name.startswith("."))
    return sorted(name for name in hidden if name != index_store.LOCK)


# -- damaged or mismatched index at start-up ---------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _edit_manifest(**changes: Any) -> Callable[[Path], None]:
    def edit(build: Path) -> None:
        data = json.loads((build / MANIFEST).read_text())
        data.update(changes)
        (build / MANIFEST).write_text(json.dumps(data))

    return edit


def _drop_a_chunk_record(build: Path) -> None:
    """chunks.jsonl edited and its size and checksum updated in the manifest (a hand edit)."""
    chunks = build / "chunks.jsonl"
    chunks.write_text("".join(chunks.read_text().splitlines(keepends=True)[:-1]))
    data = json.loads((build / MANIFEST).read_text())
    data["files"]["chunks.jsonl"] = {
        "bytes": chunks.stat().st_size,
        "sha256": hashlib.sha256(chunks.read_bytes()).hexdigest(),
    }
    (build / MANIFEST).write_text(json.dumps(data))


def _index_of_another_dimension(build: Path) -> None:
    settings = make_settings(build.parent.parent)
    shutil.rmtree(settings.index_dir)
    build_index(settings, HashEmbedder(dimension=64))


# name -> (damage to the current build, what the message must contain)
FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated vectors": (lambda b: _truncate(b / VECTORS), f"{VECTORS} has"),
    "corrupt chunk records": (lambda b: _flip_byte(b / "chunks.jsonl"), "chunks.jsonl does not"),
    "truncated sentences": (lambda b: _truncate(b / "sentences.npy"), "sentences.npy has"),
    "deleted bm25 files": (lambda b: shutil.rmtree(b / "bm25"), "bm25/"),
    "garbage manifest": (lambda b: (b / MANIFEST).write_text("{not json"), "manifest.json is not"),
    "manifest of another model": (
        _edit_manifest(model="sentence-transformers/all-mpnet-base-v2"),
        "was built with model 'sentence-transformers/all-mpnet-base-v2', QA_MODEL is 'hash-256'",
    ),
    "manifest of another dimension": (
        _edit_manifest(dimension=384),
        "vectors.faiss has dimension 256, manifest 384",
    ),
    "index of another dimension": (
        _index_of_another_dimension,
        "manifest.json has dimension 64, the model gives 256",
    ),
    "manifest not matching the chunk records": (
        _edit_manifest(chunks=7),
        "chunks.jsonl 92 chunks, manifest 7",
    ),
    "chunk records not matching the manifest": (
        _drop_a_chunk_record,
        "chunks.jsonl: its offsets do not match",  # format 2: records read through offsets
    ),
    "CURRENT names a missing build": (
        lambda b: shutil.rmtree(b),
        "CURRENT names a missing build",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_unusable_index_without_corpus_is_reported_not_served(built: Settings, fault: str) -> None:
    damage, expected = FAULTS[fault]
    build = current_build(built.index_dir)
    damage(build)
    shutil.rmtree(built.corpus_dir)
    before = builds(built)
    with TestClient(create_app(built, load_in_background=False)) as client:
        assert client.get("/healthz").status_code == 200  # alive, but not ready
        ready = client.get("/readyz")
        assert ready.status_code == 503
        message = ready.json()["error"]
        assert message.startswith("index could not be loaded: ")
        assert expected in message
        assert str(built.index_dir) in message  # names the file or folder ...
        assert FIX in message or "set QA_MODEL to match" in message  # ... and the fix
        assert "\n" not in message and "Traceback" not in message
        for response in (
            client.post("/api/ask", json={"question": "What was the reoperation rate?"}),
            client.get("/api/search", params={"q": "reoperation rate"}),
            client.get("/api/documents"),
            client.get("/api/documents/zhang-2023"),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == message
            assert response.headers["retry-after"] == "2"
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "msc-evidence-qa", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 503
        assert chat.json()["error"]["message"] == message
        status = client.get("/api/admin/status", headers=ADMIN).json()
        assert status["serving"] is None and status["load_error"] in message
    assert builds(built) == before  # nothing was built or removed


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_unusable_index_with_corpus_is_rebuilt_at_start(built: Settings, fault: str) -> None:
    damage, _ = FAULTS[fault]
    damaged = current_build(built.index_dir)
    damage(damaged)
    with TestClient(create_app(built, load_in_background=False)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["documents"] == 5 and ready.json()["model"] == "hash-256"
        answer = client.post("/api/ask", json={"question": "What was the reoperation rate?"})
        assert answer.status_code == 200
    assert current_build(built.index_dir) != damaged
    assert load_index(built.index_dir).manifest.dimension == 256


def test_missing_index_is_built_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORPUS)
    assert not settings.index_dir.exists()
    with TestClient(create_app(settings, load_in_background=False)) as client:
        assert client.get("/readyz").json()["documents"] == 5
    assert (settings.index_dir / POINTER).is_file()


def test_background_loading_reports_503_then_ready(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORPUS)
    with TestClient(create_app(settings)) as client:  # loads in a thread
        deadline = time.monotonic() + 60
        while (ready := client.get("/readyz")).status_code == 503:
            assert "still loading" in ready.json()["error"]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status_code == 200


def test_reindex_recovers_a_service_that_could_not_load(built: Settings, tmp_path: Path) -> None:
    _flip_byte(current_build(built.index_dir) / VECTORS)
    corpus_copy = tmp_path / "kept-corpus"
    built.corpus_dir.rename(corpus_copy)
    with TestClient(create_app(built, load_in_background=False)) as client:
        assert client.get("/readyz").status_code == 503
        failed = client.post("/api/admin/reindex", headers=ADMIN)
        assert failed.status_code == 500
        assert (
            "corpus folder" in failed.json()["error"] and "does not exist" in failed.json()["error"]
        )
        assert failed.json()["serving"] is None
        corpus_copy.rename(built.corpus_dir)  # the operator puts the corpus back
        rebuilt = client.post("/api/admin/reindex", headers=ADMIN)
        assert rebuilt.status_code == 200, rebuilt.text
        assert rebuilt.json()["documents"] == 5 and rebuilt.json()["previous_build"] is None
        assert client.get("/readyz").status_code == 200
        assert client.post("/api/ask", json={"question": "reoperation rate"}).status_code == 200
        assert client.get("/api/admin/status", headers=ADMIN).json()["load_error"] is None


# -- live re-indexing -----------------------------------------------------------------------


def test_reindex_reports_what_it_built(served: TestClient, built: Settings) -> None:
    old = current_build(built.index_dir).name
    (built.corpus_dir / "new-study.md").write_text(NEW_DOC)
    response = served.post("/api/admin/reindex", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["previous_build"] == old
    assert body["documents"] == 6 and body["build"]["documents"] == 6
    assert body["chunks"] == body["build"]["chunks"] > 90
    assert body["embedded"] == 2 and body["reused"] > 400  # only the new document's texts
    assert body["problems"] == [] and body["seconds"] >= 0
    assert body["build"]["build"] == current_build(built.index_dir).name != old
    found = served.get("/api/search", params={"q": "cord blood heart failure"}).json()
    assert found["results"][0]["document_id"] == "new-study"
    assert served.get("/readyz").json()["documents"] == 6
    status = served.get("/api/admin/status", headers=ADMIN).json()
    assert status["last_reindex"] == body and status["running"] is None


def test_reindex_reports_bad_corpus_files_and_indexes_the_rest(
    served: TestClient, built: Settings
) -> None:
    corpus = built.corpus_dir
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "blank.txt").write_bytes(b"  \n\t\n")
    (corpus / "binary.html").write_bytes(b"<html>\x00\x01\x02</html>")
    (corpus / "latin1.txt").write_bytes("Caf\xe9 study\n\nCells were given.\n".encode("latin-1"))
    with (corpus / "huge.txt").open("wb") as fh:
        fh.truncate(21 * 1024 * 1024)  # sparse: 21 MB, over the 20 MB limit
    (corpus / "copy.md").write_text((corpus / "zhang-2023.md").read_text())  # same id
    (corpus / "slides.pptx").write_bytes(b"PK\x03\x04")
    (corpus / "truncated.pdf").write_bytes(b"%PDF-1.4")
    (corpus / "new-study.md").write_text(NEW_DOC)
    response = served.post("/api/admin/reindex", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    reasons = {p["path"]: p["reason"] for p in body["problems"]}
    assert reasons["empty.md"] == "empty file" and reasons["blank.txt"] == "empty file"
    assert reasons["binary.html"].startswith("binary file")
    assert reasons["latin1.txt"].startswith("not valid UTF-8 (byte 0xe9")
    assert reasons["huge.txt"].startswith("file is too large (22,020,096 bytes")
    assert reasons["zhang-2023.md"].startswith("duplicate id 'zhang-2023' (already used by copy.md")
    assert reasons["slides.pptx"] == "unsupported file type '.pptx'"
    assert reasons["truncated.pdf"].startswith("not a readable PDF")
    assert len(reasons) == 8
    assert body["documents"] == 6  # the five good ones (zhang-2023 from copy.md) + new-study
    ids = [d["id"] for d in served.get("/api/documents").json()["documents"]]
    assert "new-study" in ids and len(ids) == 6


def _remove_all_documents(settings: Settings) -> None:
    for path in settings.corpus_dir.iterdir():
        path.unlink()


def _only_bad_documents(settings: Settings) -> None:
    _remove_all_documents(settings)
    (settings.corpus_dir / "empty.md").write_bytes(b"")
    (settings.corpus_dir / "binary.txt").write_bytes(b"\x00\x00")


def _no_corpus_folder(settings: Settings) -> None:
    shutil.rmtree(settings.corpus_dir)


def _file_in_place_of_index(settings: Settings) -> None:
    moved = settings.index_dir.with_name("index-moved")
    settings.index_dir.rename(moved)
    settings.index_dir.write_text("a file where the index folder should be")


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    write = index_store._write_text
    calls = []

    def fill_up(path: Path, text: str) -> None:
        calls.append(path)
        if len(calls) == 2:  # the first file went in; the disk is full at the second
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, text)

    monkeypatch.setattr(index_store, "_write_text", fill_up)


def _embedder_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: HashEmbedder, texts: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the encoder died")

    monkeypatch.setattr(HashEmbedder, "embed", crash)


REINDEX_FAILURES: dict[str, tuple[Callable[[Settings], None] | None, Any, str]] = {
    "empty corpus": (_remove_all_documents, None, "no usable documents in "),
    "only unusable files": (_only_bad_documents, None, "no usable documents in "),
    "no corpus folder": (_no_corpus_folder, None, "does not exist; create it and add documents"),
    "index folder is a file": (_file_in_place_of_index, None, "cannot write to "),
    "disk full mid-write": (None, _disk_full, "cannot write the index to"),
    "embedder crashes": (None, _embedder_crash, "RuntimeError: the encoder died"),
}


@pytest.mark.parametrize("case", sorted(REINDEX_FAILURES))
def test_failed_reindex_leaves_the_served_index_untouched(
    served: TestClient, built: Settings, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    break_corpus, patch, expected = REINDEX_FAILURES[case]
    (built.corpus_dir / "new-study.md").write_text(NEW_DOC)  # so there is something to embed
    serving = current_build(built.index_dir).name
    if break_corpus is not None:
        break_corpus(built)
    if patch is not None:
        patch(monkeypatch)
    response = served.post("/api/admin/reindex", headers=ADMIN)
    monkeypatch.undo()
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"].startswith("re-index failed: ") and expected in body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    assert body["serving"]["build"] == serving and body["serving"]["documents"] == 5
    if case == "only unusable files":
        assert {p["path"] for p in body["problems"]} == {"empty.md", "binary.txt"}
    # Still answering, from the same index.
    assert served.get("/readyz").json()["documents"] == 5
    hits = served.get("/api/search", params={"q": "reoperation rate"}).json()["results"]
    assert hits and all(h["document_id"] != "new-study" for h in hits)
    status = served.get("/api/admin/status", headers=ADMIN).json()
    assert status["serving"]["build"] == serving
    assert status["last_reindex"] == body and status["running"] is None
    if case != "index folder is a file":
        assert current_build(built.index_dir).name == serving
        assert leftovers(built) == []  # no half-written build left behind


def test_concurrent_reindex_is_409_and_queries_use_the_old_index_meanwhile(
    built: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    build = build_index

    def held_build(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return build(*args, **kwargs)

    monkeypatch.setattr("service.ingest.build_index", held_build)
    engine, _ = Engine.start(built)
    (built.corpus_dir / "new-study.md").write_text(NEW_DOC)  # for the re-index to pick up
    with serving(create_app(built, engine=engine)) as url:
        first: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: first.update(
                response=httpx.post(f"{url}/api/admin/reindex", headers=ADMIN, timeout=60)
            )
        )
        worker.start()
        try:
            assert entered.wait(30)
            second = httpx.post(f"{url}/api/admin/reindex", headers=ADMIN)
            assert second.status_code == 409
            assert second.json()["error"].startswith("a re-index is already running (started ")
            status = httpx.get(f"{url}/api/admin/status", headers=ADMIN).json()
            assert status["running"]["started_at"]
            # Meanwhile every request is answered, from the old index.
            for _ in range(5):
                docs = httpx.get(f"{url}/api/documents").json()["documents"]
                assert len(docs) == 5
                found = httpx.get(f"{url}/api/search", params={"q": "cord blood heart"})
                assert "new-study" not in {r["document_id"] for r in found.json()["results"]}
                ask = httpx.post(f"{url}/api/ask", json={"question": "reoperation rate"})
                assert ask.status_code == 200
        finally:
            release.set()
            worker.join(timeout=60)
        assert first["response"].status_code == 200
        assert len(httpx.get(f"{url}/api/documents").json()["documents"]) == 6
        third = httpx.post(f"{url}/api/admin/reindex", headers=ADMIN)
        assert third.status_code == 200  # the lock was released


def test_reindex_while_still_loading_is_503(built: Settings) -> None:
    client = TestClient(create_app(built))  # not entered: the loader never ran
    response = client.post("/api/admin/reindex", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "still loading" in response.json()["error"]


# -- processes killed mid-ingest and mid-re-index --------------------------------------------

# A CLI ingest in a child process, slowed at one stage so the parent can SIGKILL it there.
SLOW_INGEST = """
import sys, time
from pathlib import Path
from service import index_store, ingest
from service.cli import main
from service.embedding import HashEmbedder

corpus, index, stage = sys.argv[1:4]
marker = Path(index).parent / "slow-stage-reached"

def pause():
    marker.touch()
    time.sleep(60)

if stage == "embedding":
    ingest._previous_vectors = lambda index_dir: {}  # embed everything again
    embed = HashEmbedder.embed
    def slow_embed(self, texts, **kwargs):
        pause()
        return embed(self, texts, **kwargs)
    HashEmbedder.embed = slow_embed
elif stage in ("some files written", "pointer being written"):
    write = index_store._write_text
    def slow_write(path, text):
        write(path, text)
        if stage == "some files written" or Path(path).name.startswith(".CURRENT"):
            pause()
    index_store._write_text = slow_write
elif stage == "build complete, CURRENT not swapped":
    set_current = index_store._set_current
    def slow_set_current(index_dir, name):
        pause()
        set_current(index_dir, name)
    index_store._set_current = slow_set_current
sys.exit(main(["ingest", "--force", "--corpus-dir", corpus, "--index-dir", index,
              "--model", "hash"]))
"""

KILL_STAGES = [
    "embedding",
    "some files written",
    "build complete, CURRENT not swapped",
    "pointer being written",
]


def _ingest(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "ingest", "--force", "--corpus-dir",
         str(settings.corpus_dir), "--index-dir", str(settings.index_dir), "--model", "hash"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("stage", KILL_STAGES)
def test_ingest_killed_midway_then_start_and_ingest_again(built: Settings, stage: str) -> None:
    old = load_index(built.index_dir)
    pointer = (built.index_dir / POINTER).read_text()
    marker = built.index_dir.parent / "slow-stage-reached"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_INGEST, str(built.corpus_dir), str(built.index_dir), stage],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_marker(marker, proc, "the ingest")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (built.index_dir / POINTER).read_text() == pointer
    if stage == "build complete, CURRENT not swapped":
        assert len(builds(built)) == 2  # a complete build nobody points to
    if stage == "pointer being written":
        assert any(name.startswith(".CURRENT.") for name in leftovers(built))

    # The next start serves the last good index, as it was.
    with TestClient(create_app(built, load_in_background=False)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["index_built_at"] == old.manifest.built_at
        engine = client.app.state.qa.engine  # type: ignore[attr-defined]
        assert engine.data.build_name == old.path.name
        assert client.post("/api/ask", json={"question": "reoperation rate"}).status_code == 200

    # The next ingest completes and clears what the killed one left.
    done = _ingest(built)
    assert done.returncode == 0, done.stderr
    assert "built index (rebuild requested)" in done.stderr
    assert leftovers(built) == []
    new = load_index(built.index_dir)
    assert new.path != old.path and builds(built) == sorted([old.path.name, new.path.name])


SLOW_SERVER = """
import sys, time
from pathlib import Path
import uvicorn
from service import index_store
from service.api.app import create_app
from service.config import load_settings

corpus, index, port, token = sys.argv[1:5]
marker = Path(index).parent / "slow-stage-reached"
set_current = index_store._set_current
def slow_set_current(index_dir, name):
    marker.touch()
    time.sleep(60)
    set_current(index_dir, name)
index_store._set_current = slow_set_current
settings = load_settings(corpus_dir=corpus, index_dir=index, model="hash", admin_token=token)
uvicorn.run(create_app(settings, load_in_background=False), host="127.0.0.1", port=int(port),
            log_level="warning")
"""


def test_server_killed_during_reindex_restarts_on_the_last_good_index(built: Settings) -> None:
    old = load_index(built.index_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        built.index_dir.parent / "server.log",
        command=[sys.executable, "-c", SLOW_SERVER, str(built.corpus_dir),
                 str(built.index_dir), str(port), TOKEN],
        port=port,
        timeout_s=60,
    )  # fmt: skip
    outcome: dict[str, Any] = {}

    def reindex() -> None:
        try:
            outcome["response"] = httpx.post(f"{url}/api/admin/reindex", headers=ADMIN, timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=reindex)
    marker = built.index_dir.parent / "slow-stage-reached"
    try:
        with running(server):
            assert not marker.exists()  # the index was up to date: nothing built at start
            (built.corpus_dir / "new-study.md").write_text(NEW_DOC)
            worker.start()
            wait_for_marker(marker, server.process, "the server", log=server.log_path)
            server.process.kill()  # mid-re-index, before the pointer is swapped
            server.process.wait()
    finally:
        if worker.is_alive() or outcome:
            worker.join(timeout=30)
    assert "error" in outcome  # the connection died with the server
    assert current_build(built.index_dir) == old.path
    with TestClient(create_app(built, load_in_background=False)) as client:
        # The corpus changed (new-study.md), so the restart rebuilds before serving; the
        # complete build the killed server left unnamed is not picked up half-way.
        ready = client.get("/readyz").json()
        assert ready["documents"] == 6
        assert client.post("/api/admin/reindex", headers=ADMIN).status_code == 200
    assert leftovers(built) == []
    assert len(builds(built)) == 2


# -- an index folder that cannot be written ------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _without_root_override() -> None:
    """In the child, before exec: drop root's power to write through permission bits."""
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _run_unprivileged(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python args`` bound by permission bits. As root (tests run as root here), the child
    keeps uid 0 but loses CAP_DAC_OVERRIDE, so a folder without write bits stops it as it
    would stop the service's own user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_without_root_override if os.geteuid() == 0 else None,
    )


@pytest.fixture
def read_only(built: Settings) -> Iterator[Settings]:
    folders = [built.index_dir, *(p for p in built.index_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        probe = str(built.index_dir / "probe")
        try:
            check = _run_unprivileged(["-c", f"open({probe!r}, 'w')"])
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot drop root's write override in a child process: {exc}")
        if check.returncode == 0:
            pytest.skip("a folder without write bits is still writable here (root override)")
        assert "PermissionError" in check.stderr
        yield built
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_read_only_index_serves_but_ingest_fails_clearly(read_only: Settings) -> None:
    settings = read_only
    common = ["--corpus-dir", str(settings.corpus_dir), "--index-dir", str(settings.index_dir),
              "--model", "hash"]  # fmt: skip
    search = _run_unprivileged(["-m", "service", "search", "reoperation rate", "--json", *common])
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["results"]  # served from the existing index

    ingest = _run_unprivileged(["-m", "service", "ingest", "--force", *common])
    assert ingest.returncode == 1
    last = ingest.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write to {settings.index_dir}/ (Permission denied)")
    assert last.endswith("fix its permissions or set QA_INDEX_DIR to a writable folder")
    assert "Traceback" not in ingest.stderr
    assert stat.S_IMODE(settings.index_dir.stat().st_mode) == 0o555
    assert leftovers(settings) == []
    assert load_index(settings.index_dir).manifest.documents == 5  # untouched


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_ingest_on_a_full_disk_fails_with_one_line(built: Settings) -> None:
    pointer = (built.index_dir / POINTER).read_text()
    result = subprocess.run(
        [sys.executable, "-m", "service", "ingest", "--force", "--corpus-dir",
         str(built.corpus_dir), "--index-dir", str(built.index_dir), "--model", "hash"],
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert result.returncode == 1
    assert (built.index_dir / POINTER).read_text() == pointer
    assert load_index(built.index_dir).manifest.documents == 5
    assert leftovers(built) == []
    assert "Traceback" not in result.stderr, result.stderr[-500:]
    assert "error: cannot write the index to" in result.stderr


def test_stale_index_in_a_read_only_folder_is_served_with_a_warning(read_only: Settings) -> None:
    """The corpus changed but index/ cannot be written (a read-only deployment): questions are
    answered from the index there, the change is reported, and ingest still refuses."""
    settings = read_only
    (settings.corpus_dir / "new-study.md").write_text("# New Study\n\nKnee cartilage grew.\n")
    common = ["--corpus-dir", str(settings.corpus_dir), "--index-dir", str(settings.index_dir),
              "--model", "hash"]  # fmt: skip
    search = _run_unprivileged(["-m", "service", "search", "reoperation rate", "--json", *common])
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["results"]
    warning = [line for line in search.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, search.stderr
    assert "serving the existing index unchanged (index is stale: corpus changed)" in warning[0]
    assert search.stderr.count("serving the existing index unchanged") == 1  # said once
    assert f"cannot write to {settings.index_dir}/ (Permission denied)" in warning[0]
    assert "Traceback" not in search.stderr

    ingest = _run_unprivileged(["-m", "service", "ingest", *common])
    assert ingest.returncode == 1
    assert ingest.stderr.strip().splitlines()[-1].startswith("error: cannot write to")
    assert load_index(settings.index_dir).manifest.documents == 5  # untouched


def test_readyz_reports_a_stale_index_it_could_not_rebuild(
    built: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.index_store import IndexWriteError

    def cannot_write(*_args: object, **_kwargs: object) -> None:
        raise IndexWriteError("cannot write to index/ (Read-only file system)")

    (built.corpus_dir / "new-study.md").write_text("# New Study\n\nKnee cartilage grew.\n")
    monkeypatch.setattr("service.ingest.build_index", cannot_write)
    with TestClient(create_app(built, load_in_background=False)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["documents"] == 5
        assert "index is stale: corpus changed" in ready.json()["warning"]
        assert client.get("/api/search", params={"q": "reoperation"}).json()["results"]
    monkeypatch.undo()  # the folder is writable again: the next start rebuilds
    with TestClient(create_app(built, load_in_background=False)) as client:
        ready = client.get("/readyz").json()
        assert ready["documents"] == 6 and ready["warning"] is None
