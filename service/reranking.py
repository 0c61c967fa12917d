"""Re-score the fused dense + BM25 candidates with a small learned linear ranker (mode ``rerank``).

Dense retrieval and BM25 each propose their best chunks; every proposed chunk is described by
the :data:`FEATURES` below (how well the chunk, its best sentence and its whole document match
the question, by meaning and by shared words) and scored ``w . (x - mean) / std``. The weights
are fitted by ``python -m service train-ranker`` on the development questions
(``eval/dev_questions.jsonl``), never on the test set the evaluation reports
(``eval/questions.jsonl``), and stored in ``service/ranker.json``.

Why a learned combination: RRF only sees ranks, so a chunk whose single best sentence answers
the question, or which belongs to the one article that matches the question as a whole, cannot
overtake a chunk that both retrievers rank moderately well. The document-level features carry
most of the gain (see README "Evaluation").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray[Any, np.dtype[np.float64]]

#: What each candidate chunk is described by (one column each, in this order).
FEATURES: tuple[str, ...] = (
    "dense",  # cosine of question and chunk
    "sentence",  # cosine of question and the chunk's best sentence
    "bm25_share",  # BM25 score / the best BM25 score among the candidates
    "bm25_log",  # log(1 + BM25 score)
    "overlap",  # IDF-weighted share of the question's words found in the chunk
    "doc_dense",  # best chunk cosine in the chunk's document (among the candidates)
    "doc_sentence",  # best sentence cosine in the chunk's document
    "dense_rank",  # 60 / (60 + rank in the dense ranking)
    "bm25_rank",  # 60 / (60 + rank in the BM25 ranking); 0 without a BM25 match
    "doc_dense_top2",  # mean cosine of the document's two best chunks
    "doc_bm25",  # best bm25_share in the document
    "doc_overlap",  # IDF-weighted share of the question's words found anywhere in the document
    "doc_dense_gap",  # doc_dense minus the best doc_dense of any document
    "doc_sentence_gap",  # doc_sentence minus the best doc_sentence of any document
)
RANK_CONSTANT = 60.0
DEFAULT_PATH = Path(__file__).with_name("ranker.json")


@dataclass(frozen=True)
class CandidateSignals:
    """Raw per-candidate evidence, one entry per candidate chunk."""

    rows: np.ndarray[Any, np.dtype[np.int64]]  # chunk rows
    documents: np.ndarray[Any, np.dtype[np.int64]]  # document number of each row
    dense: Array  # question-chunk cosine
    sentence: Array  # best question-sentence cosine
    bm25: Array  # BM25 score (0 when no word matches)
    dense_rank: Array  # 1-based rank in the dense ranking
    bm25_rank: Array  # 1-based rank in the BM25 ranking; 0 when unranked
    overlap: Array  # IDF-weighted share of question words in the chunk
    doc_overlap: Array  # the same over the whole document


def feature_matrix(s: CandidateSignals) -> Array:
    """The (candidates x FEATURES) matrix for one question."""
    n = len(s.rows)
    best_bm25 = float(s.bm25.max()) if n and s.bm25.max() > 0 else 1.0
    bm25_share = s.bm25 / best_bm25
    doc_dense = np.zeros(n)
    doc_sentence = np.zeros(n)
    doc_top2 = np.zeros(n)
    doc_bm25 = np.zeros(n)
    for doc in np.unique(s.documents):
        mine = s.documents == doc
        doc_dense[mine] = s.dense[mine].max()
        doc_sentence[mine] = s.sentence[mine].max()
        doc_top2[mine] = np.sort(s.dense[mine])[-2:].mean()
        doc_bm25[mine] = bm25_share[mine].max()
    columns = [
        s.dense,
        s.sentence,
        bm25_share,
        np.log1p(s.bm25),
        s.overlap,
        doc_dense,
        doc_sentence,
        RANK_CONSTANT / (RANK_CONSTANT + s.dense_rank),
        np.where(s.bm25_rank > 0, RANK_CONSTANT / (RANK_CONSTANT + s.bm25_rank), 0.0),
        doc_top2,
        doc_bm25,
        s.doc_overlap,
        doc_dense - (doc_dense.max() if n else 0.0),
        doc_sentence - (doc_sentence.max() if n else 0.0),
    ]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in columns]).reshape(
        n, len(FEATURES)
    )


class RankerFileError(ValueError):
    """The ranker weights file is missing, unreadable or for other features."""


@dataclass(frozen=True)
class LinearRanker:
    features: tuple[str, ...]
    mean: Array
    std: Array
    weights: Array
    info: dict[str, Any]  # how it was trained (questions file, its hash, model, figures)

    def score(self, matrix: Array) -> Array:
        scores: Array = ((matrix - self.mean) / self.std) @ self.weights
        return scores

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": [round(float(v), 8) for v in self.mean],
            "std": [round(float(v), 8) for v in self.std],
            "weights": [round(float(v), 8) for v in self.weights],
            "info": self.info,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> LinearRanker:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            features = tuple(raw["features"])
            arrays = [np.asarray(raw[k], dtype=np.float64) for k in ("mean", "std", "weights")]
            info = dict(raw.get("info", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RankerFileError(
                f"cannot read the ranker weights {path} ({exc}); "
                "retrain them with python -m service train-ranker"
            ) from None
        if features != FEATURES or any(a.shape != (len(FEATURES),) for a in arrays):
            raise RankerFileError(
                f"ranker weights {path} are for other features ({', '.join(features)}); "
                "retrain them with python -m service train-ranker"
            )
        if np.any(arrays[1] <= 0) or not all(np.all(np.isfinite(a)) for a in arrays):
            raise RankerFileError(f"ranker weights {path} hold non-finite or zero-spread values")
        return cls(features, arrays[0], arrays[1], arrays[2], info)


@dataclass(frozen=True)
class TrainingGroup:
    """One question's candidates and which of them are relevant."""

    matrix: Array
    relevant: np.ndarray[Any, np.dtype[np.bool_]]


def fit(
    groups: Sequence[TrainingGroup],
    *,
    l2: float = 0.1,
    iterations: int = 1500,
    learning_rate: float = 0.5,
    info: dict[str, Any] | None = None,
) -> LinearRanker:
    """Listwise logistic fit: per question, a softmax over its candidates should put its mass
    on the relevant ones. Deterministic (full-batch gradient descent from zero weights)."""
    usable = [g for g in groups if g.relevant.any() and len(g.matrix)]
    if not usable:
        raise ValueError("no training question has a relevant passage among its candidates")
    stacked = np.vstack([g.matrix for g in usable])
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0) + 1e-6
    standardised = [(g.matrix - mean) / std for g in usable]
    targets = [g.relevant / g.relevant.sum() for g in usable]
    weights = np.zeros(len(FEATURES))
    for _ in range(iterations):
        gradient = np.zeros(len(FEATURES))
        for x, target in zip(standardised, targets, strict=True):
            s = x @ weights
            p = np.exp(s - s.max())
            p /= p.sum()
            gradient += x.T @ (p - target)
        weights -= learning_rate * (gradient / len(usable) + l2 * weights)
    return LinearRanker(FEATURES, mean, std, weights, dict(info or {}))
