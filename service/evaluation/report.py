"""Evaluation output: a side-by-side table, Markdown report, JSON, and PNG plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

from service.evaluation.runner import (
    GATE_MODE,
    RETRIEVAL_METRICS,
    EvalResult,
    QuestionResult,
    gate_failures,
    target_misses,
)

ANSWER_METRICS = ("answer_contains", "cites_relevant")
ABSTAIN_METRICS = (
    "in_scope_abstained",
    "unrelated_abstained",
    "near_domain_abstained",
    "near_domain_not_stated",
    "near_domain_not_covered",
)
READER_METRICS = ("auroc_near_domain", "auroc_unrelated")


def _rows(result: EvalResult) -> list[tuple[str, list[float]]]:
    modes = list(result.modes.values())
    rows = [(m, [r.retrieval[m] for r in modes]) for m in RETRIEVAL_METRICS]
    rows += [(m, [r.answer[m] for r in modes]) for m in ANSWER_METRICS]
    rows += [(m, [r.abstention[m] for r in modes]) for m in ABSTAIN_METRICS]
    if any(r.reader for r in modes):
        rows += [
            (f"reader_{m}", [r.reader.get(m) or float("nan") for r in modes])
            for m in READER_METRICS
        ]
    return rows


def _cell(value: float, width: int) -> str:
    """A metric to three decimals; '-' where it is undefined (no questions of a kind)."""
    return f"{'-':>{width}}" if value != value else f"{value:{width}.3f}"


def _subkinds(result: EvalResult) -> list[str]:
    """Near-domain questions declined, by what the documents lack (one line per mode)."""
    lines = []
    for mode, r in result.modes.items():
        parts = [
            f"{name} {int(v['declined'])}/{int(v['questions'])}"
            for name, v in r.near_domain_by_subkind.items()
        ]
        if parts:
            lines.append(f"near-domain declined by kind ({mode}): " + ", ".join(parts))
    return lines


def format_table(result: EvalResult) -> str:
    modes = list(result.modes)
    width = max(len(name) for name, _ in _rows(result)) + 2
    lines = [f"{'metric':<{width}}" + "".join(f"{m:>9}" for m in modes)]
    lines.append("-" * len(lines[0]))
    for name, values in _rows(result):
        lines.append(f"{name:<{width}}" + "".join(_cell(v, 9) for v in values))
    c = result.counts
    lines.append("")
    lines.append(
        f"{c['in_scope']} in-scope, {c['unrelated']} unrelated, {c['near_domain']} near-domain "
        f"questions; {c['chunks']} chunks; {result.seconds:.1f} s ({result.backend})"
    )
    lines += _subkinds(result)
    return "\n".join(lines)


def format_markdown(result: EvalResult) -> str:
    modes = list(result.modes)
    out = ["# Retrieval evaluation", ""]
    out.append("| metric | " + " | ".join(modes) + " |")
    out.append("|---|" + "---:|" * len(modes))
    for name, values in _rows(result):
        out.append(f"| {name} | " + " | ".join(_cell(v, 0).strip() for v in values) + " |")
    c = result.counts
    out += [
        "",
        f"{c['in_scope']} in-scope, {c['unrelated']} unrelated and {c['near_domain']} near-domain "
        f"questions over {c['chunks']} chunks; backend: {result.backend}; {result.seconds:.1f} s.",
        "",
        "Hit@k: a relevant document among the first k documents retrieved. Recall, MRR, nDCG: "
        "passages (a passage is relevant when it is in a relevant document and contains an "
        "answer string). answer_contains: the answer quotes an answer string. cites_relevant: "
        "the answer cites a relevant document. *_abstained: not answered (not_stated or "
        "not_covered). reader_auroc_*: how well the reader's answerability separates in-scope "
        "questions from near-domain / unrelated ones (over the questions it read).",
        "",
        *(f"- {line}" for line in _subkinds(result)),
        "",
    ]
    if GATE_MODE in result.modes:
        failures = gate_failures(result)
        misses = target_misses(result)
        verdict = "passes" if not failures else "; ".join(failures)
        out.append(f"Quality gate ({GATE_MODE}): {verdict}")
        out.append("")
        out.append("Targets not met yet: " + ("none" if not misses else "; ".join(misses)))
    return "\n".join(out) + "\n"


def format_misses(result: EvalResult, mode: str = GATE_MODE) -> str:
    lines = [f"misses ({mode}):"]
    for r in result.modes[mode].questions:
        problems = []
        if r.kind == "in_scope":
            if r.abstained:
                problems.append(f"{r.status} ({_scores(r)})")
            if not r.retrieved_docs or r.retrieved_docs[0] not in r.relevant_docs:
                problems.append(f"top document {r.retrieved_docs[:1]} not in {r.relevant_docs}")
            if r.first_relevant_passage_rank is None or r.first_relevant_passage_rank > 5:
                problems.append(
                    f"first relevant passage at rank {r.first_relevant_passage_rank} "
                    f"({r.relevant_passages} relevant)"
                )
            if not r.answer_contains and not r.abstained:
                problems.append("answer lacks the answer string")
        elif not r.abstained:
            problems.append(f"{r.kind} question answered ({_scores(r)})")
        if problems:
            lines.append(f"- {r.id} [{r.style or r.kind}] {r.question}")
            lines.extend(f"    {p}" for p in problems)
            if r.kind == "in_scope" and not r.answer_contains:
                lines.append(f"    answer: {r.answer[:300]}")
    return "\n".join(lines)


def _scores(r: QuestionResult) -> str:
    reading = f", answerability {r.answerability:.2f}" if r.answerability is not None else ""
    return f"coverage {r.coverage:.2f}{reading}"


def write_outputs(result: EvalResult, out_dir: Path, *, name: str = "latest") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = out_dir / f"{name}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, json_path)
    written.append(json_path)
    md_path = out_dir / f"{name}.md"
    md_path.write_text(format_markdown(result), encoding="utf-8")
    written.append(md_path)
    written.extend(draw_plots(result, out_dir))
    return written


def draw_plots(result: EvalResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result.modes)
    metrics = [*RETRIEVAL_METRICS, *ANSWER_METRICS]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        r = result.modes[mode]
        values = [r.retrieval.get(m, r.answer.get(m, 0.0)) for m in metrics]
        ax.bar([x + i * width for x in range(len(metrics))], values, width, label=mode)
    ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("Retrieval and answer metrics by mode")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    bars = out_dir / "metrics_by_mode.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for mode in modes:
        curve = result.modes[mode].risk_coverage
        ax.plot([p["coverage"] for p in curve], [p["risk"] for p in curve], marker=".", label=mode)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("risk (share of answers that are wrong or out of scope)")
    ax.set_title("Risk-coverage over the abstention threshold")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(
        0,
        max(0.05, max((p["risk"] for m in modes for p in result.modes[m].risk_coverage), default=0))
        * 1.1,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    curve_path = out_dir / "risk_coverage.png"
    fig.savefig(curve_path, dpi=110)
    plt.close(fig)
    return [bars, curve_path]
