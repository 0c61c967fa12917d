"""``python -m service <command>``: ingest, search, ask, serve, calibrate, eval, bench,
train-ranker.

Failures print one line saying what is wrong and how to fix it, and exit non-zero. Heavy
libraries are imported inside the commands so ``--help`` and error paths stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, get_args

from service import __version__
from service.config import RetrievalMode, SettingsError, load_settings

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(RuntimeError):
    """A failure to report as one line."""


class Progress:
    """Progress lines on stderr: rewritten in place on a terminal, one per stage otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last: tuple[str, int] | None = None
        self._started = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r{stage}: {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done >= total and self._last != (stage, total):
            print(f"{stage}: {total}/{total}", file=sys.stderr, flush=True)
            self._last = (stage, total)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "corpus_dir", "index_dir", "model"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def _engine(args: argparse.Namespace, progress: Progress, *, reader: bool = True) -> Any:
    """The engine for a command; ``reader=False`` for commands that do not answer (training)."""
    from service.engine import CONFIGURED, Engine

    settings = _settings(args)
    progress.say(f"loading model '{settings.model}' and index {settings.index_dir}/ ...")
    engine, ensured = Engine.start(
        settings, progress=progress, reader=CONFIGURED if reader else None
    )
    if ensured.warning:
        print(f"warning: {ensured.warning}", file=sys.stderr)
    if ensured.build is not None:
        _report_build(ensured.build, ensured.reason, progress)
    return engine


def _report_build(build: Any, reason: str | None, progress: Progress) -> None:
    for problem in build.problems:
        print(f"warning: {problem}", file=sys.stderr)
    m = build.manifest
    why = f" ({reason})" if reason else ""
    progress.say(
        f"built index{why}: {m.documents} documents, {m.chunks} chunks, {m.sentences} sentences; "
        f"embedded {build.embedded}, reused {build.reused}; {build.seconds:.1f} s -> {build.path}"
    )


# -- commands ----------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    from service.embedding import load_embedder
    from service.index_store import ensure_index

    progress = Progress(args.quiet)
    settings = _settings(args)
    if not settings.corpus_dir.is_dir():
        raise CliError(
            f"corpus folder {settings.corpus_dir}/ does not exist; create it and add documents "
            "or set QA_CORPUS_DIR"
        )
    started = time.perf_counter()
    progress.say(f"loading model '{settings.model}' ...")
    embedder = load_embedder(settings)
    ensured = ensure_index(settings, embedder, force=args.force, progress=progress)
    if ensured.build is None:
        m = ensured.data.manifest
        progress.say(
            f"index is up to date: {m.documents} documents, {m.chunks} chunks "
            f"(built {m.built_at}); nothing to do. Use --force to rebuild."
        )
    else:
        _report_build(ensured.build, ensured.reason, progress)
    progress.say(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.json or args.quiet)
    engine = _engine(args, progress, reader=False)
    outcome = engine.search(args.question, args.k, args.mode)
    if args.json:
        from service.api.schemas import PassageOut

        # The same result records as GET /api/search.
        results = [PassageOut.from_hit(h).model_dump() for h in outcome.hits]
        print(json.dumps({"query": args.question, "mode": outcome.mode, "results": results},
                         ensure_ascii=False, indent=2))  # fmt: skip
        return 0
    for hit in outcome.hits:
        doc = hit.document
        print(f"{hit.rank}. [{hit.score:.4f}] {doc.title} ({doc.year}) - {hit.chunk.section}")
        print(f"   {doc.study_type or 'study type unknown'}; {_short_ref(doc)}")
        print(_indent(hit.chunk.text, "   "))
        print()
    return 0


def _short_ref(doc: Any) -> str:
    authors = ", ".join(doc.authors[:3]) + (", et al" if len(doc.authors) > 3 else "")
    parts = [p for p in (authors, doc.journal, str(doc.year) if doc.year else None) if p]
    link = doc.url or doc.pubmed_url or ""
    return ". ".join(parts) + (f". {link}" if link else "")


def _indent(text: str, prefix: str, width: int = 100) -> str:
    import textwrap

    return "\n".join(
        textwrap.fill(p, width, initial_indent=prefix, subsequent_indent=prefix)
        for p in text.split("\n")
        if p.strip()
    )


def cmd_ask(args: argparse.Namespace) -> int:
    from service.api.schemas import AskResponse

    progress = Progress(quiet=args.json or args.quiet)
    engine = _engine(args, progress)
    answer = engine.ask(args.question, args.k, args.mode)
    if args.json:
        print(AskResponse.from_answer(answer).model_dump_json(indent=2))
        return 0
    import textwrap

    heading = _STATUS_HEADINGS.get(answer.status)
    if heading:
        print(heading)
    print(textwrap.fill(answer.text, 100))
    if answer.citations:
        print("\nReferences")
        for c in answer.citations:
            doc = c.hit.document
            print(f"  [{c.marker}] {doc.title} ({doc.year}). {doc.study_type or ''}")
            print(f"      {_short_ref(doc)}")
    elif answer.status == "not_stated" and answer.passages:
        print("\nRelated reading (not an answer)")
        for hit in answer.passages:
            doc = hit.document
            print(f"  - {doc.title} ({doc.year}), {hit.chunk.section}. {doc.study_type or ''}")
            print(f"      {_short_ref(doc)}")
    print(f"\n{answer.disclaimer}")
    return 0


_STATUS_HEADINGS = {
    "not_stated": "Not stated in the documents:",
    "not_covered": "Not covered by the documents:",
}


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app

    progress = Progress(args.quiet)
    settings = _settings(args)
    engine = _engine(args, progress)
    app = create_app(settings, engine=engine)
    progress.say(f"serving on http://{settings.host}:{settings.port}/ (Ctrl-C to stop)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                server_header=False)  # fmt: skip
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from service.calibration import calibrate, format_report

    progress = Progress(args.quiet)
    engine = _engine(args, progress)
    from service.evaluation.dataset import DEV_QUESTIONS, DEV_QUESTIONS_5

    # Never the test set (eval/questions.jsonl): its abstention figures must stay unseen.
    files = args.file or [
        "eval/calibration.jsonl",
        *(p.as_posix() for p in (*DEV_QUESTIONS, DEV_QUESTIONS_5)),
    ]
    report = calibrate(engine, files)
    print(format_report(report))
    return 0


# -- parser ------------------------------------------------------------------------------------


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus-dir", dest="corpus_dir", help="corpus folder (QA_CORPUS_DIR)")
    p.add_argument("--index-dir", dest="index_dir", help="index folder (QA_INDEX_DIR)")
    p.add_argument("--model", help="embedding model (QA_MODEL)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Cited question answering over MSC therapy research summaries.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    p = sub.add_parser("ingest", help="build or update the index from corpus/")
    add_common_options(p)
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.set_defaults(func=cmd_ingest)

    for name, func, help_text in (
        ("search", cmd_search, "print ranked passages with citations"),
        ("ask", cmd_ask, "print a cited answer"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("question")
        p.add_argument("--k", type=int, default=None, help="passages to retrieve (1-20)")
        p.add_argument(
            "--mode", choices=get_args(RetrievalMode), default=None, help="retrieval mode"
        )
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        add_common_options(p)
        p.set_defaults(func=func)

    p = sub.add_parser("serve", help="serve the API and chat page")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    add_common_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("calibrate", help="measure the abstention threshold on labelled questions")
    p.add_argument(
        "--file",
        action="append",
        help="labelled questions (JSONL); repeatable. Default: eval/calibration.jsonl and "
        "eval/dev_questions*.jsonl (not the test set; copies of test questions are left out)",
    )
    add_common_options(p)
    p.set_defaults(func=cmd_calibrate)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


def _register_eval(sub: Any) -> None:
    from service.evaluation.command import register

    register(sub)


def _register_soak(sub: Any) -> None:
    from service.evaluation.soak import register

    register(sub)


def _register_bench(sub: Any) -> None:
    from service.evaluation.bench import register

    register(sub)


def _register_train_ranker(sub: Any) -> None:
    from service.evaluation.ranker_training import register

    register(sub)


def _register_train_reader(sub: Any) -> None:
    from service.evaluation.reader_training import register

    register(sub)


_EXTRA_COMMANDS: list[Callable[[Any], None]] = [
    _register_eval,
    _register_soak,
    _register_bench,
    _register_train_ranker,
    _register_train_reader,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "k", None) is not None and not 1 <= args.k <= 20:
        print("error: --k must be between 1 and 20", file=sys.stderr)
        return EXIT_USAGE
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        print("interrupted; the previous index (if any) is unchanged", file=sys.stderr)
        return 130
    except (SettingsError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_FAILURE
    except Exception as exc:
        from service.embedding import EmbedderError
        from service.index_store import IndexError as IndexProblem

        if isinstance(exc, EmbedderError | IndexProblem | FileNotFoundError | ValueError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
