"""Run the question set against the service, in-process or over HTTP, and compute metrics.

Retrieval metrics come from ranx (a maintained IR evaluation library): document-level Hit@1/3/5
(``hit_rate@k``: at least one relevant document among the first k distinct documents) and
passage-level Recall@5/10, MRR@10 and nDCG@10. Answer metrics check the composed answer; the
abstention metrics check the out-of-scope questions and the risk-coverage trade-off.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from service.api.schemas import PassageOut
from service.chunking import Chunk, Span
from service.evaluation.dataset import (
    Question,
    contains_answer,
    document_qrels,
    passage_qrels,
)

MODES = ("bm25", "dense", "hybrid", "rerank")
#: The mode the quality gate and the targets apply to: the service's default.
GATE_MODE = "rerank"
RETRIEVAL_DEPTH = 10
ANSWER_TOP_K = 5
RETRIEVAL_METRICS = ("hit@1", "hit@3", "hit@5", "recall@5", "recall@10", "mrr@10", "ndcg@10")

# Quality targets for the default (rerank) mode (issue: "Retrieval evaluation suite"). Not all
# are met yet by the bundled all-MiniLM-L6-v2; see README "Evaluation".
TARGETS = {
    "hit@1": 0.90,
    "recall@5": 0.90,
    "answer_contains": 0.85,
    # The reader issue: near-domain questions declined (not_stated or not_covered).
    "near_domain_abstained": 0.80,
}
# What the gate enforces today (tests/evaluation/test_eval_gate.py): the targets that hold, and
# for the others a floor just under the measured value, so no change can make quality worse
# unnoticed. Raise these as retrieval improves; never lower them to make a change pass.
FLOORS = {
    "hit@1": 0.85,  # measured 0.866 (rerank; hybrid 0.866), on an index built from nothing
    "recall@5": 0.78,  # measured 0.801 (hybrid 0.708)
    "answer_contains": 0.61,  # measured 0.630 (hybrid 0.630)
    "cites_relevant": 0.89,  # measured 0.913 (hybrid 0.882)
    "near_domain_abstained": 0.30,  # measured 0.333 (24 of 72) with the reader (0 without)
}
GATE_MAX_UNRELATED_ANSWERED = 0
GATE_MAX_IN_SCOPE_ABSTAINED = 0.02


@dataclass(frozen=True)
class Asked:
    answer: str
    cited_documents: tuple[str, ...]
    status: str  # answered, not_stated, not_covered
    coverage: float
    answerability: float | None = None  # the reader's, when it read the candidates

    @property
    def abstained(self) -> bool:
        return self.status != "answered"


class Backend(Protocol):
    name: str

    def chunks(self) -> list[Chunk]: ...

    def search(self, question: str, k: int, mode: str) -> list[PassageOut]: ...

    def ask(self, question: str, k: int, mode: str) -> Asked: ...


class EngineBackend:
    """The service's engine, in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.name = "in-process"

    def chunks(self) -> list[Chunk]:
        return list(self.engine.data.chunks())

    def search(self, question: str, k: int, mode: str) -> list[PassageOut]:
        hits = self.engine.search(question, k, mode).hits
        return [PassageOut.from_hit(h) for h in hits]

    def ask(self, question: str, k: int, mode: str) -> Asked:
        a = self.engine.ask(question, k, mode)
        cited = tuple(c.document.id for c in a.citations)
        reading = a.reading.answerability if a.reading else None
        return Asked(a.text, cited, a.status, a.coverage.score, reading)


class HttpBackend:
    """A running server, over its public HTTP API (``--url``)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.name = self.base

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            headers={"content-type": "application/json"} if data else {},
            method="POST" if data else "GET",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"{self.base}{path} answered {exc.code}: {exc.read()[:200]!r}"
            ) from None
        except urllib.error.URLError as exc:
            raise RuntimeError(
                f"cannot reach {self.base} ({exc.reason}); is the server running?"
            ) from None

    def chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        for summary in self._call("/api/documents")["documents"]:
            doc = self._call(f"/api/documents/{summary['id']}")
            for n, c in enumerate(doc["chunks"]):
                text = doc["text"][c["start"] : c["end"]]
                out.append(
                    Chunk(
                        c["chunk_id"],
                        doc["id"],
                        n,
                        c["section"],
                        text,
                        c["start"],
                        c["end"],
                        (Span(c["start"], c["end"]),),
                    )
                )
        return out

    def search(self, question: str, k: int, mode: str) -> list[PassageOut]:
        query = urllib.parse.urlencode({"q": question, "top_k": k, "mode": mode})
        results = self._call(f"/api/search?{query}")["results"]
        return [PassageOut.model_validate(r) for r in results]

    def ask(self, question: str, k: int, mode: str) -> Asked:
        r = self._call("/api/ask", {"question": question, "top_k": k, "mode": mode})
        cited = tuple(dict.fromkeys(c["document_id"] for c in r["citations"]))
        status = r.get("answer_status") or ("not_covered" if r["abstained"] else "answered")
        reading = (r.get("reader") or {}).get("answerability")
        return Asked(r["answer"], cited, status, float(r["coverage"]["score"]), reading)


@dataclass
class QuestionResult:
    id: str
    kind: str
    style: str | None
    question: str
    relevant_docs: list[str]
    retrieved_docs: list[str]
    first_relevant_passage_rank: int | None
    relevant_passages: int
    status: str
    coverage: float
    answerability: float | None
    answer_contains: bool | None
    cites_relevant: bool | None
    answer: str
    subkind: str | None = None

    @property
    def abstained(self) -> bool:
        return self.status != "answered"


@dataclass
class ModeResult:
    mode: str
    retrieval: dict[str, float]
    answer: dict[str, float]
    abstention: dict[str, float]
    risk_coverage: list[dict[str, float]]
    questions: list[QuestionResult] = field(default_factory=list)
    #: near-domain questions by what the documents lack: {subkind: {questions, declined}}
    near_domain_by_subkind: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the reader's answerability AUROC, in-scope vs near-domain and vs unrelated (None: off)
    reader: dict[str, float | None] = field(default_factory=dict)


@dataclass
class EvalResult:
    backend: str
    questions_file: str
    counts: dict[str, int]
    modes: dict[str, ModeResult]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_question: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not per_question:
            for mode in data["modes"].values():
                mode.pop("questions", None)
        return data


def retrieval_metrics(
    doc_qrels: dict[str, dict[str, int]],
    doc_run: dict[str, dict[str, float]],
    passage_qrels_: dict[str, dict[str, int]],
    passage_run: dict[str, dict[str, float]],
) -> dict[str, float]:
    """Document-level hit@k and passage-level recall/MRR/nDCG, computed by ranx."""
    from ranx import Qrels, Run, evaluate

    doc_scores = evaluate(
        Qrels(doc_qrels),
        Run(doc_run),
        ["hit_rate@1", "hit_rate@3", "hit_rate@5"],
        make_comparable=True,
    )
    passage_scores = evaluate(
        Qrels(passage_qrels_),
        Run(passage_run),
        ["recall@5", "recall@10", "mrr@10", "ndcg@10"],
        make_comparable=True,
    )
    out = {f"hit@{k}": float(doc_scores[f"hit_rate@{k}"]) for k in (1, 3, 5)}
    out.update({name: float(value) for name, value in passage_scores.items()})
    return out


def _doc_ranking(passages: Sequence[PassageOut]) -> dict[str, float]:
    """Documents in order of their first passage, scored so ranx keeps that order."""
    order = list(dict.fromkeys(p.document_id for p in passages))
    return {doc: float(len(order) - i) for i, doc in enumerate(order)}


def _passage_ranking(passages: Sequence[PassageOut]) -> dict[str, float]:
    return {p.chunk_id: float(len(passages) - i) for i, p in enumerate(passages)}


def risk_coverage(points: Sequence[tuple[float, bool]]) -> list[dict[str, float]]:
    """For each threshold: share of questions answered, and share of those answered wrongly.

    ``points`` are (coverage score, correct-if-answered) pairs; an out-of-scope question is
    never correct when answered.
    """
    thresholds = sorted({round(s, 4) for s, _ in points} | {0.0})
    curve = []
    for t in thresholds:
        answered = [ok for s, ok in points if s >= t]
        if not answered:
            continue
        curve.append(
            {
                "threshold": t,
                "coverage": len(answered) / len(points),
                "risk": sum(1 for ok in answered if not ok) / len(answered),
            }
        )
    return curve


def evaluate_mode(
    backend: Backend,
    questions: Sequence[Question],
    chunks: Sequence[Chunk],
    mode: str,
    progress: Callable[[str, int, int], None] | None = None,
) -> ModeResult:
    in_scope = [q for q in questions if q.in_scope]
    p_qrels = passage_qrels(in_scope, chunks)
    d_qrels = document_qrels(in_scope)
    doc_run: dict[str, dict[str, float]] = {}
    passage_run: dict[str, dict[str, float]] = {}
    results: list[QuestionResult] = []
    for n, q in enumerate(questions, start=1):
        asked = backend.ask(q.question, ANSWER_TOP_K, mode)
        retrieved: list[PassageOut] = []
        first_rank = None
        if q.in_scope:
            retrieved = backend.search(q.question, RETRIEVAL_DEPTH, mode)
            doc_run[q.id] = _doc_ranking(retrieved) or {"-": 0.0}
            passage_run[q.id] = _passage_ranking(retrieved) or {"-": 0.0}
            relevant = p_qrels.get(q.id, {})
            first_rank = next(
                (i for i, p in enumerate(retrieved, start=1) if p.chunk_id in relevant), None
            )
        results.append(
            QuestionResult(
                id=q.id,
                kind=q.kind,
                style=q.style,
                question=q.question,
                relevant_docs=list(q.relevant_docs),
                retrieved_docs=list(dict.fromkeys(p.document_id for p in retrieved))[:5],
                first_relevant_passage_rank=first_rank,
                relevant_passages=len(p_qrels.get(q.id, {})),
                status=asked.status,
                coverage=asked.coverage,
                answerability=asked.answerability,
                answer_contains=(
                    (not asked.abstained and contains_answer(asked.answer, q.answers))
                    if q.in_scope
                    else None
                ),
                cites_relevant=(
                    bool(set(asked.cited_documents) & set(q.relevant_docs)) if q.in_scope else None
                ),
                answer=asked.answer,
                subkind=q.subkind,
            )
        )
        if progress:
            progress(f"evaluating {mode}", n, len(questions))
    retrieval = retrieval_metrics(d_qrels, doc_run, p_qrels, passage_run)
    inside = [r for r in results if r.kind == "in_scope"]
    unrelated = [r for r in results if r.kind == "unrelated"]
    near = [r for r in results if r.kind == "near_domain"]
    answer = {
        "answer_contains": sum(bool(r.answer_contains) for r in inside) / max(1, len(inside)),
        "cites_relevant": sum(bool(r.cites_relevant) for r in inside) / max(1, len(inside)),
    }
    abstention = {
        "in_scope_abstained": sum(r.abstained for r in inside) / max(1, len(inside)),
        "in_scope_abstained_count": float(sum(r.abstained for r in inside)),
        "unrelated_abstained": sum(r.abstained for r in unrelated) / max(1, len(unrelated)),
        "unrelated_answered_count": float(sum(not r.abstained for r in unrelated)),
        "near_domain_abstained": sum(r.abstained for r in near) / max(1, len(near)),
        "near_domain_answered_count": float(sum(not r.abstained for r in near)),
        "near_domain_not_stated": sum(r.status == "not_stated" for r in near) / max(1, len(near)),
        "near_domain_not_covered": sum(r.status == "not_covered" for r in near) / max(1, len(near)),
    }
    curve = risk_coverage(
        [(r.coverage, bool(r.answer_contains) if r.kind == "in_scope" else False) for r in results]
    )
    by_subkind: dict[str, dict[str, float]] = {}
    for r in near:
        row = by_subkind.setdefault(r.subkind or "unlabelled", {"questions": 0, "declined": 0})
        row["questions"] += 1
        row["declined"] += r.abstained
    return ModeResult(
        mode,
        retrieval,
        answer,
        abstention,
        curve,
        results,
        near_domain_by_subkind=dict(sorted(by_subkind.items())),
        reader=_reader_auroc(inside, near, unrelated),
    )


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance a positive scores above a negative (ties half)."""
    if not positive or not negative:
        return None
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _reader_auroc(
    inside: Sequence[QuestionResult],
    near: Sequence[QuestionResult],
    unrelated: Sequence[QuestionResult],
) -> dict[str, float | None]:
    """How well the reader's answerability separates in-scope from out-of-scope questions, over
    the questions it read (a not_covered answer is decided before the reader)."""

    def scores(rows: Sequence[QuestionResult]) -> list[float]:
        return [r.answerability for r in rows if r.answerability is not None]

    if not scores(inside):
        return {}
    return {
        "auroc_near_domain": auroc(scores(inside), scores(near)),
        "auroc_unrelated": auroc(scores(inside), scores(unrelated)),
    }


def run_evaluation(
    backend: Backend,
    questions: Sequence[Question],
    modes: Sequence[str] = MODES,
    questions_file: str = "",
    progress: Callable[[str, int, int], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> EvalResult:
    started = time.perf_counter()
    chunks = backend.chunks()
    counts = {
        "in_scope": sum(q.kind == "in_scope" for q in questions),
        "unrelated": sum(q.kind == "unrelated" for q in questions),
        "near_domain": sum(q.kind == "near_domain" for q in questions),
        "chunks": len(chunks),
        "in_scope_without_relevant_passage": sum(
            1 for rels in passage_qrels(questions, chunks).values() if not rels
        ),
    }
    results = {m: evaluate_mode(backend, questions, chunks, m, progress) for m in modes}
    return EvalResult(
        backend=backend.name,
        questions_file=questions_file,
        counts=counts,
        modes=results,
        seconds=round(time.perf_counter() - started, 2),
        settings=settings or {},
    )


def target_misses(result: EvalResult, mode: str = GATE_MODE) -> list[str]:
    """Quality targets not met yet (reported, not enforced)."""
    m = result.modes[mode]
    values = {**m.retrieval, **m.answer, **m.abstention}
    return [
        f"{mode} {metric} = {values[metric]:.3f} (target {target})"
        for metric, target in TARGETS.items()
        if values[metric] < target
    ]


def gate_failures(result: EvalResult, mode: str = GATE_MODE) -> list[str]:
    """What the quality gate refuses (empty when it passes)."""
    m = result.modes[mode]
    failures = []
    values = {**m.retrieval, **m.answer, **m.abstention}
    for metric, floor in FLOORS.items():
        value = values.get(metric)
        if value is None or value < floor:
            failures.append(f"{mode} {metric} = {value:.3f} < {floor}")
    if m.abstention["unrelated_answered_count"] > GATE_MAX_UNRELATED_ANSWERED:
        failures.append(
            f"{int(m.abstention['unrelated_answered_count'])} unrelated questions answered"
        )
    if m.abstention["in_scope_abstained"] > GATE_MAX_IN_SCOPE_ABSTAINED:
        failures.append(
            f"{m.abstention['in_scope_abstained']:.1%} of in-scope questions abstained "
            f"(> {GATE_MAX_IN_SCOPE_ABSTAINED:.0%})"
        )
    return failures
