"""``python -m service train-ranker``: fit the rerank mode's weights on the development questions.

Trains on ``eval/dev_questions*.jsonl`` (550 in-scope questions written by separate sessions
without sight of the test set) and refuses the test set
``eval/questions.jsonl``: weights fitted on the questions the evaluation reports would
make its figures meaningless. Measure the result with ``python -m service eval``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.evaluation.dataset import (
    DEV_QUESTIONS,
    TEST_QUESTIONS,
    Question,
    load_questions,
    passage_qrels,
)
from service.index_store import sha256_file
from service.reranking import (
    DEFAULT_PATH,
    LinearRanker,
    TrainingGroup,
    feature_matrix,
    fit,
)

_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when run from a checkout
L2 = 0.1
ITERATIONS = 1500


def training_groups(engine: Any, questions: list[Question]) -> list[TrainingGroup]:
    """Each in-scope question's rerank candidates, labelled relevant when the chunk is in a
    relevant document and holds an answer string (the evaluation's passage relevance)."""
    retriever = engine.retriever
    qrels = passage_qrels(questions, retriever.data.chunks)
    groups = []
    for q in questions:
        if not q.in_scope:
            continue
        candidates = retriever.candidates(q.question)
        relevant = np.asarray(
            [retriever.data.chunks[int(r)].id in qrels[q.id] for r in candidates.rows], dtype=bool
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


def register(sub: Any) -> None:
    from service.cli import add_common_options

    p = sub.add_parser(
        "train-ranker", help="fit the rerank mode's weights on the development questions"
    )
    p.add_argument(
        "--questions",
        action="append",
        help="labelled development questions (JSONL); repeatable. Default: "
        + " and ".join(p.as_posix() for p in DEV_QUESTIONS),
    )
    p.add_argument("--out", default=str(DEFAULT_PATH), help="where to write the weights (JSON)")
    p.add_argument("--l2", type=float, default=L2, help="weight decay")
    add_common_options(p)
    p.set_defaults(func=cmd_train_ranker)


def cmd_train_ranker(args: argparse.Namespace) -> int:
    from service.cli import CliError, Progress, _engine

    progress = Progress(args.quiet)
    paths = [Path(p) for p in args.questions] if args.questions else list(DEV_QUESTIONS)
    for path in paths:
        if not path.is_file():
            raise CliError(f"question file {path} not found; pass --questions PATH")
        if path.resolve() in {TEST_QUESTIONS.resolve(), (_CHECKOUT / TEST_QUESTIONS).resolve()}:
            raise CliError(
                f"{path} is the test set the evaluation reports; train on the development "
                "questions (eval/dev_questions*.jsonl) instead"
            )
    if not 0.0 <= args.l2 <= 100.0:
        raise CliError("--l2 must be between 0 and 100")
    engine = _engine(args, progress, reader=False)
    progress.say(f"training on {', '.join(p.as_posix() for p in paths)} ...")
    ranker = train(engine, paths, l2=args.l2)
    out = Path(args.out)
    try:
        ranker.save(out)
    except OSError as exc:
        raise CliError(f"cannot write {out} ({exc.strerror or exc})") from None
    info = ranker.info
    print(
        f"trained on {info['in_scope_questions']} in-scope questions "
        f"({info['with_relevant_candidate']} with a relevant candidate); wrote {out}"
    )
    for name, weight in sorted(
        zip(ranker.features, ranker.weights, strict=True), key=lambda item: -abs(item[1])
    ):
        print(f"  {name:18s} {weight:+.3f}")
    print("measure it: python -m service eval")
    return 0
