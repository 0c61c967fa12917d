"""The benchmark's results as typed records, and their one JSON form.

Every record is a dataclass. :meth:`Record.to_dict` gives the dicts and lists written to
``bench-latest.json``: fields in the order declared here, tuples as lists, and fields with
``OPTIONAL`` metadata left out while they are None (a section that was not run, a row without
server CPU figures). :meth:`Record.from_dict` reads that form back, e.g. a saved report.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Self

from service.evaluation.bench.config import BenchConfig
from service.evaluation.bench.stats import Latency, Summary, summary

_OMIT = "omit when None"  # also spelled out in config.BenchConfig, which cannot import this
OPTIONAL = {_OMIT: True}  # field metadata: left out of the JSON while None


def to_plain(value: Any) -> Any:
    """``value`` as JSON-ready dicts, lists and scalars."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_plain(item)
            for f in fields(value)
            if (item := getattr(value, f.name)) is not None or not f.metadata.get(_OMIT)
        }
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item) for item in value]
    return value


def from_plain(kind: Any, data: Any) -> Any:
    """The value of type ``kind`` (a record, ``X | None``, list, tuple, dict or scalar) that
    :func:`to_plain` turned into ``data``."""
    if is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        present = [f.name for f in fields(kind) if f.name in data]  # the rest keep defaults
        return kind(**{name: from_plain(hints[name], data[name]) for name in present})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return from_plain(inner, data)
    if origin is list:
        return [from_plain(args[0], item) for item in data]
    if origin is tuple:
        return tuple(from_plain(args[0], item) for item in data)
    if origin is dict:
        return {key: from_plain(args[1], item) for key, item in data.items()}
    return data


class Record:
    """A result record: its JSON form and back."""

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = to_plain(self)
        return plain

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        record: Self = from_plain(cls, data)
        return record


# -- latency over repeated runs ----------------------------------------------------------------


@dataclass
class LatencySummary(Record):
    """Each latency percentile (milliseconds) over repeated runs."""

    p50: Summary
    p95: Summary
    p99: Summary
    mean: Summary

    @classmethod
    def of(cls, runs: Sequence[Latency], **more: Any) -> Self:
        """The summary of ``runs``; ``more`` fills the fields a subclass adds."""
        return cls(
            p50=summary([r.p50 for r in runs]),
            p95=summary([r.p95 for r in runs]),
            p99=summary([r.p99 for r in runs]),
            mean=summary([r.mean for r in runs]),
            **more,
        )


# -- sections ------------------------------------------------------------------------------------


@dataclass
class IngestResult(Record):
    seconds: Summary
    documents: int
    chunks: int
    sentences: int
    texts_embedded: int
    note: str


@dataclass
class StartupResult(Record):
    to_ready_s: Summary
    note: str
    ingest: IngestResult | None = field(default=None, metadata=OPTIONAL)


@dataclass
class EmbeddingLatency(LatencySummary):
    cpu_ms_mean: Summary


@dataclass
class InProcessResult(Record):
    chunks: int
    calls_per_run: int
    query_embedding_ms: EmbeddingLatency
    query_embedding_batch16_ms_per_question: Summary
    retrieval_p50_ms: dict[str, Summary]
    answer_composition_p50_ms: Summary
    ask_without_encoder_p50_ms: Summary


@dataclass
class SingleClientRow(LatencySummary):
    """One endpoint with one client; the repeated-question row has latency only."""

    server_cpu_ms_per_request: Summary | None = field(default=None, metadata=OPTIONAL)
    errors: Summary | None = field(default=None, metadata=OPTIONAL)
    requests_per_run: int | None = field(default=None, metadata=OPTIONAL)


@dataclass
class ConcurrentRow(Record):
    endpoint: str
    clients: int
    requests_per_s: Summary
    p50: Summary
    p99: Summary
    server_cpu_ms_per_request: Summary
    errors: Summary
    requests: Summary


@dataclass
class HttpLimits(Record):
    requests_1_client: int
    requests_concurrent: int
    seconds_per_run: float


@dataclass
class HttpResult(Record):
    single_client_ms: dict[str, SingleClientRow]
    concurrent: list[ConcurrentRow]
    errors: int
    error_examples: list[str]
    limits: HttpLimits
    note: str


@dataclass
class MemoryResult(Record):
    rss_at_rest_mb: float
    rss_after_mb: float
    requests: int
    errors: int
    note: str


@dataclass
class SearchRow(Record):
    """Searches of one scale index at one efSearch (None: exact search), in milliseconds."""

    ef_search: int | None
    p50: float
    p95: float
    p99: float
    mean: float
    recall_at_10: float | None = field(default=None, metadata=OPTIONAL)


@dataclass
class IndexResult(Record):
    kind: str
    build_s: float
    disk_mb: float
    memory_mb: float
    process_rss_mb: float
    searches: list[SearchRow]


@dataclass
class ScaleSize(Record):
    chunks: int
    indexes: list[IndexResult]


@dataclass
class HnswSettings(Record):
    m: int
    ef_construction: int
    service_ef_search: int


@dataclass
class ServiceScaleRow(Record):
    """The whole service started on a synthetic build (times in milliseconds, memory in MiB)."""

    chunks: int
    index_type: str
    build_s: float  # writing the synthetic build
    disk_mb: float
    startup_s: float  # model, reader and index, as ``serve`` starts
    rss_before_start_mb: float  # the Python process with nothing loaded
    rss_started_mb: float
    rss_served_mb: float  # after ``requests`` searches and asks
    anon_served_mb: float  # of which heap (FAISS, arrays, objects)
    file_served_mb: float  # and mapped files' pages (records, vectors, BM25, libraries)
    requests: int
    search_p50: float
    search_p99: float
    ask_p50: float
    ask_p99: float
    dense_p50: float  # the approximate index's search alone
    dense_p99: float
    recall_at_10: float  # of the service's dense search against exact search
    backend: str = "embedded"
    # Qdrant backend only: what the API side allocated and still holds after the requests
    # (tracemalloc), leaving out qdrant-client's local-mode engine, which a server deployment
    # runs in the Qdrant server's process.
    api_held_mb: float | None = None


@dataclass
class ScaleResult(Record):
    data: str
    dimension: int
    queries: int
    k: int
    hnsw: HnswSettings
    sizes: list[ScaleSize]
    note: str
    service: list[ServiceScaleRow] | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Target(Record):
    target: str  # e.g. "<= 10"
    measured: float | None
    met: bool | None
    config: str | None = field(default=None, metadata=OPTIONAL)  # the scale configuration


# -- the whole report ----------------------------------------------------------------------------


@dataclass
class Machine(Record):
    cpu: str
    cores: int | None
    memory_gb: float | None
    platform: str
    python: str
    versions: dict[str, str | None]


@dataclass
class RunSettings(Record):
    """The service settings that shape the figures."""

    model: str
    encoder_backend: str
    encoder_threads: int
    query_batching: bool
    query_batch_wait_ms: float
    query_batch_max: int
    query_batch_workers: int
    corpus_dir: str
    index_dir: str
    # QA_METRICS of the servers measured (None in reports from before /metrics existed).
    metrics: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Meta(Record):
    started_at: str
    machine: Machine
    load_average_start: list[float] | None
    settings: RunSettings
    config: BenchConfig
    noise: str
    seconds: float
    load_average_end: list[float] | None


@dataclass
class FeedbackResult(Record):
    """Storing ratings: over HTTP (``POST /api/feedback``) and the store alone."""

    requests_per_run: int
    http_1_client_ms: LatencySummary
    http_1_client_server_cpu_ms: Summary
    http_concurrent: ConcurrentRow
    rows_stored: int  # in the server's database after all runs
    rows_expected: int  # ratings sent: none may be lost
    errors: int
    error_examples: list[str]
    store_insert_ms: LatencySummary  # FeedbackStore.rate in process, one thread
    store_inserts_per_s_threads: Summary  # from 16 threads at once
    note: str


@dataclass
class BenchReport(Record):
    """What ``run_benchmark`` returns: the sections run, and the targets."""

    meta: Meta
    in_process: InProcessResult | None = field(default=None, metadata=OPTIONAL)
    startup: StartupResult | None = field(default=None, metadata=OPTIONAL)
    http: HttpResult | None = field(default=None, metadata=OPTIONAL)
    memory: MemoryResult | None = field(default=None, metadata=OPTIONAL)
    scale: ScaleResult | None = field(default=None, metadata=OPTIONAL)
    feedback: FeedbackResult | None = field(default=None, metadata=OPTIONAL)
    targets: dict[str, Target] = field(default_factory=dict)

    def as_json(self) -> str:
        """The text of ``bench-latest.json``."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
