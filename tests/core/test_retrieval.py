"""Ranking on a tiny corpus with the hashing embedder: dense, BM25 and hybrid (RRF)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import make_settings, write_tiny_corpus

from service.backends import open_index
from service.config import Settings
from service.embedding import HashEmbedder
from service.index_store import load_index
from service.ingest import build_index
from service.lexical import tokenize, words
from service.qdrant_index import close_clients
from service.retrieval import Hit, Retriever, UnknownDocumentError

EMBEDDER = HashEmbedder()

# Chunks of the tiny corpus (tests/conftest.py TINY_DOCS), in index order: files sorted by name.
DISC, KNEE, KNEE_PAIN, LUNG, SKIN = "disc", "knee", "knee/Pain", "lung", "skin"


@pytest.fixture(scope="module", params=["embedded", "qdrant"])
def tiny(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Retriever]]:
    """The tiny corpus behind each backend: every retrieval test runs on both (the Qdrant one
    in qdrant-client's local mode)."""
    folder = tmp_path_factory.mktemp("tiny")
    backend = {"backend": "qdrant", "qdrant_path": str(folder / "qdrant")}
    settings = make_settings(folder, **(backend if request.param == "qdrant" else {}))
    write_tiny_corpus(settings.corpus_dir)
    if request.param == "embedded":
        build_index(settings, EMBEDDER)
        yield settings, Retriever(load_index(settings.index_dir), EMBEDDER, settings)
        return
    ensured = open_index(settings, EMBEDDER)
    yield settings, Retriever(ensured.data, EMBEDDER, settings)
    close_clients()


@pytest.fixture(scope="module")
def retriever(tiny: tuple[Settings, Retriever]) -> Retriever:
    return tiny[1]


def label(hit: Hit) -> str:
    """Document id, plus the section when it is not the title."""
    chunk = hit.chunk
    same = chunk.section == hit.document.title
    return chunk.document_id if same else f"{chunk.document_id}/{chunk.section}"


def ranking(retriever: Retriever, query: str, mode: str, **kwargs: Any) -> list[str]:
    return [label(h) for h in retriever.search(query, mode=mode, **kwargs)]


def test_tiny_index_layout(retriever: Retriever) -> None:
    assert [(c.document_id, c.section) for c in retriever.data.chunks()] == [
        ("disc", "Spinal Discs"),
        ("knee", "Knee Cartilage"),
        ("knee", "Pain"),
        ("lung", "Lung Fibrosis"),
        ("skin", "Skin Aging"),
    ]
    assert retriever.data.chunk(2).text == "Knee pain fell after one injection."
    assert all(len(c.sentences) == 1 for c in retriever.data.chunks())


def test_dense_ranking(retriever: Retriever) -> None:
    # Hashing embedder: cosine of word counts over "title. section.\ntext". Only the knee
    # chunks share words with the query ("knee", "pain", "injection"); the rest score 0 and
    # follow in corpus order.
    hits = retriever.search("knee injection pain", k=5, mode="dense")
    assert [label(h) for h in hits] == [KNEE_PAIN, KNEE, DISC, LUNG, SKIN]
    assert hits[0].score == pytest.approx(0.8006, abs=1e-4)
    assert hits[1].score == pytest.approx(0.2981, abs=1e-4)
    assert [h.score for h in hits[2:]] == [0.0, 0.0, 0.0]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(h.dense_score == h.score for h in hits)


def test_bm25_ranking(retriever: Retriever) -> None:
    # Stemming makes "injection" match "Injected" and "injections" too; chunks without any
    # query term are not returned at all.
    hits = retriever.search("knee injection pain", k=5, mode="bm25")
    assert [label(h) for h in hits] == [KNEE_PAIN, KNEE, DISC]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 and h.bm25_score == h.score for h in hits)
    assert ranking(retriever, "injected knees", "bm25") == [KNEE_PAIN, KNEE, DISC]
    assert ranking(retriever, "zebra", "bm25") == []


def test_hybrid_is_reciprocal_rank_fusion(retriever: Retriever) -> None:
    # rrf_k = 60. "knee injection pain":
    #   dense  1 knee/Pain  2 knee  3 disc  4 lung  5 skin
    #   bm25   1 knee/Pain  2 knee  3 disc
    #   knee/Pain 1/61 + 1/61 = .032787   knee 1/62 + 1/62 = .032258   disc 1/63 + 1/63 = .031746
    #   lung 1/64 = .015625   skin 1/65 = .015385
    hits = retriever.search("knee injection pain", k=5, mode="hybrid")
    assert [label(h) for h in hits] == [KNEE_PAIN, KNEE, DISC, LUNG, SKIN]
    assert [h.score for h in hits] == pytest.approx([2 / 61, 2 / 62, 2 / 63, 1 / 64, 1 / 65])

    # "injected knees": the two rankings disagree.
    #   dense  1 knee (the only chunk with the word "injected")  2 knee/Pain  3 lung  4 skin
    #          5 disc (a hash collision gives it a negative cosine)
    #   bm25   1 knee/Pain (stems "inject", "knee" in a short chunk)  2 knee  3 disc
    #   knee 1/61 + 1/62 = knee/Pain 1/62 + 1/61 = .032523 (tie: corpus order)
    #   disc 1/65 + 1/63 = .031258   lung 1/63 = .015873   skin 1/64 = .015625
    dense = retriever.search("injected knees", k=5, mode="dense")
    assert [label(h) for h in dense] == [KNEE, KNEE_PAIN, LUNG, SKIN, DISC]
    assert dense[-1].score < 0
    hits = retriever.search("injected knees", k=5, mode="hybrid")
    assert [label(h) for h in hits] == [KNEE, KNEE_PAIN, DISC, LUNG, SKIN]
    assert [h.score for h in hits] == pytest.approx(
        [1 / 61 + 1 / 62, 1 / 62 + 1 / 61, 1 / 65 + 1 / 63, 1 / 63, 1 / 64]
    )
    # Each hit carries both underlying scores (None where a ranking did not list it).
    by_label = {label(h): h for h in hits}
    assert by_label[DISC].dense_score == pytest.approx(dense[-1].score)
    assert by_label[DISC].bm25_score is not None and by_label[DISC].bm25_score > 0
    assert by_label[LUNG].bm25_score is None  # it holds none of the words: not a BM25 candidate


def test_rrf_constant_comes_from_settings(tiny: tuple[Settings, Retriever]) -> None:
    settings, retriever = tiny
    other = Retriever(retriever.data, EMBEDDER, settings.model_copy(update={"rrf_k": 1}))
    hits = other.search("injected knees", k=3, mode="hybrid")
    assert [h.score for h in hits] == pytest.approx([1 / 2 + 1 / 3, 1 / 3 + 1 / 2, 1 / 6 + 1 / 4])


def test_document_filter(retriever: Retriever) -> None:
    for mode, expected in (("dense", [DISC, LUNG]), ("bm25", [DISC]), ("hybrid", [DISC, LUNG])):
        assert ranking(retriever, "knee injection pain", mode, document_ids=["lung", "disc"]) == (
            expected
        ), mode
    # Ranks are recomputed inside the filter: disc is first in both rankings.
    hits = retriever.search("knee injection pain", mode="hybrid", document_ids=["lung", "disc"])
    assert [h.score for h in hits] == pytest.approx([2 / 61, 1 / 62])
    # "knee" twice in the shorter chunk: knee/Pain first.
    assert ranking(retriever, "knee", "dense", document_ids=["knee"]) == [KNEE_PAIN, KNEE]
    # One id given as a string is that id, not its letters.
    assert ranking(retriever, "knee", "dense", document_ids="knee") == [KNEE_PAIN, KNEE]


def test_unknown_document_id(retriever: Retriever) -> None:
    with pytest.raises(UnknownDocumentError, match=r"unknown document id\(s\): nope, zz") as info:
        retriever.search("knee", document_ids=["knee", "zz", "nope"])
    assert sorted(info.value.unknown) == ["nope", "zz"]
    assert isinstance(info.value, ValueError)


def test_k_larger_than_the_corpus(retriever: Retriever) -> None:
    assert len(retriever.search("knee injection pain", k=50, mode="dense")) == 5
    assert len(retriever.search("knee injection pain", k=50, mode="hybrid")) == 5
    assert len(retriever.search("knee injection pain", k=50, mode="bm25")) == 3
    assert ranking(retriever, "knee injection pain", "hybrid", k=2) == [KNEE_PAIN, KNEE]


def test_bad_arguments(retriever: Retriever) -> None:
    with pytest.raises(ValueError, match="unknown mode 'fuzzy'"):
        retriever.search("knee", mode="fuzzy")
    with pytest.raises(ValueError, match="k must be at least 1"):
        retriever.search("knee", k=0)


def test_signals_and_term_weights(retriever: Retriever) -> None:
    result = retriever.run("knee injection pain zebra", k=3)
    assert result.mode == "hybrid"
    assert (result.signals.query_terms, result.signals.known_terms) == (4, 3)
    assert result.signals.dense_top == pytest.approx(result.hits[0].dense_score or 0)
    assert result.signals.bm25_top == pytest.approx(result.hits[0].bm25_score or 0)
    assert np.allclose(result.query_vector, EMBEDDER.embed(["knee injection pain zebra"])[0])
    # "knee" is in 2 of 5 chunks, "lung" in 1: rarer terms weigh more; unknown terms most.
    assert retriever.term_weight("lung") > retriever.term_weight("knee") > 0
    assert retriever.term_weight("zebra") == retriever.max_idf >= retriever.term_weight("lung")


# -- words and embeddings ----------------------------------------------------------------------


def test_tokenize() -> None:
    assert tokenize("What was the reoperation rate?") == ["reoper", "rate"]
    assert tokenize("Injected knees; injections") == ["inject", "knee", "inject"]
    assert words("bone marrow–derived MSCs") == [
        "bone",
        "marrow",
        "derived",
        "marrowderived",
        "mscs",
    ]
    # Possessive 's only at the end of a word (it used to be cut from inside: "oullivan").
    assert words("O'Sullivan's patients' data") == ["o'sullivan", "patients", "data"]
    # Greek letters are part of words: TGF-β1 is not just "tgf" and "1".
    assert words("TGF-β1 and IL-1α") == ["tgf", "β1", "tgfβ1", "and", "il", "1α", "il1α"]
    assert words("naïve") == ["naive"]


def test_hash_embedder() -> None:
    vectors = EMBEDDER.embed(["stem cells", "stem cells", "lung", "!!!"])
    assert vectors.shape == (4, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0)
    assert np.array_equal(vectors[0], vectors[1])
    assert not vectors[3].any()  # no words: a zero vector, not NaN
    assert EMBEDDER.embed([]).shape == (0, 256)
    assert HashEmbedder(64).embed(["x"]).shape == (1, 64)
    assert EMBEDDER.count_tokens("MSC-derived cells.") == 5
    seen: list[tuple[int, int]] = []
    EMBEDDER.embed(["a", "b"], progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 2)]


# -- the real model ----------------------------------------------------------------------------


@pytest.mark.model
def test_real_model_finds_the_reoperation_rate(real_engine: Any) -> None:
    outcome = real_engine.search(
        "What was the reoperation rate after MSC disc injection?", k=5, mode="hybrid"
    )
    top = outcome.hits[0]
    assert top.document.id == "zhang-2023"
    assert "7%" in top.chunk.text
    assert top.chunk.section == "Safety and Reoperation Rates: A Reassuring Profile"
