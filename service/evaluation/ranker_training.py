"""``python -m service train-ranker``: fit the rerank mode's weights on the development questions.

Trains on ``eval/dev_questions*.jsonl`` (550 in-scope questions written by separate sessions
without sight of the test set) and refuses the test set
``eval/questions.jsonl``: weights fitted on the questions the evaluation reports would
make its figures meaningless. Measure the result with ``python -m service eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.checksums import sha256_file
from service.evaluation.dataset import (
    Question,
    load_questions,
    passage_qrels,
)
from service.reranking import (
    LinearRanker,
    TrainingGroup,
    feature_matrix,
    fit,
)

L2 = 0.1
ITERATIONS = 1500


def training_groups(engine: Any, questions: list[Question]) -> list[TrainingGroup]:
    """Each in-scope question's rerank candidates, labelled relevant when the chunk is in a
    relevant document and holds an answer string (the evaluation's passage relevance)."""
    retriever = engine.retriever
    qrels = passage_qrels(questions, list(retriever.data.chunks()))
    groups = []
    for q in questions:
        if not q.in_scope:
            continue
        candidates = retriever.candidates(q.question)
        relevant = np.asarray(
            [retriever.data.chunk(int(r)).id in qrels[q.id] for r in candidates.rows], dtype=bool
        )
        groups.append(TrainingGroup(feature_matrix(candidates), relevant))
    return groups


def train(
    engine: Any, paths: Sequence[Path], l2: float = L2, iterations: int = ITERATIONS
) -> LinearRanker:
    groups = [g for path in paths for g in training_groups(engine, load_questions(path))]
    info = {
        "questions": [path.as_posix() for path in paths],
        "questions_sha256": [sha256_file(path) for path in paths],
        "in_scope_questions": len(groups),
        "with_relevant_candidate": sum(1 for g in groups if g.relevant.any()),
        "model": engine.settings.model,
        "encoder_backend": engine.settings.encoder_backend,
        "l2": l2,
        "iterations": iterations,
    }
    return fit(groups, l2=l2, iterations=iterations, info=info)
