"""Live re-indexing: one at a time, with its progress and how the last one ended.

:meth:`Reindexer.run` rebuilds the index from the corpus (:func:`service.ingest.rebuild_index`)
and swaps it into the running engine, or, when nothing could be loaded at start-up, starts an
engine on the new index. Questions keep being answered from the old index until the swap. A
second run while one is going raises :class:`ReindexBusy`; a failed run leaves the index in
service untouched and is reported as a :class:`ReindexOutcome` with its error and per-file
problems. The admin endpoint (:mod:`service.api.admin_routes`) only shapes these for HTTP.
:attr:`Reindexer.counts` keeps how many runs ended each way (:data:`OUTCOMES`) since start-up,
for the metrics (:mod:`service.api.metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol, get_args

from service.backends import rebuild
from service.config import Settings
from service.documents import LoadProblem
from service.embedding import load_embedder
from service.engine import Engine
from service.index_store import BuildReport
from service.ingest import ReindexError

log = logging.getLogger("service.reindexing")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CorpusChange(Protocol):
    """Files added to or removed from the corpus folder (:mod:`service.corpus_files`)."""

    def apply(self) -> None: ...

    def undo(self) -> None: ...

    def finish(self) -> None: ...


#: How a re-index can end: ``succeeded`` (a new build in service whose corpus differs from the
#: one before, or the first one served), ``unchanged`` (rebuilt and swapped in, but the corpus is
#: the same as before), ``failed`` (the index in service is untouched) or ``busy`` (refused:
#: another re-index was running).
ReindexResultKind = Literal["succeeded", "unchanged", "failed", "busy"]
OUTCOMES: tuple[ReindexResultKind, ...] = get_args(ReindexResultKind)


class ReindexBusy(RuntimeError):
    """A re-index is already running."""

    def __init__(self, started_at: str | None) -> None:
        super().__init__(f"a re-index is already running (started {started_at})")
        self.started_at = started_at


@dataclass(frozen=True)
class ReindexOutcome:
    """How one re-index ended: ``report`` when it succeeded, else ``error``."""

    started_at: str
    finished_at: str
    seconds: float
    previous_build: str | None
    report: BuildReport | None = None
    error: str | None = None
    problems: list[LoadProblem] = field(default_factory=list)
    kind: ReindexResultKind = "failed"

    @property
    def ok(self) -> bool:
        return self.report is not None


@dataclass
class Reindexer:
    """The one re-index that may run, its progress, and how the last one ended."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started_at: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    last: ReindexOutcome | None = None
    counts: dict[ReindexResultKind, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    _counts_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _count(self, kind: ReindexResultKind) -> None:
        with self._counts_lock:
            self.counts[kind] += 1

    def progress(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total

    def run(
        self, settings: Settings, engine: Engine | None, change: CorpusChange | None = None
    ) -> tuple[ReindexOutcome, Engine | None]:
        """Rebuild and serve the new index; returns the outcome and the engine now serving
        (``engine`` itself, or a new one when there was none). Raises :class:`ReindexBusy`.

        ``change`` (files added to or removed from the corpus folder) is applied first, while
        no other re-index can start, and undone if the rebuild fails."""
        if not self.lock.acquire(blocking=False):
            self._count("busy")
            raise ReindexBusy(self.started_at)
        started_at = now()
        started = time.perf_counter()
        previous = engine.data.build_name if engine is not None else None
        previous_corpus = engine.data.manifest.corpus_hash if engine is not None else None
        try:
            self.started_at, self.stage, self.done, self.total = started_at, None, 0, 0
            log.info("re-index started")
            try:
                if change is not None:
                    change.apply()
                if engine is not None:
                    report = engine.reindex(progress=self.progress)
                else:  # nothing was loaded at start-up: build from scratch and start serving
                    embedder = load_embedder(settings)
                    report, data = rebuild(settings, embedder, progress=self.progress)
                    engine = Engine(settings, embedder, data)
            except Exception as exc:
                if change is not None:
                    change.undo()
                if isinstance(exc, ReindexError):
                    message, problems = str(exc), exc.problems
                else:
                    log.exception("re-index failed")
                    message, problems = f"{type(exc).__name__}: {exc}", []
                log.error("re-index failed: %s", message)
                outcome = ReindexOutcome(
                    started_at,
                    now(),
                    round(time.perf_counter() - started, 3),
                    previous,
                    error=message,
                    problems=problems,
                    kind="failed",
                )
            else:
                if change is not None:
                    change.finish()
                m = report.manifest
                log.info(
                    "re-index done: %s documents, %s chunks, %s problems, %.1f s",
                    m.documents,
                    m.chunks,
                    len(report.problems),
                    report.seconds,
                )
                changed = previous_corpus is None or m.corpus_hash != previous_corpus
                outcome = ReindexOutcome(
                    started_at,
                    now(),
                    round(report.seconds, 3),
                    previous,
                    report=report,
                    kind="succeeded" if changed else "unchanged",
                )
            self.last = outcome
            self._count(outcome.kind)
            return outcome, engine
        finally:
            self.started_at = None
            self.lock.release()
