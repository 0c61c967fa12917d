"""``python -m service eval``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from service.evaluation.dataset import export_beir, load_questions
from service.evaluation.runner import (
    GATE_MODE,
    MODES,
    gate_failures,
    run_evaluation,
    target_misses,
)


def register(sub: Any) -> None:
    from service.cli import add_common_options

    p = sub.add_parser("eval", help="evaluate retrieval, answers and abstention on eval/")
    p.add_argument("--questions", default="eval/questions.jsonl", help="labelled question file")
    p.add_argument("--out", default="eval/results", help="folder for latest.json/.md and plots")
    p.add_argument("--url", help="evaluate a running server over HTTP, e.g. http://127.0.0.1:8000")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated retrieval modes")
    p.add_argument("--per-question", action="store_true", help="list the misses and why")
    p.add_argument("--gate", action="store_true", help="exit 1 if the quality gate fails")
    p.add_argument("--export-beir", metavar="DIR", help="also write the set in BEIR layout")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    add_common_options(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from service.cli import CliError, Progress, _engine
    from service.evaluation.report import format_misses, format_table, write_outputs
    from service.evaluation.runner import EngineBackend, HttpBackend

    progress = Progress(args.quiet)
    path = Path(args.questions)
    if not path.is_file():
        raise CliError(f"question file {path} not found; pass --questions PATH")
    questions = load_questions(path)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise CliError(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    backend: Any
    settings: dict[str, Any] = {}
    if args.url:
        if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
            progress.say(f"note: evaluating a remote server at {args.url}")
        backend = HttpBackend(args.url)
    else:
        engine = _engine(args, progress)
        backend = EngineBackend(engine)
        s = engine.settings
        settings = {
            "model": s.model,
            "chunk_max_tokens": s.chunk_max_tokens,
            "chunk_overlap_sentences": s.chunk_overlap_sentences,
            "embed_context": s.embed_context,
            "rrf_k": s.rrf_k,
            "abstain_threshold": s.abstain_threshold,
            "reader": s.reader if engine.reader is not None else "off",
            "reader_weights": getattr(engine.reader, "name", None),
            "reader_threshold": s.reader_threshold,
            "reader_max_candidates": s.reader_max_candidates,
        }
    try:
        result = run_evaluation(
            backend, questions, modes, str(path), progress=progress, settings=settings
        )
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    print(format_table(result))
    if args.per_question:
        for mode in modes:
            print()
            print(format_misses(result, mode))
    if args.export_beir:
        chunks = backend.chunks()
        titles = {c.document_id: c.document_id for c in chunks}
        if not args.url:
            titles = {d.id: d.title for d in backend.engine.data.documents.values()}
        export_beir(questions, chunks, titles, Path(args.export_beir))
        progress.say(f"wrote BEIR files to {args.export_beir}/")
    if not args.no_write:
        for written in write_outputs(result, Path(args.out)):
            progress.say(f"wrote {written}")
    if GATE_MODE in result.modes:
        failures = gate_failures(result)
        print("\nquality gate: " + ("passes" if not failures else "FAILS: " + "; ".join(failures)))
        misses = target_misses(result)
        if misses:
            print("targets not met yet: " + "; ".join(misses))
        if failures and args.gate:
            return 1
    sys.stdout.flush()
    return 0
