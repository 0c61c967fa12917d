"""Commands that build the index and answer: ``ingest``, ``add``, ``search``, ``ask``, ``serve``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, get_args

from service.cli.common import (
    CliError,
    Progress,
    add_common_options,
    engine_for,
    report_build,
    settings_for,
)
from service.config import RetrievalMode


def register(sub: Any) -> None:
    p = sub.add_parser("ingest", help="build or update the index from corpus/")
    add_common_options(p)
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("add", help="add documents (.pdf, .md, .txt, .html) and update the index")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--metadata",
        metavar="YML",
        help="for a single PDF: its citation as YAML (title, authors, year, doi, ...)",
    )
    add_common_options(p)
    p.set_defaults(func=cmd_add)

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


def cmd_ingest(args: argparse.Namespace) -> int:
    from service.backends import open_index
    from service.embedding import load_embedder

    progress = Progress(args.quiet)
    settings = settings_for(args)
    if not settings.corpus_dir.is_dir():
        raise CliError(
            f"corpus folder {settings.corpus_dir}/ does not exist; create it and add documents "
            "or set QA_CORPUS_DIR"
        )
    started = time.perf_counter()
    progress.say(f"loading model '{settings.model}' ...")
    embedder = load_embedder(settings)
    ensured = open_index(settings, embedder, force=args.force, progress=progress)
    if ensured.build is None and ensured.reason is not None:  # published, nothing re-embedded
        m = ensured.data.manifest
        target = getattr(ensured.data, "build_name", settings.index_dir)
        progress.say(
            f"published {m.documents} documents, {m.chunks} chunks to {target} ({ensured.reason})"
        )
    elif ensured.build is None:
        m = ensured.data.manifest
        progress.say(
            f"index is up to date: {m.documents} documents, {m.chunks} chunks "
            f"(built {m.built_at}); nothing to do. Use --force to rebuild."
        )
    else:
        report_build(ensured.build, ensured.reason, progress)
    progress.say(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Check each file as an upload is checked, store them, and bring the index up to date;
    if the build fails, the files are taken out again."""
    from pathlib import Path

    from service.backends import open_index
    from service.corpus_files import AddFiles, CorpusChangeError, Upload, check_upload
    from service.embedding import load_embedder
    from service.index_store import IndexStoreError
    from service.ingest import read_corpus

    progress = Progress(args.quiet)
    settings = settings_for(args)
    settings.corpus_dir.mkdir(parents=True, exist_ok=True)
    if args.metadata and len(args.files) != 1:
        raise CliError("--metadata goes with a single PDF")
    existing = read_corpus(settings).documents
    uploads: list[Upload] = []
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
            sidecar = Path(args.metadata).read_bytes() if args.metadata else None
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
        try:
            upload = check_upload(
                settings, path.name, data, [*existing, *(d for u in uploads for d in u.documents)],
                sidecar,
            )  # fmt: skip
        except CorpusChangeError as exc:
            raise CliError(f"{path}: {exc}; nothing was added") from None
        uploads.append(upload)
    change = AddFiles(settings.corpus_dir, uploads)
    change.apply()
    progress.say(f"loading model '{settings.model}' ...")
    try:
        ensured = open_index(settings, load_embedder(settings), progress=progress)
    except (IndexStoreError, OSError) as exc:
        change.undo()
        raise CliError(f"the index could not be built ({exc}); nothing was added") from None
    except BaseException:
        change.undo()
        raise
    if ensured.build is not None:
        report_build(ensured.build, ensured.reason, progress)
    counts = ensured.data.chunk_counts
    for upload in uploads:
        for doc in ensured.data.documents.values():
            if doc.path == upload.name:
                pages = f", {len(doc.pages)} pages" if doc.pages else ""
                print(
                    f"added {doc.id}: {doc.title} ({doc.year or 'no year'}) -> "
                    f"{settings.corpus_dir}/{doc.path}; {counts.get(doc.id, 0)} chunks{pages}"
                )
    progress.say("a running server serves them after POST /api/admin/reindex or a restart")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    progress = Progress(quiet=args.json or args.quiet)
    engine = engine_for(args, progress, reader=False)
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
        where = f", {pages.label}" if (pages := hit.pages) else ""
        print(
            f"{hit.rank}. [{hit.score:.4f}] {doc.title} ({doc.year}) - {hit.chunk.section}{where}"
        )
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
    engine = engine_for(args, progress)
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
            doc = c.document
            where = f", {label}" if (label := c.page_label) else ""
            print(f"  [{c.marker}] {doc.title} ({doc.year}){where}. {doc.study_type or ''}")
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
    settings = settings_for(args)
    engine = engine_for(args, progress)
    app = create_app(settings, engine=engine)
    progress.say(f"serving on http://{settings.host}:{settings.port}/ (Ctrl-C to stop)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                server_header=False)  # fmt: skip
    return 0
