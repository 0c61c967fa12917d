"""Choose the abstention thresholds from labelled questions (never the test set).

Two thresholds, one per refusal:

- **Coverage** (``QA_ABSTAIN_THRESHOLD``, "not covered"): each question's coverage score (see
  :func:`service.answering.coverage`) for in-scope vs unrelated questions; near-domain questions
  are left out, since retrieval signals cannot tell them from answerable ones. The recommended
  threshold is the middle of the widest gap between the two groups when they separate cleanly,
  otherwise the threshold with the fewest errors (answering an out-of-scope question counts as
  twice as bad as abstaining on an in-scope one).
- **Reader answerability** (``QA_READER_THRESHOLD``, "not stated"): over the questions that pass
  the coverage check, the reader's probability that a candidate answers, for in-scope vs
  near-domain and unrelated questions. The report is the risk-coverage trade-off for each
  threshold; the recommended one is the highest that still answers at least
  ``1 - READER_MAX_DECLINED`` of the in-scope questions (halfway to the next score down, so it
  does not sit on a question's score). Questions the shipped reader was trained on are left out
  (a reader trained with ``--with-dev`` is calibrated on the held-out fifth and
  ``eval/dev_questions_5.jsonl`` only).

Rows are the evaluation's JSONL question format (``kind``: ``in_scope``, ``unrelated``,
``near_domain``; answers may be left out). Development questions that copy a test question
(:func:`service.evaluation.dataset.near_copies`) are left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from service.engine import Engine

#: The share of in-scope questions the recommended reader threshold may decline (2 %, under the
#: project's 3 % target, so that a new question set has room).
READER_MAX_DECLINED = 0.02


@dataclass(frozen=True)
class Labelled:
    question: str
    kind: str  # in_scope, unrelated, near_domain
    id: str | None = None
    held_out: bool = True  # not trained on by a reader trained with --with-dev


@dataclass(frozen=True)
class Scored:
    question: str
    in_scope: bool
    coverage: float
    kind: str = ""
    answerability: float | None = None  # None: the reader did not read it (or is off)
    held_out: bool = True


@dataclass(frozen=True)
class CalibrationReport:
    scored: list[Scored]
    recommended: float
    current: float
    wrongly_abstained: int
    wrongly_answered: int
    in_scope: int
    out_of_scope: int
    excluded_copies: int = 0
    reader: ReaderCalibration | None = None


@dataclass(frozen=True)
class ReaderCalibration:
    """The reader's answerability on the questions that reached it."""

    points: list[Scored]
    recommended: float
    current: float
    trained_with_development: bool


def score_questions(engine: Engine, rows: list[Labelled]) -> list[Scored]:
    out = []
    for row in rows:
        answer = engine.ask(row.question)
        # Only questions the threshold applies to (not those answered from a reference line).
        gated = answer.reading is not None and answer.reading.gated
        reading = answer.reading.answerability if answer.reading and gated else None
        out.append(
            Scored(
                row.question,
                row.kind == "in_scope",
                answer.coverage.score,
                row.kind,
                reading,
                row.held_out,
            )
        )
    return out


def errors_at(scored: list[Scored], threshold: float) -> tuple[int, int]:
    abstained = sum(1 for s in scored if s.in_scope and s.coverage < threshold)
    answered = sum(1 for s in scored if not s.in_scope and s.coverage >= threshold)
    return abstained, answered


def recommend(scored: list[Scored]) -> float:
    inside = [s.coverage for s in scored if s.in_scope]
    outside = [s.coverage for s in scored if not s.in_scope]
    if not inside or not outside:
        raise ValueError("calibration needs both in-scope and out-of-scope questions")
    if min(inside) > max(outside):
        return round((min(inside) + max(outside)) / 2, 3)
    # Thresholds halfway between neighbouring scores: the fewest errors (answering an
    # out-of-scope question counts twice), then the widest gap, so the threshold does not sit
    # on top of a question's score.
    points = sorted({s.coverage for s in scored} | {0.0, 1.0})
    gaps = list(pairwise(points))

    def cost(gap: tuple[float, float]) -> tuple[int, float]:
        abstained, answered = errors_at(scored, (gap[0] + gap[1]) / 2)
        return 2 * answered + abstained, -(gap[1] - gap[0])

    best = min(gaps, key=cost)
    return round((best[0] + best[1]) / 2, 3)


def recommend_reader(points: list[Scored], max_declined: float = READER_MAX_DECLINED) -> float:
    """The highest threshold that declines at most ``max_declined`` of the in-scope questions,
    halfway between the in-scope score it keeps and the next one below."""
    inside = sorted(s.answerability for s in points if s.in_scope and s.answerability is not None)
    if not inside:
        raise ValueError("reader calibration needs in-scope questions that reached the reader")
    allowed = int(max_declined * len(inside))  # in-scope questions that may fall below
    kept = inside[allowed]
    below = inside[allowed - 1] if allowed > 0 else 0.0
    return round((below + kept) / 2, 4)


def reader_errors_at(points: list[Scored], threshold: float) -> dict[str, int]:
    def declined(kind: str) -> int:
        return sum(
            1
            for s in points
            if s.kind == kind and s.answerability is not None and s.answerability < threshold
        )

    return {
        "in_scope": sum(1 for s in points if s.kind == "in_scope"),
        "in_scope_declined": declined("in_scope"),
        "near_domain": sum(1 for s in points if s.kind == "near_domain"),
        "near_domain_declined": declined("near_domain"),
        "unrelated": sum(1 for s in points if s.kind == "unrelated"),
        "unrelated_declined": declined("unrelated"),
    }


def load_labelled(path: Path) -> list[Labelled]:
    from service.evaluation.dataset import held_out, load_questions

    questions = load_questions(path, require_answers=False)
    return [Labelled(q.question, q.kind, q.id, held_out(path, q)) for q in questions]


def _without_test_copies(engine: Engine, rows: list[Labelled]) -> tuple[list[Labelled], int]:
    from service.evaluation.dataset import TEST_QUESTIONS, Question, load_questions, near_copies

    if not TEST_QUESTIONS.is_file():
        return rows, 0
    questions = [Question(str(n), r.question, r.kind, None, (), ()) for n, r in enumerate(rows)]

    def embed(text: str) -> Any:
        return engine.embedder.embed([text])[0]

    test = load_questions(TEST_QUESTIONS)
    copies = {int(c.question_id) for c in near_copies(questions, test, embed)}
    return [r for n, r in enumerate(rows) if n not in copies], len(copies)


def calibrate(engine: Engine, paths: str | Path | list[str] | list[Path]) -> CalibrationReport:
    files = paths if isinstance(paths, list) else [paths]
    rows = [row for path in files for row in load_labelled(Path(path))]
    rows, excluded = _without_test_copies(engine, rows)
    scored = score_questions(engine, rows)
    coverage_rows = [s for s in scored if s.kind != "near_domain"]
    current = engine.settings.abstain_threshold
    abstained, answered = errors_at(coverage_rows, current)
    reader = None
    manifest = getattr(engine.reader, "manifest", None)
    if engine.reader is not None:
        with_dev = bool(manifest and manifest.training.get("with_development"))
        points = [s for s in scored if s.answerability is not None and (s.held_out or not with_dev)]
        if any(s.in_scope for s in points):
            reader = ReaderCalibration(
                points, recommend_reader(points), engine.settings.reader_threshold, with_dev
            )
    return CalibrationReport(
        scored=coverage_rows,
        recommended=recommend(coverage_rows),
        current=current,
        wrongly_abstained=abstained,
        wrongly_answered=answered,
        in_scope=sum(1 for s in coverage_rows if s.in_scope),
        out_of_scope=sum(1 for s in coverage_rows if not s.in_scope),
        excluded_copies=excluded,
        reader=reader,
    )


def format_report(report: CalibrationReport) -> str:
    inside = sorted(s.coverage for s in report.scored if s.in_scope)
    outside = sorted(s.coverage for s in report.scored if not s.in_scope)
    lines = [
        f"{report.in_scope} in-scope, {report.out_of_scope} out-of-scope questions"
        + (
            f" ({report.excluded_copies} left out as copies of test questions)"
            if report.excluded_copies
            else ""
        ),
        f"in-scope coverage:     min {inside[0]:.3f}  median {inside[len(inside) // 2]:.3f}",
        f"out-of-scope coverage: max {outside[-1]:.3f}  median {outside[len(outside) // 2]:.3f}",
        "",
        "threshold  in-scope abstained  out-of-scope answered",
    ]
    for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6):
        a, b = errors_at(report.scored, t)
        lines.append(f"{t:9.2f}  {a:18d}  {b:21d}")
    lines += [
        "",
        f"current QA_ABSTAIN_THRESHOLD={report.current}: {report.wrongly_abstained} in-scope "
        f"abstained, {report.wrongly_answered} out-of-scope answered",
        f"recommended QA_ABSTAIN_THRESHOLD={report.recommended}",
    ]
    if report.reader is not None:
        lines += ["", *format_reader_report(report.reader)]
    return "\n".join(lines)


def format_reader_report(reader: ReaderCalibration) -> list[str]:
    """The risk-coverage table for the reader's answerability threshold."""
    points = reader.points
    counts = reader_errors_at(points, 0.0)
    source = (
        "held-out development questions (the reader was trained on the rest)"
        if reader.trained_with_development
        else "development questions (the reader was trained on none of them)"
    )
    lines = [
        f"reader: {counts['in_scope']} in-scope, {counts['near_domain']} near-domain, "
        f"{counts['unrelated']} unrelated questions past the coverage check; {source}",
        "",
        "threshold  answered  in-scope declined  near-domain declined  unrelated declined  risk",
    ]
    thresholds = sorted(
        {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, reader.current, reader.recommended}
    )
    for t in thresholds:
        e = reader_errors_at(points, t)
        answered = (
            len(points)
            - e["in_scope_declined"]
            - e["near_domain_declined"]
            - (e["unrelated_declined"])
        )
        wrong = (e["near_domain"] - e["near_domain_declined"]) + (
            e["unrelated"] - e["unrelated_declined"]
        )
        risk = wrong / answered if answered else 0.0
        lines.append(
            f"{t:9.4f}  {answered / len(points):8.1%}  "
            f"{e['in_scope_declined']:4d} ({e['in_scope_declined'] / max(1, e['in_scope']):5.1%})"
            f"     {e['near_domain_declined']:4d} "
            f"({e['near_domain_declined'] / max(1, e['near_domain']):5.1%})"
            f"        {e['unrelated_declined']:4d} "
            f"({e['unrelated_declined'] / max(1, e['unrelated']):5.1%})  {risk:5.1%}"
        )
    lines += [
        "",
        "answered: share of these questions answered; risk: share of the answered ones that "
        "are near-domain or unrelated.",
        f"current QA_READER_THRESHOLD={reader.current}",
        f"recommended QA_READER_THRESHOLD={reader.recommended} (declines at most "
        f"{READER_MAX_DECLINED:.0%} of the in-scope questions)",
    ]
    return lines
