"""What every command shares: one-line errors, progress on stderr, settings and the engine
from the common options. Nothing here imports a command, so commands import from it freely."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from service.config import load_settings

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


def settings_for(args: argparse.Namespace) -> Any:
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "corpus_dir", "index_dir", "model"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return load_settings(**overrides)


def engine_for(args: argparse.Namespace, progress: Progress, *, reader: bool = True) -> Any:
    """The engine for a command; ``reader=False`` for commands that do not answer (training)."""
    from service.engine import CONFIGURED, Engine

    settings = settings_for(args)
    progress.say(f"loading model '{settings.model}' and index {settings.index_dir}/ ...")
    engine, ensured = Engine.start(
        settings, progress=progress, reader=CONFIGURED if reader else None
    )
    if ensured.warning:
        print(f"warning: {ensured.warning}", file=sys.stderr)
    if ensured.build is not None:
        report_build(ensured.build, ensured.reason, progress)
    return engine


def report_build(build: Any, reason: str | None, progress: Progress) -> None:
    for problem in build.problems:
        print(f"warning: {problem}", file=sys.stderr)
    m = build.manifest
    why = f" ({reason})" if reason else ""
    progress.say(
        f"built index{why}: {m.documents} documents, {m.chunks} chunks, {m.sentences} sentences; "
        f"embedded {build.embedded}, reused {build.reused}; {build.seconds:.1f} s -> {build.path}"
    )


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus-dir", dest="corpus_dir", help="corpus folder (QA_CORPUS_DIR)")
    p.add_argument("--index-dir", dest="index_dir", help="index folder (QA_INDEX_DIR)")
    p.add_argument("--model", help="embedding model (QA_MODEL)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
