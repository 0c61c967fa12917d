"""The learned ranker (mode ``rerank``): features, fitting, the weights file, retrieval with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, make_settings, write_tiny_corpus

from service.checksums import sha256_file
from service.config import SettingsError, load_settings
from service.embedding import HashEmbedder
from service.engine import Engine
from service.evaluation.dataset import DEV_QUESTIONS
from service.index_store import load_index
from service.ingest import build_index
from service.reranking import (
    DEFAULT_PATH,
    FEATURES,
    CandidateSignals,
    LinearRanker,
    RankerFileError,
    TrainingGroup,
    feature_matrix,
    fit,
)
from service.retrieval import Retriever

EMBEDDER = HashEmbedder()


def signals(**values: Any) -> CandidateSignals:
    base: dict[str, Any] = {
        "rows": np.asarray([0, 1, 2], dtype=np.int64),
        "documents": np.asarray([0, 0, 1], dtype=np.int64),
        "dense": np.asarray([0.5, 0.3, 0.4]),
        "sentence": np.asarray([0.6, 0.7, 0.2]),
        "bm25": np.asarray([2.0, 0.0, 4.0]),
        "dense_rank": np.asarray([1.0, 3.0, 2.0]),
        "bm25_rank": np.asarray([2.0, 0.0, 1.0]),
        "overlap": np.asarray([0.5, 0.0, 1.0]),
        "doc_overlap": np.asarray([0.5, 0.5, 1.0]),
    }
    base.update(values)
    return CandidateSignals(**base)


def column(matrix: np.ndarray, name: str) -> list[float]:
    return [round(float(v), 6) for v in matrix[:, FEATURES.index(name)]]


def test_feature_matrix_by_hand() -> None:
    m = feature_matrix(signals())
    assert m.shape == (3, len(FEATURES))
    assert column(m, "bm25_share") == [0.5, 0.0, 1.0]
    assert column(m, "doc_dense") == [0.5, 0.5, 0.4]  # best chunk of each document
    assert column(m, "doc_sentence") == [0.7, 0.7, 0.2]
    assert column(m, "doc_dense_top2") == [0.4, 0.4, 0.4]  # one chunk: its own cosine
    assert column(m, "doc_bm25") == [0.5, 0.5, 1.0]
    assert column(m, "doc_dense_gap") == [0.0, 0.0, -0.1]
    assert column(m, "doc_sentence_gap") == [0.0, 0.0, -0.5]
    assert column(m, "dense_rank") == [round(60 / 61, 6), round(60 / 63, 6), round(60 / 62, 6)]
    assert column(m, "bm25_rank") == [round(60 / 62, 6), 0.0, round(60 / 61, 6)]
    assert column(m, "bm25_log") == [round(float(np.log(3.0)), 6), 0.0, round(np.log(5.0), 6)]


def test_feature_matrix_without_any_bm25_match() -> None:
    m = feature_matrix(signals(bm25=np.zeros(3), bm25_rank=np.zeros(3)))
    assert column(m, "bm25_share") == [0.0, 0.0, 0.0]
    assert np.isfinite(m).all()


def test_feature_matrix_of_no_candidates() -> None:
    empty = {k: np.zeros(0) for k in CandidateSignals.__dataclass_fields__}
    empty["rows"] = empty["documents"] = np.zeros(0, dtype=np.int64)
    assert feature_matrix(CandidateSignals(**empty)).shape == (0, len(FEATURES))


def test_fit_learns_which_feature_marks_the_relevant_candidate() -> None:
    rng = np.random.default_rng(7)
    groups = []
    for _ in range(40):
        matrix = rng.normal(size=(10, len(FEATURES)))
        relevant = np.zeros(10, dtype=bool)
        best = int(np.argmax(matrix[:, 4]))  # feature 4 decides; the rest is noise
        relevant[best] = True
        groups.append(TrainingGroup(matrix, relevant))
    ranker = fit(groups, l2=0.01, iterations=300)
    assert int(np.argmax(ranker.weights)) == 4
    held_out = rng.normal(size=(10, len(FEATURES)))
    assert int(np.argmax(ranker.score(held_out))) == int(np.argmax(held_out[:, 4]))
    again = fit(groups, l2=0.01, iterations=300)
    assert np.array_equal(ranker.weights, again.weights)  # deterministic


def test_fit_refuses_groups_without_a_relevant_candidate() -> None:
    group = TrainingGroup(np.ones((3, len(FEATURES))), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="no training question"):
        fit([group])


def test_weights_file_round_trip(tmp_path: Path) -> None:
    ranker = LinearRanker.load()
    path = tmp_path / "r.json"
    ranker.save(path)
    again = LinearRanker.load(path)
    assert again.features == FEATURES
    assert np.allclose(again.weights, ranker.weights)
    assert np.allclose(again.std, ranker.std)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "cannot read"),
        ('{"features": ["dense"], "mean": [0], "std": [1], "weights": [1]}', "other features"),
        ("nan", "cannot read"),
    ],
)
def test_bad_weights_file_is_one_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "ranker.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RankerFileError, match=message) as info:
        LinearRanker.load(path)
    assert "train-ranker" in str(info.value)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    raw = json.loads(DEFAULT_PATH.read_text())
    raw["weights"][0] = float("nan")
    path = tmp_path / "ranker.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RankerFileError, match="non-finite"):
        LinearRanker.load(path)


def test_bad_ranker_path_is_rejected_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="QA_RANKER_PATH") as info:
        load_settings(ranker_path=tmp_path / "missing.json")
    assert "\n" not in str(info.value)


def test_shipped_weights_were_trained_on_the_development_set() -> None:
    ranker = LinearRanker.load(DEFAULT_PATH)
    assert ranker.info["questions"] == [p.as_posix() for p in DEV_QUESTIONS]
    assert ranker.info["questions_sha256"] == [sha256_file(ROOT / p) for p in DEV_QUESTIONS]
    assert "eval/questions.jsonl" not in ranker.info["questions"]


@pytest.fixture(scope="module")
def tiny_retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    settings = make_settings(tmp_path_factory.mktemp("tiny-rerank"))
    write_tiny_corpus(settings.corpus_dir)
    build_index(settings, EMBEDDER)
    return Retriever(load_index(settings.index_dir), EMBEDDER, settings, LinearRanker.load())


def test_rerank_orders_candidates_by_the_ranker_score(tiny_retriever: Retriever) -> None:
    result = tiny_retriever.run("knee cartilage stem cells", k=5, mode="rerank")
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert [h.rank for h in result.hits] == list(range(1, len(result.hits) + 1))
    assert result.hits[0].document.id == "knee"
    candidates = tiny_retriever.candidates("knee cartilage stem cells")
    expected = tiny_retriever.ranker.score(feature_matrix(candidates))  # type: ignore[union-attr]
    assert max(scores) == pytest.approx(float(expected.max()))


def test_rerank_respects_the_document_filter(tiny_retriever: Retriever) -> None:
    hits = tiny_retriever.search("stem cells", k=5, mode="rerank", document_ids=["lung"])
    assert hits and {h.document.id for h in hits} == {"lung"}


def test_rerank_candidates_include_bm25_only_chunks(tiny_retriever: Retriever) -> None:
    candidates = tiny_retriever.candidates("reoperation")
    assert len(candidates.rows) == len(tiny_retriever.data)
    chunks = list(tiny_retriever.data.chunks())
    disc = [i for i, r in enumerate(candidates.rows) if chunks[r].document_id == "disc"]
    assert candidates.bm25[disc[0]] > 0 and candidates.overlap[disc[0]] == pytest.approx(1.0)
    assert candidates.doc_overlap[disc[0]] == pytest.approx(1.0)


def test_engine_uses_the_configured_ranker(tmp_path: Path) -> None:
    ranker = LinearRanker.load()
    flipped = LinearRanker(ranker.features, ranker.mean, ranker.std, -ranker.weights, {})
    path = tmp_path / "flipped.json"
    flipped.save(path)
    settings = make_settings(tmp_path, ranker_path=path)
    write_tiny_corpus(settings.corpus_dir)
    engine, _ = Engine.start(settings, embedder=EMBEDDER)
    assert engine.ranker is not None
    assert np.allclose(engine.ranker.weights, -ranker.weights)
    assert engine.settings.default_mode == "rerank"
    assert engine.search("knee cartilage").mode == "rerank"


@pytest.mark.model
def test_retraining_reproduces_the_shipped_weights(real_engine: Any) -> None:
    """service/ranker.json is what train-ranker computes from the development questions."""
    from service.evaluation.ranker_training import train

    shipped = LinearRanker.load(DEFAULT_PATH)
    ranker = train(real_engine, [ROOT / p for p in DEV_QUESTIONS])
    assert ranker.info["in_scope_questions"] == shipped.info["in_scope_questions"]
    # The int8 encoder's vectors shift very slightly with batch composition, which can swap a
    # few dense ranks; the weights agree closely, not bit for bit.
    cosine = ranker.weights @ shipped.weights
    cosine /= np.linalg.norm(ranker.weights) * np.linalg.norm(shipped.weights)
    assert cosine > 0.995
    assert np.abs(ranker.weights - shipped.weights).max() < 0.1


def test_rerank_without_weights_says_it_ranked_like_hybrid(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    write_tiny_corpus(settings.corpus_dir)
    build_index(settings, EMBEDDER)
    plain = Retriever(load_index(settings.index_dir), EMBEDDER, settings)  # no ranker
    result = plain.run("knee cartilage", k=3, mode="rerank")
    assert result.mode == "hybrid"
    assert [h.chunk.id for h in result.hits] == [
        h.chunk.id for h in plain.run("knee cartilage", k=3, mode="hybrid").hits
    ]


def test_train_ranker_refuses_the_test_set(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    code = main(["train-ranker", "--questions", str(ROOT / "eval" / "questions.jsonl"), "-q"])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "test set" in err and "\n" not in err


def test_weights_for_another_model_are_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from service.engine import load_ranker

    with caplog.at_level("WARNING", logger="service.engine"):
        assert load_ranker(make_settings(tmp_path, model="hash")) is not None
    assert "fitted for model 'bundled', not 'hash'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="service.engine"):
        load_ranker(make_settings(tmp_path, model="bundled"))
    assert "fitted for model" not in caplog.text
