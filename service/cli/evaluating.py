"""Commands that measure and train: ``eval``, ``calibrate``, ``bench``, ``soak``,
``train-ranker``, ``train-reader``. The measuring and training code lives in
:mod:`service.evaluation`; these functions parse arguments, call it, and print."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from service.cli.common import CliError, Progress, add_common_options, engine_for, settings_for
from service.evaluation.bench import SECTIONS
from service.evaluation.dataset import DEV_QUESTIONS, TEST_QUESTIONS
from service.evaluation.ranker_training import L2
from service.evaluation.reader_data import SYNTHETIC_DIR
from service.evaluation.reader_training import TrainConfig
from service.evaluation.runner import MODES
from service.evaluation.soak import MAX_CLIENTS, MAX_MINUTES
from service.reader_manifest import DEFAULT_DIR as READER_DIR
from service.reranking import DEFAULT_PATH as RANKER_PATH

_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when run from a checkout


def _ints(text: str) -> tuple[int, ...]:
    """``--scale`` / ``--concurrency``: comma-separated positive numbers; '0' or 'off': none."""
    if text.strip().lower() in ("", "0", "none", "off"):
        return ()
    try:
        values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sizes and counts must be positive")
    return values


def register(sub: Any) -> None:
    register_eval(sub)
    register_calibrate(sub)
    register_bench(sub)
    register_soak(sub)
    register_train_ranker(sub)
    register_train_reader(sub)


# -- eval ----------------------------------------------------------------------------------------


def register_eval(sub: Any) -> None:
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
    from service.evaluation.dataset import export_beir, load_questions
    from service.evaluation.report import format_misses, format_table, write_outputs
    from service.evaluation.runner import (
        GATE_MODE,
        EngineBackend,
        HttpBackend,
        gate_failures,
        run_evaluation,
        target_misses,
    )

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
        engine = engine_for(args, progress)
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


# -- calibrate -----------------------------------------------------------------------------------


def register_calibrate(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="measure the abstention threshold on labelled questions")
    p.add_argument(
        "--file",
        action="append",
        help="labelled questions (JSONL); repeatable. Default: eval/calibration.jsonl and "
        "eval/dev_questions*.jsonl (not the test set; copies of test questions are left out)",
    )
    add_common_options(p)
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from service.evaluation.calibration import calibrate, format_report

    progress = Progress(args.quiet)
    engine = engine_for(args, progress)
    from service.evaluation.dataset import DEV_QUESTIONS, DEV_QUESTIONS_5

    # Never the test set (eval/questions.jsonl): its abstention figures must stay unseen.
    files = args.file or [
        "eval/calibration.jsonl",
        *(p.as_posix() for p in (*DEV_QUESTIONS, DEV_QUESTIONS_5)),
    ]
    report = calibrate(engine, files)
    print(format_report(report))
    return 0


# -- bench ---------------------------------------------------------------------------------------


def register_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure start-up, latency, throughput, memory and scale")
    p.add_argument("--quick", action="store_true", help="a fast smoke run (small counts)")
    p.add_argument("--scale", type=_ints, help="vector counts, e.g. 10000,100000 (0: skip)")
    p.add_argument(
        "--scale-service",
        type=_ints,
        help="chunk counts to start the whole service on, e.g. 100000,1000000 (default: none)",
    )
    p.add_argument("--scale-data", choices=("clustered", "uniform"), help="synthetic data kind")
    p.add_argument("--scale-indexes", help="comma-separated approximate indexes: hnsw, hnsw-sq8")
    p.add_argument("--sections", help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--repeats", type=int, help="runs per measurement (median, min, max)")
    p.add_argument("--requests", type=int, help="requests per single-client run")
    p.add_argument("--concurrency", type=_ints, help="client counts, e.g. 4,16,64")
    p.add_argument("--memory-requests", type=int, help="requests before the second RSS reading")
    p.add_argument("--out", default="eval/results", help="folder for bench-latest.json/.md")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the tables")
    add_common_options(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from service.evaluation.bench import (
        BenchError,
        config_from_args,
        format_markdown,
        run_benchmark,
        write_outputs,
    )

    progress = Progress(args.quiet)
    try:
        config = config_from_args(args)
        settings = settings_for(args)
        report = run_benchmark(settings, config, progress.say)
    except BenchError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_markdown(report))
    if not args.no_write:
        for path in write_outputs(report, Path(args.out)):
            progress.say(f"wrote {path}")
    return 0


# -- soak ----------------------------------------------------------------------------------------


def register_soak(sub: Any) -> None:
    p = sub.add_parser("soak", help="load a local server for a while; report errors and memory")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback only)")
    p.add_argument("--minutes", type=float, default=10.0, help=f"how long (at most {MAX_MINUTES})")
    p.add_argument("--clients", type=int, default=8, help=f"concurrent clients (1-{MAX_CLIENTS})")
    p.add_argument("--max-requests", type=int, default=1_000_000, help="stop after this many")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between report lines")
    p.add_argument(
        "--reindex-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="re-index through the admin endpoint this often (token in QA_ADMIN_TOKEN)",
    )
    p.add_argument("--pid", type=int, default=None, help="server process id, for its memory")
    p.add_argument("--questions", default="eval/questions.jsonl", help="questions to ask")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from service.evaluation.soak import SoakError, format_summary, load_questions, run_soak

    try:
        report = run_soak(
            args.url,
            seconds=args.minutes * 60,
            clients=args.clients,
            max_requests=args.max_requests,
            interval=max(1.0, args.interval),
            questions=load_questions(Path(args.questions)),
            reindex_every=args.reindex_every,
            admin_token=os.environ.get("QA_ADMIN_TOKEN") or None,
            pid=args.pid,
        )
    except SoakError as exc:
        raise CliError(str(exc)) from None
    print(format_summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if report.errors or report.reindex_failures else 0


# -- train-ranker --------------------------------------------------------------------------------


def register_train_ranker(sub: Any) -> None:
    p = sub.add_parser(
        "train-ranker", help="fit the rerank mode's weights on the development questions"
    )
    p.add_argument(
        "--questions",
        action="append",
        help="labelled development questions (JSONL); repeatable. Default: "
        + " and ".join(p.as_posix() for p in DEV_QUESTIONS),
    )
    p.add_argument("--out", default=str(RANKER_PATH), help="where to write the weights (JSON)")
    p.add_argument("--l2", type=float, default=L2, help="weight decay")
    add_common_options(p)
    p.set_defaults(func=cmd_train_ranker)


def cmd_train_ranker(args: argparse.Namespace) -> int:
    from service.evaluation.ranker_training import train

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
    engine = engine_for(args, progress, reader=False)
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


# -- train-reader --------------------------------------------------------------------------------


def register_train_reader(sub: Any) -> None:
    p = sub.add_parser(
        "train-reader",
        help="fine-tune the reader on synthetic passages (and optionally the development set)",
    )
    p.add_argument(
        "--synthetic",
        action="append",
        help="synthetic training file (JSONL); repeatable. Default: "
        f"{SYNTHETIC_DIR}/synthetic_*.jsonl",
    )
    p.add_argument(
        "--with-dev",
        action="store_true",
        help="also train on the development questions (not the held-out fifth, not copies of "
        "test questions)",
    )
    p.add_argument(
        "--leave-out",
        metavar="DOC",
        help="with --with-dev: leave out the development questions about this document",
    )
    p.add_argument("--out", default=str(READER_DIR), help="folder to write the reader to")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--layers", type=int, default=TrainConfig.layers)
    p.add_argument(
        "--frozen-layers",
        type=int,
        default=TrainConfig.frozen_layers,
        help="keep this many of the first layers as in the base (not trained, not shipped)",
    )
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=TrainConfig.precision)
    add_common_options(p)
    p.set_defaults(func=cmd_train_reader)


def cmd_train_reader(args: argparse.Namespace) -> int:
    from service.evaluation.reader_data import (
        SyntheticFileError,
        load_synthetic_file,
        synthetic_files,
    )
    from service.evaluation.reader_training import train_reader

    progress = Progress(args.quiet)
    files = [Path(p) for p in args.synthetic] if args.synthetic else synthetic_files()
    if not files:
        raise CliError(f"no synthetic training files in {SYNTHETIC_DIR}/; pass --synthetic FILE")
    for path in files:
        if not path.is_file():
            raise CliError(f"synthetic training file {path} not found")
    if args.leave_out and not args.with_dev:
        raise CliError("--leave-out needs --with-dev")
    if not 1 <= args.epochs <= 20:
        raise CliError("--epochs must be between 1 and 20")
    config = TrainConfig(
        epochs=args.epochs,
        layers=args.layers,
        frozen_layers=args.frozen_layers,
        seed=args.seed,
        precision=args.precision,
    )
    try:
        for path in files:
            load_synthetic_file(path)  # a malformed file fails before the model loads
    except SyntheticFileError as exc:
        raise CliError(str(exc)) from None
    engine = engine_for(args, progress, reader=False)
    try:
        run = train_reader(
            engine,
            files,
            config,
            Path(args.out),
            with_dev=args.with_dev,
            leave_out=args.leave_out,
            progress=progress,
        )
    except OSError as exc:
        raise CliError(f"cannot write the reader to {args.out} ({exc.strerror or exc})") from None
    print(
        f"trained on {run.questions} questions in {run.seconds:.0f} s; wrote {args.out}/ "
        f"({run.weights_bytes / 1e6:.1f} MB, sha256 {run.manifest.weights_sha256[:12]})"
    )
    print("held-out development questions: " + json.dumps(run.held_out_metrics))
    print("calibrate its threshold: python -m service calibrate; measure: python -m service eval")
    return 0
