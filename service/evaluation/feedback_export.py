"""Rated answers as evaluation questions, and counts of the ratings
(``python -m service feedback export|stats``).

Each rating becomes one line in the format of ``eval/*.jsonl`` (:mod:`.dataset`), for a person
to complete before it joins a question set:

- ``id``: ``fb-<feedback id>``; ``question``: as the user asked it (cleaned by the API).
- ``kind``: what the rating suggests: a thumbs-up confirms the service's outcome (``answered``
  -> ``in_scope``, ``not_stated`` -> ``near_domain``, ``not_covered`` -> ``unrelated``); a
  thumbs-down on a refusal suggests the documents do answer it (``in_scope``), and on an answer
  it stays ``in_scope`` (a wrong answer, or one that should have been declined: check).
- ``relevant_docs`` and ``candidate_chunks``: the documents and passages the answer cited, in
  order (candidate labels, not checked); ``answers``: empty, for a person to fill in with short
  strings that appear verbatim in a relevant passage.
- ``feedback``: where it came from: the rating, comment, the service's outcome and answer, how
  a follow-up question was read in its conversation (``resolution``; a follow-up needs its
  context written into the question before it is used), when it was answered and rated, and
  the index build, reader and ranker that produced it.

``load_questions(path, require_answers=False)`` reads the file; with the default
``require_answers=True`` an in-scope question is refused until its answers are filled in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from service.answering import ANSWER_STATUSES
from service.feedback_store import RATINGS, FeedbackRow, FeedbackStore

#: The label a thumbs-up confirms, by the service's outcome.
CONFIRMED_KIND = {"answered": "in_scope", "not_stated": "near_domain", "not_covered": "unrelated"}


def suggested_kind(answer_status: str, rating: str) -> str:
    if rating == "up":
        return CONFIRMED_KIND.get(answer_status, "in_scope")
    return "in_scope"


def cited_ids(citations_json: str) -> tuple[list[str], list[str]]:
    """The ``document_id`` and ``chunk_id`` values anywhere in the stored citations, in order
    and without repeats (whatever the citations' shape: one entry per passage or per study)."""
    documents: dict[str, None] = {}
    chunks: dict[str, None] = {}

    def walk(value: Any) -> Iterator[tuple[str, str]]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("document_id", "chunk_id") and isinstance(item, str):
                    yield key, item
                else:
                    yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    try:
        parsed = json.loads(citations_json)
    except ValueError:
        return [], []
    for key, value in walk(parsed):
        (documents if key == "document_id" else chunks)[value] = None
    return list(documents), list(chunks)


@dataclass(frozen=True)
class FeedbackOrigin:
    feedback_id: int
    answer_id: str
    rating: str
    comment: str | None
    ratings: int
    answer_status: str
    answer: str
    #: how a follow-up in a conversation was read (the API's ``resolution``); None: on its own
    resolution: Any
    mode: str
    answered_at: str
    rated_at: str
    index_build: str
    index_built_at: str
    reader: str | None
    ranker: str | None


@dataclass(frozen=True)
class FeedbackQuestion:
    """One line of the export: an evaluation question record (see the module doc)."""

    id: str
    question: str
    kind: str
    style: None
    relevant_docs: list[str]
    answers: list[str]
    note: str
    candidate_chunks: list[str]
    feedback: FeedbackOrigin

    @classmethod
    def of(cls, row: FeedbackRow) -> FeedbackQuestion:
        documents, chunks = cited_ids(row.citations_json)
        return cls(
            id=f"fb-{row.id}",
            question=row.question,
            kind=suggested_kind(row.answer_status, row.rating),
            style=None,
            relevant_docs=documents,
            answers=[],
            note=f"from feedback: rated {row.rating}, service said {row.answer_status}; "
            "fill in answers and check kind and relevant_docs",
            candidate_chunks=chunks,
            feedback=FeedbackOrigin(
                feedback_id=row.id,
                answer_id=row.answer_id,
                rating=row.rating,
                comment=row.comment,
                ratings=row.ratings,
                answer_status=row.answer_status,
                answer=row.answer,
                resolution=json.loads(row.resolution_json) if row.resolution_json else None,
                mode=row.mode,
                answered_at=row.answered_at,
                rated_at=row.updated_at,
                index_build=row.index_build,
                index_built_at=row.index_built_at,
                reader=row.reader,
                ranker=row.ranker,
            ),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def write_questions(rows: Iterable[FeedbackRow], out: TextIO) -> int:
    """Write one question line per row; returns how many."""
    n = 0
    for row in rows:
        out.write(FeedbackQuestion.of(row).to_json() + "\n")
        n += 1
    return n


def format_stats(store: FeedbackStore) -> str:
    """Ratings by day (UTC) and by the answer's outcome, up and down."""
    total = store.count()
    lines = [f"{total} rated answers in {store.path}"]
    if total == 0:
        return lines[0]
    by_day = store.tally("day")
    by_outcome = store.tally("outcome")
    for title, counts, keys in (
        ("day", by_day, sorted(by_day)),
        ("outcome", by_outcome, [*ANSWER_STATUSES, *sorted(set(by_outcome) - {*ANSWER_STATUSES})]),
    ):
        lines += ["", f"{title:<12} {'up':>6} {'down':>6} {'total':>6}"]
        for key in keys:
            row = counts.get(key, dict.fromkeys(RATINGS, 0))
            lines.append(f"{key:<12} {row['up']:>6} {row['down']:>6} {sum(row.values()):>6}")
    return "\n".join(lines)
