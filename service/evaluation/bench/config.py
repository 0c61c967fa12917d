"""What a benchmark run measures (:class:`BenchConfig`), and its one error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SECTIONS = ("startup", "in_process", "http", "memory", "scale", "feedback")
SCALE_QUERIES = 200

Say = Callable[[str], None]


class BenchError(RuntimeError):
    """The benchmark could not run (server did not start, bad arguments); one line."""


@dataclass
class BenchConfig:
    repeats: int = 3
    startup_runs: int = 3
    ingest_runs: int = 3
    inprocess_calls: int = 200
    requests_1_client: int = 300
    concurrency: tuple[int, ...] = (4, 16, 64)
    requests_concurrent: int = 1500
    seconds_per_run: float = 20.0
    memory_requests: int = 5000
    scale: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    scale_data: str = "clustered"
    scale_indexes: tuple[str, ...] = ("flat", "hnsw", "hnsw-sq8")
    scale_queries: int = SCALE_QUERIES
    #: Chunk counts of synthetic builds to start the whole service on (``--scale-service``);
    #: None or empty: not run. Left out of the report while None (see results.OPTIONAL).
    scale_service: tuple[int, ...] | None = field(default=None, metadata={"omit when None": True})
    sections: tuple[str, ...] = SECTIONS
    server_timeout_s: float = 180.0

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            repeats=1,
            startup_runs=1,
            ingest_runs=1,
            inprocess_calls=30,
            requests_1_client=40,
            concurrency=(4, 16),
            requests_concurrent=120,
            seconds_per_run=10.0,
            memory_requests=300,
            scale=(10_000,),
            scale_queries=50,
        )
