"""``python -m service bench``: start-up, in-process, HTTP, memory and scale measurements.

Sections (each a key of the JSON written to ``eval/results/bench-latest.json``; the same
figures as Markdown tables go to ``bench-latest.md`` and stdout):

``startup``
    Seconds from launching ``python -m service serve`` to ``/readyz`` answering 200 (index
    already built), and in-process ``ingest`` of the corpus into an empty temporary index.
``in_process``
    Query embedding (one question per call, and per question in a batch of 16), retrieval per
    mode (query vector given, so the encoder is not counted) and answer composition.
``http``
    A server started here on 127.0.0.1 and real sockets (keep-alive HTTP/1.1 clients on
    asyncio): ``/api/search`` and ``/api/ask`` latency percentiles with one client, and
    throughput and p99 with 4, 16 and 64 concurrent clients. Every question is distinct, so
    the query-vector cache never hits; one extra row repeats a single question.
``memory``
    Resident memory (``VmRSS`` from ``/proc``) of that server at rest and after N requests.
``feedback``
    Storing ratings of answers: ``POST /api/feedback`` latency with one client and with 16 on a
    server with its own temporary feedback database (every rating kept: the rows are counted),
    and the store's insert alone, on one thread and from 16 (:mod:`.feedback`); as many
    ratings per run as ``--requests``, at most 150.
``scale``
    Generated vectors (synthetic, NOT real embeddings: Gaussian clusters on the unit sphere, or
    uniform random unit vectors with ``--scale-data uniform``) at 10k, 100k and 1M chunks:
    build time, size on disk and in memory, single-query latency and recall@10 against exact
    search, for FAISS ``IndexFlatIP`` (exact), HNSW and HNSW with 8-bit scalar-quantised
    vectors. Each index is measured in a fresh child process so its memory is its own.
    Then, with ``--scale-service 100000,1000000``, the whole service: a synthetic
    build written straight through the index writer (no encoder), the service started on it
    in a child process as ``serve`` starts it, its resident memory after start-up and after
    300 searches and asks, their latency, and the dense search's recall@10
    (:mod:`.service_scale`).

The package: :mod:`.config` (what to run), :mod:`.stats` (percentiles, median of runs),
:mod:`.results` (the typed report and its JSON form), :mod:`.harness` (a server of our own,
shared with the tests), :mod:`.load` (the HTTP load generator), :mod:`.in_process`,
:mod:`.serving`, :mod:`.scale` and :mod:`.feedback` (the sections), :mod:`.machine` (/proc
readings) and :mod:`.report` (targets, Markdown, the files written).

Every figure is the median of ``--repeats`` runs with their min and max; the machine may be
shared with other work, so figures are noisy. Request loops are bounded in count and time and
only ever reach 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.evaluation.bench.config import SECTIONS, BenchConfig, BenchError, Say
from service.evaluation.bench.feedback import bench_feedback
from service.evaluation.bench.harness import HOST, ServerError, ServerProcess, free_port
from service.evaluation.bench.in_process import bench_in_process, bench_ingest
from service.evaluation.bench.load import LoadResult, QuestionSource, run_load
from service.evaluation.bench.machine import load_average, machine_info
from service.evaluation.bench.report import (
    TARGETS,
    format_markdown,
    measured_targets,
    write_outputs,
)
from service.evaluation.bench.results import (
    BenchReport,
    FeedbackResult,
    HttpResult,
    InProcessResult,
    MemoryResult,
    Meta,
    RunSettings,
    ScaleResult,
    StartupResult,
)
from service.evaluation.bench.scale import bench_scale, generate_vectors
from service.evaluation.bench.service_scale import bench_service_scale
from service.evaluation.bench.serving import bench_http
from service.evaluation.bench.stats import Summary, percentile, summary

if TYPE_CHECKING:
    from service.config import Settings

__all__ = [
    "HOST",
    "SECTIONS",
    "TARGETS",
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "LoadResult",
    "QuestionSource",
    "ServerError",
    "ServerProcess",
    "Summary",
    "config_from_args",
    "format_markdown",
    "free_port",
    "generate_vectors",
    "measured_targets",
    "percentile",
    "run_benchmark",
    "run_load",
    "summary",
    "write_outputs",
]


@contextlib.contextmanager
def _log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_benchmark(settings: Settings, config: BenchConfig, say: Say | None = None) -> BenchReport:
    """Run the selected sections and return the report (its JSON form is the module doc's)."""
    say = say or (lambda _message: None)
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    load_average_start = load_average()
    sections = set(config.sections)
    in_process: InProcessResult | None = None
    startup: StartupResult | None = None
    http: HttpResult | None = None
    memory: MemoryResult | None = None
    scale: ScaleResult | None = None
    feedback: FeedbackResult | None = None
    if "in_process" in sections:
        say("in-process measurements (this also builds the index if needed) ...")
        in_process = bench_in_process(settings, config, say)
    else:
        from service.backends import open_index
        from service.embedding import load_embedder

        open_index(settings, load_embedder(settings))  # the servers need a built index
    if settings.backend == "qdrant":
        from service.qdrant_index import close_clients

        close_clients()  # local mode allows one process per folder, and the servers come next
    if sections & {"startup", "http", "memory"}:
        with _log_dir() as logs:
            measured_startup, http, memory = bench_http(settings, config, say, logs)
        if "startup" in sections:
            startup = measured_startup
    if startup is not None and config.ingest_runs > 0:
        startup = replace(startup, ingest=bench_ingest(settings, config, say))
    if "scale" in sections and (config.scale or config.scale_service):
        scale = bench_scale(settings, config, say)
        if config.scale_service:
            with tempfile.TemporaryDirectory(prefix="bench-service-scale-") as tmp:
                rows = bench_service_scale(settings, config.scale_service, Path(tmp), say)
            scale = replace(scale, service=rows)
    if "feedback" in sections:
        feedback = bench_feedback(settings, config, say)
    s = settings
    meta = Meta(
        started_at=started_at,
        machine=machine,
        load_average_start=load_average_start,
        settings=RunSettings(
            model=s.model,
            encoder_backend=s.encoder_backend,
            encoder_threads=s.encoder_threads,
            query_batching=s.query_batching,
            query_batch_wait_ms=s.query_batch_wait_ms,
            query_batch_max=s.query_batch_max,
            query_batch_workers=s.query_batch_workers,
            corpus_dir=str(s.corpus_dir),
            index_dir=str(s.index_dir),
            metrics=s.metrics,
        ),
        config=config,
        noise="median of repeated runs with min and max; other work may share the machine",
        seconds=round(time.perf_counter() - started, 1),
        load_average_end=load_average(),
    )
    return BenchReport(
        meta=meta,
        in_process=in_process,
        startup=startup,
        http=http,
        memory=memory,
        scale=scale,
        feedback=feedback,
        targets=measured_targets(startup=startup, http=http, scale=scale),
    )


# -- command line ----------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig.quick() if args.quick else BenchConfig()
    changes: dict[str, Any] = {}
    if args.scale is not None:
        changes["scale"] = args.scale
    if getattr(args, "scale_service", None) is not None:
        changes["scale_service"] = args.scale_service
    if args.scale_data:
        changes["scale_data"] = args.scale_data
    if args.scale_indexes:
        kinds = tuple(k.strip() for k in args.scale_indexes.split(",") if k.strip())
        unknown = [k for k in kinds if k not in ("flat", "hnsw", "hnsw-sq8")]
        if unknown:
            raise BenchError(f"unknown index kind(s) {', '.join(unknown)}; use hnsw, hnsw-sq8")
        changes["scale_indexes"] = kinds
    if args.sections:
        sections = tuple(s.strip().replace("-", "_") for s in args.sections.split(",") if s)
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise BenchError(f"unknown section(s) {', '.join(unknown)}; use {', '.join(SECTIONS)}")
        changes["sections"] = sections
    for name, attr in (("repeats", "repeats"), ("requests", "requests_1_client")):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise BenchError(f"--{name} must be at least 1")
            changes[attr] = value
    if args.repeats is not None:
        changes["startup_runs"] = changes["ingest_runs"] = args.repeats
    if args.concurrency is not None:
        if any(c > 256 for c in args.concurrency):
            raise BenchError("--concurrency: at most 256 clients")
        changes["concurrency"] = args.concurrency
    if args.memory_requests is not None:
        changes["memory_requests"] = max(1, args.memory_requests)

    return replace(config, **changes)
