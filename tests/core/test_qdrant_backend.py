"""The Qdrant backend (qdrant-client local mode) against the embedded one, and its guarantees:
the same rankings and ranker features, an atomic alias switch under a reader, refusal of a
mismatched build, half-built collections ignored and cleaned up, a reopen after a restart, and
the local-mode folder lock named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import CORPUS, ROOT, make_settings

from service.backends import open_index, rebuild
from service.chunk_index import BackendUnavailable
from service.config import Settings, SettingsError, load_settings
from service.embedding import HashEmbedder
from service.engine import Engine
from service.index_store import IndexMismatchError
from service.qdrant_index import (
    QdrantIndex,
    QdrantLockedError,
    close_clients,
    meta_collection,
    open_client,
    resolve,
)
from service.reranking import FEATURES, feature_matrix

EMBEDDER = HashEmbedder()
QUESTIONS = [
    "Do stem cells help knee cartilage?",
    "lung fibrosis exosomes",
    "reoperation rate after disc injections",
    "graft versus host disease in children",
    "what about the safety of umbilical cord cells",
]


def qdrant_settings(tmp: Path, **overrides: object) -> Settings:
    return make_settings(
        tmp, CORPUS, backend="qdrant", qdrant_path=str(tmp / "qdrant"), **overrides
    )


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    close_clients()  # release the local-mode folders


def test_settings_need_exactly_one_target() -> None:
    with pytest.raises(SettingsError, match=r"QA_QDRANT_URL.*QA_QDRANT_PATH"):
        load_settings(backend="qdrant")
    with pytest.raises(SettingsError, match="both are set"):
        load_settings(backend="qdrant", qdrant_url="http://q:6333", qdrant_path="/tmp/q")
    with pytest.raises(SettingsError, match="http"):
        load_settings(backend="qdrant", qdrant_url="q:6333")
    assert load_settings().backend == "embedded"


def test_same_rankings_and_features_as_embedded(tmp_path: Path) -> None:
    embedded, _ = Engine.start(
        make_settings(tmp_path / "e", CORPUS), embedder=EMBEDDER, reader=None
    )
    qdrant, ensured = Engine.start(qdrant_settings(tmp_path / "q"), embedder=EMBEDDER, reader=None)
    a, b = embedded.data, qdrant.data
    assert isinstance(b, QdrantIndex) and ensured.reason is not None
    assert len(a) == len(b) and a.chunk_counts == b.chunk_counts
    assert a.documents == b.documents
    assert a.document_frequencies == b.document_frequencies
    assert list(a.chunks()) == list(b.chunks())
    some = sorted(a.documents)[:2]
    assert a.chunks_of(some[0]) == b.chunks_of(some[0])
    for row in (0, len(a) // 2, len(a) - 1):
        assert np.allclose(a.chunk_sentence_vectors(row), b.chunk_sentence_vectors(row), atol=1e-6)
    for question in QUESTIONS:
        for mode in ("rerank", "hybrid", "dense", "bm25"):
            for only in (None, some):
                left = embedded.search(question, 8, mode, only).hits
                right = qdrant.search(question, 8, mode, only).hits
                assert [h.chunk_index for h in left] == [h.chunk_index for h in right]
                assert np.allclose([h.score for h in left], [h.score for h in right], atol=1e-5)
        left_c = embedded.retriever.candidates(question, 5)
        right_c = qdrant.retriever.candidates(question, 5)
        # The hashing embedder ties many scores: at the candidate depth's cut, which of the
        # tied chunks get in is the engine's choice; scores agree to float32 rounding, and
        # chunks tied to the last bit may swap ranks (FAISS and Qdrant sum in different orders).
        both = sorted(set(left_c.rows.tolist()) & set(right_c.rows.tolist()))
        assert len(both) >= 0.8 * len(left_c.rows)
        x = feature_matrix(left_c)[[left_c.rows.tolist().index(r) for r in both]]
        y = feature_matrix(right_c)[[right_c.rows.tolist().index(r) for r in both]]
        ranks = [FEATURES.index("dense_rank"), FEATURES.index("bm25_rank")]
        document_level = [i for i, f in enumerate(FEATURES) if f.startswith("doc_")]
        others = [i for i in range(len(FEATURES)) if i not in ranks + document_level]
        assert np.allclose(x[:, others], y[:, others], atol=1e-5)
    left_answer, right_answer = embedded.ask(QUESTIONS[0]), qdrant.ask(QUESTIONS[0])
    assert (left_answer.text, left_answer.status) == (right_answer.text, right_answer.status)
    assert [h.chunk_index for h in left_answer.passages] == [
        h.chunk_index for h in right_answer.passages
    ]


def test_alias_switch_while_a_reader_keeps_querying(tmp_path: Path) -> None:
    settings = qdrant_settings(tmp_path)
    reader, _ = Engine.start(settings, embedder=EMBEDDER, reader=None)
    old = reader.data.build_name
    (settings.corpus_dir / "extra.md").write_text(
        "---\nid: extra\ntitle: Extra Study\n---\n\n# Extra Study\n\nKnee cartilage grew back.\n"
    )
    errors: list[BaseException] = []
    seen: set[str] = set()
    answered = 0
    stop = threading.Event()

    def keep_asking() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                result = reader.search("knee cartilage", 5)
                seen.add(result.hits[0].chunk.document_id)
                seen.add(reader.data.build_name)
                answered += 1
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=keep_asking)
    thread.start()
    try:
        report, new_index = rebuild(settings, EMBEDDER)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert answered > 0
    new = new_index.build_name
    assert new != old
    builds = {s for s in seen if s.startswith("msc-qa-")}
    assert builds <= {old, new}
    client = open_client(settings)
    assert resolve(client, settings.qdrant_collection) == new
    assert not client.collection_exists(old) and not client.collection_exists(meta_collection(old))
    # The reader follows the alias on its next query (its collection was dropped).
    reader.search("knee cartilage", 5)
    assert reader.data.build_name == new
    assert "extra" in reader.data.documents and report.manifest.documents == 6


def test_a_build_with_other_chunking_is_refused(tmp_path: Path) -> None:
    Engine.start(qdrant_settings(tmp_path), embedder=EMBEDDER, reader=None)
    other = load_settings(**{**qdrant_settings(tmp_path).model_dump(), "chunk_max_tokens": 100})
    with pytest.raises(IndexMismatchError) as caught:
        Engine.start(other, embedder=EMBEDDER, reader=None)
    message = str(caught.value)
    assert "max_tokens=160" in message and "max_tokens=100" in message
    assert "hash-256" in message and "--force" in message and "\n" not in message


def test_a_half_built_collection_is_ignored_then_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = qdrant_settings(tmp_path)
    engine, _ = Engine.start(settings, embedder=EMBEDDER, reader=None)
    served = engine.data.build_name
    client = open_client(settings)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt  # killed after the upserts, before the switch

    monkeypatch.setattr(client, "update_collection_aliases", crash)
    with pytest.raises(KeyboardInterrupt):
        rebuild(settings, EMBEDDER)
    monkeypatch.undo()
    names = {c.name for c in client.get_collections().collections}
    leftovers = names - {served, meta_collection(served)}
    assert len(leftovers) == 2  # the half-built build and its meta collection
    assert resolve(client, settings.qdrant_collection) == served
    assert engine.ensure_current().build_name == served  # still serving the old build
    assert engine.search("knee cartilage", 3).hits
    _, new_index = rebuild(settings, EMBEDDER)
    names = {c.name for c in client.get_collections().collections}
    assert names == {new_index.build_name, meta_collection(new_index.build_name)}


def test_reopen_from_the_folder_after_a_restart(tmp_path: Path) -> None:
    settings = qdrant_settings(tmp_path)
    first, _ = Engine.start(settings, embedder=EMBEDDER, reader=None)
    before = [h.chunk_index for h in first.search(QUESTIONS[0], 5).hits]
    name = first.data.build_name
    close_clients()
    again = open_index(settings, EMBEDDER)
    assert again.build is None and again.reason is None  # served as published, not rebuilt
    engine = Engine(settings, EMBEDDER, again.data, reader=None)
    assert engine.data.build_name == name
    assert [h.chunk_index for h in engine.search(QUESTIONS[0], 5).hits] == before


def test_a_replica_without_corpus_serves_the_alias(tmp_path: Path) -> None:
    settings = qdrant_settings(tmp_path)
    Engine.start(settings, embedder=EMBEDDER, reader=None)
    replica = load_settings(
        **{**settings.model_dump(), "corpus_dir": tmp_path / "none", "index_dir": tmp_path / "x"}
    )
    engine, ensured = Engine.start(replica, embedder=EMBEDDER, reader=None)
    assert ensured.build is None and engine.search("knee cartilage", 3).hits
    assert not (tmp_path / "x").exists()  # an API replica needs only Qdrant


def test_texts_rows_and_term_sets_stay_in_qdrant_until_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = qdrant_settings(tmp_path)
    Engine.start(settings, embedder=EMBEDDER, reader=None)
    close_clients()
    asked: list[tuple[str, tuple[int, ...]]] = []
    original = QdrantIndex._meta_fields

    def spy(self: QdrantIndex, points: Any, key: str) -> dict[int, Any]:
        asked.append((key, tuple(points)))
        return original(self, points, key)

    monkeypatch.setattr(QdrantIndex, "_meta_fields", spy)
    engine, _ = Engine.start(settings, embedder=EMBEDDER, reader=None)
    index = engine.data
    assert isinstance(index, QdrantIndex)
    assert asked == []  # start-up loads metadata and the vocabulary only
    answer = engine.ask(QUESTIONS[0])
    assert answer.status == "answered" and answer.citations
    assert {key for key, _ in asked} == {"document_terms"}  # the ranker's document overlap
    assert len({p for _, points in asked for p in points}) <= len(index.documents)
    # A second question about the same studies reads nothing more from the meta collection.
    before = len(asked)
    engine.ask(QUESTIONS[0])
    assert len(asked) == before
    # A text is read when asked for, once (then kept), and equals the corpus's.
    doc_id = answer.citations[0].document.id
    text = index.documents[doc_id].text
    assert index.documents[doc_id].text == text
    assert [key for key, _ in asked].count("text") == 1
    embedded, _ = Engine.start(make_settings(tmp_path / "e", CORPUS), embedder=EMBEDDER)
    assert text == embedded.data.documents[doc_id].text
    assert index.chunks_of(doc_id) == embedded.data.chunks_of(doc_id)
    assert ("rows", (index._doc_point[doc_id],)) in asked


def test_a_build_in_an_older_layout_is_republished_or_refused(tmp_path: Path) -> None:
    settings = qdrant_settings(tmp_path)
    engine, _ = Engine.start(settings, embedder=EMBEDDER, reader=None)
    old = engine.data.build_name
    client = open_client(settings)
    client.delete_payload(meta_collection(old), keys=["meta_format"], points=[0])
    replica = load_settings(
        **{**settings.model_dump(), "corpus_dir": tmp_path / "none", "index_dir": tmp_path / "x"}
    )
    with pytest.raises(BackendUnavailable, match=r"older version.*ingest --force"):
        open_index(replica, EMBEDDER)
    ensured = open_index(settings, EMBEDDER)
    assert ensured.reason is not None and "older version" in ensured.reason
    assert ensured.build is not None and ensured.build.reused > 0  # vectors copied
    assert ensured.data.build_name != old
    assert resolve(client, settings.qdrant_collection) == ensured.data.build_name
    assert not client.collection_exists(old)


def test_the_folder_lock_is_named_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from qdrant_client import QdrantClient; "
            f"c = QdrantClient(path={str(folder)!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        settings = qdrant_settings(tmp_path)
        with pytest.raises(QdrantLockedError) as caught:
            open_client(settings)
        assert str(folder) in str(caught.value) and "QA_QDRANT_URL" in str(caught.value)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
        env.update(
            QA_MODEL="hash",
            QA_BACKEND="qdrant",
            QA_QDRANT_PATH=str(folder),
            QA_CORPUS_DIR=str(settings.corpus_dir),
            QA_INDEX_DIR=str(settings.index_dir),
            PYTHONPATH=str(ROOT),
        )
        cli = subprocess.run(
            [sys.executable, "-m", "service", "ingest", "-q"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 1
        lines = cli.stderr.strip().splitlines()
        assert len(lines) == 1 and str(folder) in lines[0] and "QA_QDRANT_URL" in lines[0]
    finally:
        holder.kill()
        holder.wait()
