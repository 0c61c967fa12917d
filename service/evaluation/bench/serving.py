"""The sections measured on a server started here: start-up to ready, HTTP latency and
throughput, and the server's memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.evaluation.bench.config import BenchConfig, BenchError, Say
from service.evaluation.bench.harness import ServerError, ServerProcess, free_port, server_env
from service.evaluation.bench.load import (
    ENDPOINTS,
    LoadResult,
    QuestionSource,
    load_base_questions,
    run_load,
)
from service.evaluation.bench.machine import cpu_seconds, rss_mb
from service.evaluation.bench.results import (
    ConcurrentRow,
    HttpLimits,
    HttpResult,
    MemoryResult,
    SingleClientRow,
    StartupResult,
)
from service.evaluation.bench.stats import latency, summary

if TYPE_CHECKING:
    from service.config import Settings


def start_server(settings: Settings, log_dir: Path, timeout_s: float) -> ServerProcess:
    """``python -m service serve -q`` with ``settings``, ready; BenchError if it does not start."""
    port = free_port()
    server = ServerProcess(
        log_dir / f"server-{port}.log",
        env=server_env(settings),
        args=["-q"],
        port=port,
        timeout_s=timeout_s,
    )
    try:
        server.start()
    except ServerError as exc:
        raise BenchError(str(exc)) from None
    return server


def bench_http(
    settings: Settings, config: BenchConfig, say: Say, log_dir: Path
) -> tuple[StartupResult, HttpResult | None, MemoryResult | None]:
    """Start-up runs, then HTTP latency/throughput and memory on the last server started."""
    startup: list[float] = []
    server: ServerProcess | None = None
    try:
        for run in range(max(1, config.startup_runs)):
            if server is not None:
                server.stop()
            say(f"start-up: run {run + 1}/{config.startup_runs}")
            server = start_server(settings, log_dir, config.server_timeout_s)
            startup.append(server.ready_seconds)
        assert server is not None
        startup_section = StartupResult(
            to_ready_s=summary(startup),
            note="launch of `python -m service serve` to /readyz 200, index already built",
        )
        http, memory = _http_and_memory(server, config, say)
    finally:
        if server is not None:
            server.stop()
    return startup_section, http, memory


def _measured_load(
    server: ServerProcess,
    endpoint: str,
    source: QuestionSource,
    clients: int,
    total: int,
    seconds: float,
) -> tuple[LoadResult, float]:
    """One load run, and the server's CPU milliseconds per request during it."""
    cpu = cpu_seconds(server.pid)
    result = run_load(server.port, endpoint, source, clients, total, seconds)
    cpu = cpu_seconds(server.pid) - cpu
    return result, cpu * 1000 / max(1, result.requests)


def _http_and_memory(
    server: ServerProcess, config: BenchConfig, say: Say
) -> tuple[HttpResult | None, MemoryResult | None]:
    port = server.port
    base = load_base_questions()
    source = QuestionSource(base, "")
    limit = config.seconds_per_run
    time.sleep(0.5)
    memory = None
    if "memory" in config.sections:
        at_rest = rss_mb(server.pid)
        say(f"memory: {config.memory_requests} requests")
        half = config.memory_requests // 2
        mem_search = run_load(port, "/api/search", source, 4, half, 600.0)
        mem_ask = run_load(port, "/api/ask", source, 4, config.memory_requests - half, 600.0)
        time.sleep(0.5)
        memory = MemoryResult(
            rss_at_rest_mb=round(at_rest, 1),
            rss_after_mb=round(rss_mb(server.pid), 1),
            requests=mem_search.requests + mem_ask.requests,
            errors=mem_search.errors + mem_ask.errors,
            note="server RSS right after start-up (no request yet) and after the requests "
            "(half /api/search, half /api/ask, 4 clients)",
        )
    else:
        run_load(port, "/api/search", source, 4, 40, limit)  # warm-up
        run_load(port, "/api/ask", source, 4, 40, limit)
    if "http" not in config.sections:
        return None, memory
    single: dict[str, SingleClientRow] = {}
    errors = 0
    for endpoint in ENDPOINTS:
        runs = []
        for run in range(config.repeats):
            say(f"http {endpoint}: 1 client, run {run + 1}/{config.repeats}")
            result, cpu_ms = _measured_load(
                server, endpoint, source, 1, config.requests_1_client, limit
            )
            errors += result.errors
            runs.append((result, cpu_ms))
        single[endpoint] = SingleClientRow.of(
            [latency(result.latencies) for result, _ in runs],
            server_cpu_ms_per_request=summary([cpu_ms for _, cpu_ms in runs]),
            errors=summary([result.errors for result, _ in runs]),
            requests_per_run=config.requests_1_client,
        )
    repeated_runs = []
    for _ in range(config.repeats):
        result = run_load(port, "/api/search", source, 1, config.requests_1_client, limit, base[0])
        errors += result.errors
        repeated_runs.append(latency(result.latencies))
    single["/api/search (one repeated question)"] = SingleClientRow.of(repeated_runs)
    concurrent: list[ConcurrentRow] = []
    examples: list[str] = []
    for clients in config.concurrency:
        for endpoint in ENDPOINTS:
            runs = []
            for run in range(config.repeats):
                say(f"http {endpoint}: {clients} clients, run {run + 1}/{config.repeats}")
                result, cpu_ms = _measured_load(
                    server, endpoint, source, clients, config.requests_concurrent, limit
                )
                errors += result.errors
                examples += result.error_examples
                runs.append((result, cpu_ms))
            latencies = [latency(result.latencies) for result, _ in runs]
            concurrent.append(
                ConcurrentRow(
                    endpoint=endpoint,
                    clients=clients,
                    requests_per_s=summary([r.requests / r.seconds for r, _ in runs]),
                    p50=summary([lat.p50 for lat in latencies]),
                    p99=summary([lat.p99 for lat in latencies]),
                    server_cpu_ms_per_request=summary([cpu_ms for _, cpu_ms in runs]),
                    errors=summary([r.errors for r, _ in runs]),
                    requests=summary([r.requests for r, _ in runs]),
                )
            )
    http = HttpResult(
        single_client_ms=single,
        concurrent=concurrent,
        errors=errors,
        error_examples=examples[:5],
        limits=HttpLimits(
            requests_1_client=config.requests_1_client,
            requests_concurrent=config.requests_concurrent,
            seconds_per_run=limit,
        ),
        note="keep-alive HTTP/1.1 over real sockets to 127.0.0.1; each question distinct "
        "(query-vector cache misses) except the 'one repeated question' row",
    )
    return http, memory
