"""Choose the abstention threshold from labelled questions.

Reads JSONL rows ``{"question": str, "in_scope": bool}`` (or evaluation rows with ``kind``:
``in_scope`` counts as in scope, ``unrelated`` as out of scope; ``near_domain`` rows are left out,
since the retrieval signals cannot tell them apart from answerable questions), computes each
question's coverage score (see :func:`service.answering.coverage`) and reports, for candidate
thresholds, how many in-scope questions would be wrongly abstained and how many out-of-scope
ones answered. The
recommended threshold is the middle of the widest gap between the two groups' scores when they
separate cleanly, otherwise the threshold with the fewest errors (answering an out-of-scope
question counts as twice as bad as abstaining on an in-scope one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from service.engine import Engine


@dataclass(frozen=True)
class Scored:
    question: str
    in_scope: bool
    coverage: float


@dataclass(frozen=True)
class CalibrationReport:
    scored: list[Scored]
    recommended: float
    current: float
    wrongly_abstained: int
    wrongly_answered: int
    in_scope: int
    out_of_scope: int


def score_questions(engine: Engine, rows: list[tuple[str, bool]]) -> list[Scored]:
    return [Scored(q, label, engine.ask(q).coverage.score) for q, label in rows]


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


def load_rows(path: Path) -> list[tuple[str, bool]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "kind" in record:
                if record["kind"] == "near_domain":
                    continue
                rows.append((str(record["question"]), record["kind"] == "in_scope"))
            else:
                rows.append((str(record["question"]), bool(record["in_scope"])))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{n}: not a calibration row ({exc})") from None
    return rows


def calibrate(engine: Engine, paths: str | Path | list[str] | list[Path]) -> CalibrationReport:
    files = paths if isinstance(paths, list) else [paths]
    rows = [row for path in files for row in load_rows(Path(path))]
    scored = score_questions(engine, rows)
    current = engine.settings.abstain_threshold
    abstained, answered = errors_at(scored, current)
    return CalibrationReport(
        scored=scored,
        recommended=recommend(scored),
        current=current,
        wrongly_abstained=abstained,
        wrongly_answered=answered,
        in_scope=sum(1 for s in scored if s.in_scope),
        out_of_scope=sum(1 for s in scored if not s.in_scope),
    )


def format_report(report: CalibrationReport) -> str:
    inside = sorted(s.coverage for s in report.scored if s.in_scope)
    outside = sorted(s.coverage for s in report.scored if not s.in_scope)
    lines = [
        f"{report.in_scope} in-scope, {report.out_of_scope} out-of-scope questions",
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
    return "\n".join(lines)
