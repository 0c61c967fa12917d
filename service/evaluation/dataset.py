"""The labelled question set, and relevance derived from it.

``eval/questions.jsonl`` holds one question per line: ``id``, ``question``, ``kind``
(``in_scope``, ``unrelated``, ``near_domain``), ``style``, ``relevant_docs`` and ``answers``
(short strings that appear verbatim in a relevant passage). A chunk is relevant to a question
when it belongs to a relevant document and contains one of the answer strings, so the labels
survive re-chunking. :func:`export_beir` writes the set in the BEIR layout (queries, corpus,
qrels) for standard IR tools.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.chunking import Chunk

KINDS = ("in_scope", "unrelated", "near_domain")


#: The test set: what ``python -m service eval`` reports. Nothing is fitted or calibrated on it.
TEST_QUESTIONS = Path("eval/questions.jsonl")
#: Development questions, written by separate sessions without sight of the test set: the
#: rerank weights are fitted (train-ranker) and the abstention threshold measured (calibrate)
#: on these.
DEV_QUESTIONS = (
    Path("eval/dev_questions.jsonl"),
    Path("eval/dev_questions_2.jsonl"),
    Path("eval/dev_questions_3.jsonl"),
    Path("eval/dev_questions_4.jsonl"),
)
#: Mostly near-domain questions (100 of 150), written to calibrate the reader's gate; never
#: trained on (see :func:`held_out`).
DEV_QUESTIONS_5 = Path("eval/dev_questions_5.jsonl")
#: A development question whose cosine with a test question reaches this (or that has the same
#: words) copies it and is left out of training and calibration (:func:`near_copies`).
NEAR_COPY_COSINE = 0.85


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    kind: str
    style: str | None
    relevant_docs: tuple[str, ...]
    answers: tuple[str, ...]
    #: near-domain questions: what the documents lack (cost, dose, other_condition, ...)
    subkind: str | None = None
    #: near-domain questions: the article whose topic the question touches ("general": none)
    topic_doc: str | None = None

    @property
    def in_scope(self) -> bool:
        return self.kind == "in_scope"


def load_questions(path: Path, *, require_answers: bool = True) -> list[Question]:
    """The questions of a JSONL file in this module's format. ``require_answers=False`` admits
    in-scope questions without relevant documents and answer strings (``eval/calibration.jsonl``
    labels only what is in scope)."""
    questions = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            q = Question(
                id=str(r["id"]),
                question=str(r["question"]),
                kind=str(r["kind"]),
                style=r.get("style"),
                relevant_docs=tuple(r.get("relevant_docs") or ()),
                answers=tuple(r.get("answers") or ()),
                subkind=r.get("subkind"),
                topic_doc=r.get("topic_doc"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a question record ({exc})") from None
        if q.kind not in KINDS:
            raise ValueError(f"{path}:{n}: kind must be one of {', '.join(KINDS)}")
        if require_answers and q.in_scope and (not q.relevant_docs or not q.answers):
            raise ValueError(f"{path}:{n}: in-scope question needs relevant_docs and answers")
        if q.id in seen:
            raise ValueError(f"{path}:{n}: duplicate id {q.id}")
        seen.add(q.id)
        questions.append(q)
    return questions


def normalize(text: str) -> str:
    """Compare answer strings ignoring case and runs of whitespace."""
    return " ".join(text.casefold().split())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    haystack = normalize(text)
    return any(normalize(a) in haystack for a in answers)


def passage_qrels(
    questions: Sequence[Question], chunks: Sequence[Chunk]
) -> dict[str, dict[str, int]]:
    """question id -> {chunk id: 1} for chunks that hold an answer in a relevant document."""
    qrels: dict[str, dict[str, int]] = {}
    for q in questions:
        if not q.in_scope:
            continue
        relevant = {
            c.id: 1
            for c in chunks
            if c.document_id in q.relevant_docs and contains_answer(c.text, q.answers)
        }
        qrels[q.id] = relevant
    return qrels


def document_qrels(questions: Sequence[Question]) -> dict[str, dict[str, int]]:
    return {q.id: {d: 1 for d in q.relevant_docs} for q in questions if q.in_scope}


def export_beir(
    questions: Sequence[Question], chunks: Sequence[Chunk], titles: dict[str, str], out: Path
) -> None:
    """Write ``queries.jsonl``, ``corpus.jsonl`` and ``qrels/test.tsv`` (BEIR layout)."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in questions:
            if q.in_scope:
                fh.write(json.dumps({"_id": q.id, "text": q.question}, ensure_ascii=False) + "\n")
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for c in chunks:
            record = {"_id": c.id, "title": titles.get(c.document_id, ""), "text": c.text}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in passage_qrels(questions, chunks).items():
            for cid, rel in sorted(rels.items()):
                fh.write(f"{qid}\t{cid}\t{rel}\n")


def held_out(path: Path, question: Question) -> bool:
    """Development questions kept out of the reader's training, to measure and calibrate it:
    all of ``eval/dev_questions_5.jsonl`` and a fixed fifth of the others (by a hash of the id,
    so the split does not move when questions are added)."""
    if path.name == DEV_QUESTIONS_5.name:
        return True
    return int(hashlib.sha256(question.id.encode()).hexdigest()[:8], 16) % 5 == 0


@dataclass(frozen=True)
class NearCopy:
    question_id: str
    copies: str  # the test question's id
    cosine: float


def near_copies(
    questions: Sequence[Question],
    references: Sequence[Question],
    embed: Callable[[str], npt.NDArray[np.float32]],
    threshold: float = NEAR_COPY_COSINE,
) -> list[NearCopy]:
    """The ``questions`` that copy one of the ``references`` (the test set): the same words
    once normalised, or a cosine of at least ``threshold``. Each question is embedded alone
    (``embed(text)`` -> unit vector), so the result does not depend on batching."""
    if not questions or not references:
        return []
    reference_vectors = np.stack([embed(r.question) for r in references])
    reference_text = {normalize(r.question): r.id for r in references}
    found = []
    for q in questions:
        same = reference_text.get(normalize(q.question))
        cosines = reference_vectors @ embed(q.question)
        best = int(np.argmax(cosines))
        if same is not None:
            found.append(NearCopy(q.id, same, 1.0))
        elif cosines[best] >= threshold:
            found.append(NearCopy(q.id, references[best].id, round(float(cosines[best]), 4)))
    return found
