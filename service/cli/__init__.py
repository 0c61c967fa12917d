"""``python -m service <command>``: ingest, search, ask, serve, cite, calibrate, eval, bench,
train-ranker, feedback.

Failures print one line saying what is wrong and how to fix it, and exit non-zero. Heavy
libraries are imported inside the commands so ``--help`` and error paths stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service import __version__
from service.cli.common import EXIT_FAILURE, EXIT_USAGE, CliError, settings_for
from service.config import SettingsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from service.cli import citing, evaluating, feedback, serving

    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Cited question answering over MSC therapy research summaries.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    serving.register(sub)
    citing.register(sub)
    evaluating.register(sub)
    feedback.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "k", None) is not None:
            most = settings_for(args).max_top_k
            if not 1 <= args.k <= most:
                print(f"error: --k must be between 1 and {most} (QA_MAX_TOP_K)", file=sys.stderr)
                return EXIT_USAGE
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
        from service.index_store import IndexStoreError as IndexProblem

        if isinstance(exc, EmbedderError | IndexProblem | FileNotFoundError | ValueError):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        raise
