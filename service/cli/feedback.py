"""``feedback export`` and ``feedback stats``: the ratings users gave answers
(:mod:`service.feedback_store`), as evaluation questions or as counts
(:mod:`service.evaluation.feedback_export`)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from service.cli.common import CliError, settings_for
from service.feedback_store import RATINGS, FeedbackStore, FeedbackStoreError, db_path


def _since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a date; write YYYY-MM-DD or an ISO time (UTC unless it says)"
        ) from None


def register(sub: Any) -> None:
    p = sub.add_parser("feedback", help="export or count the ratings users gave answers")
    actions = p.add_subparsers(dest="action", metavar="action")
    actions.required = True

    export = actions.add_parser(
        "export", help="write rated questions as JSONL in the evaluation question format"
    )
    export.add_argument("--out", help="file to write (default: standard output)")
    export.add_argument(
        "--rating", choices=[*RATINGS, "all"], default="all", help="which ratings (default all)"
    )
    export.add_argument(
        "--since", type=_since, help="only ratings given at or after this date (UTC)"
    )
    _db_options(export)
    export.set_defaults(func=cmd_export)

    stats = actions.add_parser("stats", help="ratings by day and by outcome, up and down")
    _db_options(stats)
    stats.set_defaults(func=cmd_stats)


def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="the feedback database (QA_FEEDBACK_DB)")
    p.add_argument("--index-dir", dest="index_dir", help="index folder (QA_INDEX_DIR)")


def _open(args: argparse.Namespace) -> FeedbackStore:
    path = Path(args.db) if args.db else db_path(settings_for(args))
    try:
        return FeedbackStore(path, create=False)
    except FeedbackStoreError as exc:
        raise CliError(str(exc)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from service.evaluation.feedback_export import write_questions
    from service.feedback_store import utc_timestamp

    store = _open(args)
    try:
        rows = store.rows(
            rating=None if args.rating == "all" else args.rating,
            since=utc_timestamp(args.since) if args.since else None,
        )
    except FeedbackStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if not args.out:
        write_questions(rows, sys.stdout)
        return 0
    out = Path(args.out)
    try:
        with out.open("w", encoding="utf-8") as fh:
            n = write_questions(rows, fh)
    except OSError as exc:
        raise CliError(f"cannot write {out} ({exc.strerror or exc})") from None
    print(f"wrote {n} questions to {out}", file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from service.evaluation.feedback_export import format_stats

    store = _open(args)
    try:
        print(format_stats(store))
    except FeedbackStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    return 0
