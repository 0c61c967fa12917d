"""Evaluation: metric arithmetic checked by hand, and the quality gate on the real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.chunking import Chunk, Span
from service.evaluation.dataset import (
    Question,
    contains_answer,
    export_beir,
    load_questions,
    passage_qrels,
)
from service.evaluation.report import format_markdown, format_table, write_outputs
from service.evaluation.runner import (
    FLOORS,
    GATE_MAX_IN_SCOPE_ABSTAINED,
    GATE_MODE,
    EngineBackend,
    HttpBackend,
    gate_failures,
    retrieval_metrics,
    risk_coverage,
    run_evaluation,
)

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "eval" / "questions.jsonl"


def test_metrics_match_hand_computed_values() -> None:
    doc_qrels = {"q1": {"A": 1}, "q2": {"B": 1}}
    doc_run = {"q1": {"A": 3.0, "B": 2.0}, "q2": {"A": 3.0, "C": 2.0, "B": 1.0}}
    passage_qrels_ = {"q1": {"a1": 1, "a2": 1}, "q2": {"b1": 1}}
    passage_run = {
        # q1: relevant at ranks 1 and 3 of 6
        "q1": {"a1": 6.0, "x": 5.0, "a2": 4.0, "y": 3.0, "z": 2.0, "w": 1.0},
        # q2: relevant at rank 6
        "q2": {"x": 6.0, "y": 5.0, "z": 4.0, "w": 3.0, "v": 2.0, "b1": 1.0},
    }
    m = retrieval_metrics(doc_qrels, doc_run, passage_qrels_, passage_run)
    # hit@1: q1 yes (A first), q2 no (A first, B third) -> 1/2; hit@3: both -> 1.
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["hit@3"] == pytest.approx(1.0)
    # recall@5: q1 2/2, q2 0/1 -> 0.5; recall@10: q1 1, q2 1 -> 1.
    assert m["recall@5"] == pytest.approx(0.5)
    assert m["recall@10"] == pytest.approx(1.0)
    # MRR@10: q1 1/1, q2 1/6 -> (1 + 1/6) / 2 = 0.58333
    assert m["mrr@10"] == pytest.approx((1 + 1 / 6) / 2)
    # nDCG@10 q1: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.63093 -> 0.91972
    # nDCG@10 q2: DCG = 1/log2(7) = 0.35621; IDCG = 1 -> 0.35621; mean 0.63797
    assert m["ndcg@10"] == pytest.approx((1.5 / (1 + 1 / 1.5849625) + 1 / 2.8073549) / 2, 1e-4)


def test_risk_coverage_by_hand() -> None:
    # Scores and whether answering would be right: two right, one wrong (out of scope).
    curve = risk_coverage([(0.9, True), (0.5, False), (0.2, True)])
    by_threshold = {p["threshold"]: p for p in curve}
    assert by_threshold[0.0]["coverage"] == 1.0
    assert by_threshold[0.0]["risk"] == pytest.approx(1 / 3)
    assert by_threshold[0.5]["coverage"] == pytest.approx(2 / 3)
    assert by_threshold[0.5]["risk"] == pytest.approx(1 / 2)
    assert by_threshold[0.9]["risk"] == 0.0


def test_relevance_comes_from_answer_strings() -> None:
    q = Question("q1", "rate?", "in_scope", "factoid", ("d1",), ("around 7%",))
    chunks = [
        Chunk("d1:a", "d1", 0, "S", "The rate was around 7%.", 0, 23, (Span(0, 23),)),
        Chunk("d1:b", "d1", 1, "S", "Nothing here.", 24, 37, (Span(24, 37),)),
        Chunk("d2:a", "d2", 0, "S", "Elsewhere: around 7%.", 0, 21, (Span(0, 21),)),
    ]
    assert passage_qrels([q], chunks) == {"q1": {"d1:a": 1}}
    assert contains_answer("AROUND  7%", ["around 7%"])


def test_question_set_is_complete() -> None:
    questions = load_questions(QUESTIONS)
    in_scope = [q for q in questions if q.in_scope]
    assert len(in_scope) >= 80
    assert sum(q.kind != "in_scope" for q in questions) >= 25
    assert {q.kind for q in questions} == {"in_scope", "unrelated", "near_domain"}
    docs = {d for q in in_scope for d in q.relevant_docs}
    assert docs == {p.stem for p in (ROOT / "corpus").glob("*.md")}
    assert any(len(q.relevant_docs) > 1 for q in in_scope)


def test_beir_export(tmp_path: Path) -> None:
    q = Question("q1", "rate?", "in_scope", "factoid", ("d1",), ("7%",))
    chunk = Chunk("d1:a", "d1", 0, "S", "about 7%", 0, 8, (Span(0, 8),))
    export_beir([q], [chunk], {"d1": "Doc one"}, tmp_path)
    assert json.loads((tmp_path / "queries.jsonl").read_text()) == {"_id": "q1", "text": "rate?"}
    corpus = json.loads((tmp_path / "corpus.jsonl").read_text())
    assert corpus == {"_id": "d1:a", "title": "Doc one", "text": "about 7%"}
    assert (tmp_path / "qrels" / "test.tsv").read_text().splitlines() == [
        "query-id\tcorpus-id\tscore",
        "q1\td1:a\t1",
    ]


@pytest.fixture(scope="module")
def evaluation(real_engine: Any) -> Any:
    return run_evaluation(EngineBackend(real_engine), load_questions(QUESTIONS))


@pytest.mark.model
def test_quality_gate(evaluation: Any) -> None:
    served = evaluation.modes[GATE_MODE]
    assert served.abstention["unrelated_answered_count"] == 0
    assert served.abstention["in_scope_abstained"] <= GATE_MAX_IN_SCOPE_ABSTAINED
    values = {**served.retrieval, **served.answer, **served.abstention}
    for metric, floor in FLOORS.items():
        assert values[metric] >= floor, f"{metric} {values[metric]:.3f} < {floor}"
    assert gate_failures(evaluation) == []


@pytest.mark.model
def test_reports_are_written(evaluation: Any, tmp_path: Path) -> None:
    written = write_outputs(evaluation, tmp_path)
    names = {p.name for p in written}
    assert names == {"latest.json", "latest.md", "metrics_by_mode.png", "risk_coverage.png"}
    data = json.loads((tmp_path / "latest.json").read_text())
    assert set(data["modes"]) == {"bm25", "dense", "hybrid", "rerank"}
    assert "hit@1" in format_table(evaluation)
    assert "| metric |" in format_markdown(evaluation)
    assert (tmp_path / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.model
def test_over_http_the_numbers_are_identical(
    evaluation: Any, real_settings: Any, real_engine: Any
) -> None:
    """``eval --url`` measures a running server through its public API with the same result."""
    from conftest import serving

    from service.api.app import create_app

    with serving(create_app(real_settings, engine=real_engine)) as url:
        over_http = run_evaluation(HttpBackend(url), load_questions(QUESTIONS))
    assert over_http.backend == url
    assert set(over_http.modes) == set(evaluation.modes)
    for mode, local in evaluation.modes.items():
        remote = over_http.modes[mode]
        assert remote.retrieval == local.retrieval, mode
        assert remote.answer == local.answer, mode
        assert remote.abstention == local.abstention, mode


def test_recommended_threshold_is_mid_gap() -> None:
    from service.evaluation.calibration import Scored, recommend

    def rows(inside: list[float], outside: list[float]) -> list[Scored]:
        return [Scored("q", True, c) for c in inside] + [Scored("q", False, c) for c in outside]

    assert recommend(rows([0.4, 0.9], [0.0, 0.2])) == 0.3  # separable: middle of the gap
    # One in-scope outlier below the out-of-scope maximum: the fewest errors (one), in the
    # widest gap between neighbouring scores (0.2 .. 0.4), not on top of a question's score.
    assert recommend(rows([0.1, 0.4, 0.41, 0.9], [0.0, 0.2])) == 0.3
    # Answering an out-of-scope question costs twice as much as abstaining on an in-scope one.
    assert recommend(rows([0.3, 0.35, 0.9], [0.0, 0.32])) == 0.335


def test_recommended_reader_threshold_keeps_in_scope_answers() -> None:
    from service.evaluation.calibration import Scored, reader_errors_at, recommend_reader

    inside = [Scored("q", True, 0.9, "in_scope", a) for a in (0.2, *([0.9] * 98), 0.95)]
    near = [Scored("q", False, 0.9, "near_domain", a) for a in (0.05, 0.1, 0.5, 0.92)]
    points = inside + near
    # 100 in-scope questions may lose 2: the threshold sits halfway between the 2nd and 3rd
    # lowest in-scope scores (0.9 and 0.9), so none of the 98 at 0.9 is declined.
    assert recommend_reader(points) == 0.9
    errors = reader_errors_at(points, 0.9)
    assert errors["in_scope_declined"] == 1 and errors["near_domain_declined"] == 3
    assert recommend_reader(points, max_declined=0.0) == 0.1  # halfway from 0 to 0.2
    with pytest.raises(ValueError, match="in-scope"):
        recommend_reader(near)
