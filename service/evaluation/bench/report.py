"""The targets, and the report as Markdown tables and files."""

from __future__ import annotations

import os
from pathlib import Path

from service.evaluation.bench.results import (
    BenchReport,
    FeedbackResult,
    HttpResult,
    IndexResult,
    ScaleResult,
    SearchRow,
    StartupResult,
    Target,
)
from service.evaluation.bench.stats import Summary

# Targets on the 2-core reference machine (the benchmark reports them; no test times them).
TARGETS: dict[str, tuple[str, float]] = {
    "search_p50_ms_1_client": ("<=", 10.0),
    "search_p99_ms_1_client": ("<=", 30.0),
    # 20 ms before the reader; the reader issue allows 40 ms with it (QA_READER=on).
    "ask_p50_ms_1_client": ("<=", 40.0),
    "search_requests_per_s_16_clients": (">=", 200.0),
    "http_errors": ("<=", 0.0),
    "startup_to_ready_s": ("<=", 8.0),
    "scale_1m_search_p50_ms": ("<=", 20.0),
    "scale_1m_recall_at_10": (">=", 0.95),
    "scale_1m_rss_mb": ("<=", 2048.0),
}


# -- targets -------------------------------------------------------------------------------------


def _median(stat: Summary | None) -> float | None:
    return None if stat is None or stat.median is None else float(stat.median)


def measured_targets(
    *,
    startup: StartupResult | None = None,
    http: HttpResult | None = None,
    scale: ScaleResult | None = None,
) -> dict[str, Target]:
    """Each of :data:`TARGETS` with its measured value (None: not measured here) and whether
    it was met."""
    single = http.single_client_ms if http else {}
    search, ask = single.get("/api/search"), single.get("/api/ask")
    values: dict[str, float | None] = {
        "search_p50_ms_1_client": _median(search.p50) if search else None,
        "search_p99_ms_1_client": _median(search.p99) if search else None,
        "ask_p50_ms_1_client": _median(ask.p50) if ask else None,
        "search_requests_per_s_16_clients": next(
            (
                _median(row.requests_per_s)
                for row in (http.concurrent if http else [])
                if row.endpoint == "/api/search" and row.clients == 16
            ),
            None,
        ),
        "http_errors": float(http.errors) if http else None,
        "startup_to_ready_s": _median(startup.to_ready_s) if startup else None,
    }
    values.update(dict.fromkeys(("scale_1m_search_p50_ms", "scale_1m_recall_at_10")))
    values["scale_1m_rss_mb"] = None
    best = _best_approximate(scale, 1_000_000) if scale else None
    scale_choice = None
    if best is not None:
        ix, row = best
        values["scale_1m_search_p50_ms"] = row.p50
        values["scale_1m_recall_at_10"] = row.recall_at_10
        values["scale_1m_rss_mb"] = float(ix.process_rss_mb)
        scale_choice = f"{ix.kind}, efSearch {row.ef_search}"
    out: dict[str, Target] = {}
    for name, (op, target) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value <= target if op == "<=" else value >= target)
        out[name] = Target(target=f"{op} {target:g}", measured=value, met=met)
    if scale_choice:
        out["scale_1m_search_p50_ms"].config = scale_choice
    return out


def _best_approximate(scale: ScaleResult, n: int) -> tuple[IndexResult, SearchRow] | None:
    """The fastest approximate configuration at ``n`` with recall@10 >= 0.95 (or else the one
    with the best recall), with its index (for the process RSS)."""
    for size in scale.sizes:
        if size.chunks != n:
            continue
        options = [(ix, row) for ix in size.indexes if ix.kind != "flat" for row in ix.searches]
        if not options:
            return None
        good = [o for o in options if (o[1].recall_at_10 or 0) >= 0.95]
        if good:
            return min(good, key=lambda o: (o[1].p50, float(o[0].process_rss_mb)))
        return max(options, key=lambda o: o[1].recall_at_10 or 0)
    return None


# -- Markdown ------------------------------------------------------------------------------------


def _fmt(value: Summary | float | str | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, Summary):
        if value.median is None or value.min is None or value.max is None:
            return "-"
        if value.min == value.max:
            return f"{value.median:.{digits}f}"
        return f"{value.median:.{digits}f} ({value.min:.{digits}f}-{value.max:.{digits}f})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_markdown(report: BenchReport) -> str:
    meta = report.meta
    m = meta.machine
    metrics = "" if meta.settings.metrics is None else f", metrics {meta.settings.metrics}"
    lines = [
        "# Benchmark",
        "",
        f"{meta.started_at}; {m.cpu}, {m.cores} cores, {m.memory_gb} GB; "
        f"Python {m.python}; model `{meta.settings.model}`, encoder backend "
        f"`{meta.settings.encoder_backend}`, query batching "
        f"{'on' if meta.settings.query_batching else 'off'}{metrics}. Load average at start "
        f"{meta.load_average_start}, at end {meta.load_average_end}.",
        "",
        "Figures are the median of repeated runs with (min-max); the machine may be shared, "
        "so they are noisy.",
        "",
    ]
    if report.targets:
        lines += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for name, t in report.targets.items():
            measured = _fmt(t.measured, 3 if "recall" in name else 1)
            if t.config:
                measured += f" ({t.config})"
            lines.append(f"| {name} | {t.target} | {measured} | {_fmt(t.met)} |")
        lines.append("")
    if report.startup:
        lines += _startup_lines(report.startup)
    if report.in_process:
        inproc = report.in_process
        embed = inproc.query_embedding_ms
        lines += [
            "## In-process (milliseconds)",
            "",
            "| step | p50 | p99 |",
            "|---|---|---|",
            f"| query embedding, 1 question | {_fmt(embed.p50, 2)} | {_fmt(embed.p99, 2)} |",
            f"| query embedding, 1 question, CPU time (mean) | {_fmt(embed.cpu_ms_mean, 2)} | |",
            "| query embedding, per question in a batch of 16 | "
            f"{_fmt(inproc.query_embedding_batch16_ms_per_question, 2)} | |",
        ]
        for mode, value in inproc.retrieval_p50_ms.items():
            lines.append(f"| retrieval ({mode}, query vector given) | {_fmt(value, 2)} | |")
        lines += [
            f"| answer composition | {_fmt(inproc.answer_composition_p50_ms, 2)} | |",
            f"| Engine.ask, query vector cached | {_fmt(inproc.ask_without_encoder_p50_ms, 2)} | |",
            "",
        ]
    if report.http:
        lines += _http_lines(report.http)
    if report.memory:
        memory = report.memory
        lines += [
            "## Server memory",
            "",
            f"RSS at rest {memory.rss_at_rest_mb} MiB; after {memory.requests} requests "
            f"{memory.rss_after_mb} MiB ({memory.errors} errors).",
            "",
        ]
    if report.scale:
        lines += _scale_lines(report.scale)
    if report.feedback:
        lines += _feedback_lines(report.feedback)
    return "\n".join(lines)


def _startup_lines(startup: StartupResult) -> list[str]:
    lines = ["## Start-up", "", "| measure | seconds |", "|---|---|"]
    lines.append(f"| launch to /readyz 200 | {_fmt(startup.to_ready_s, 2)} |")
    if startup.ingest:
        ing = startup.ingest
        lines.append(
            f"| ingest {ing.documents} documents / {ing.chunks} chunks from nothing "
            f"| {_fmt(ing.seconds, 2)} |"
        )
    return [*lines, ""]


def _http_lines(http: HttpResult) -> list[str]:
    lines = [
        "## HTTP, one client (milliseconds)",
        "",
        "| endpoint | p50 | p95 | p99 | server CPU ms/request |",
        "|---|---|---|---|---|",
    ]
    for endpoint, row in http.single_client_ms.items():
        lines.append(
            f"| {endpoint} | {_fmt(row.p50)} | {_fmt(row.p95)} | {_fmt(row.p99)} | "
            f"{_fmt(row.server_cpu_ms_per_request)} |"
        )
    lines += [
        "",
        "## HTTP, concurrent clients",
        "",
        "| endpoint | clients | requests/s | p50 ms | p99 ms | server CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in http.concurrent:
        lines.append(
            f"| {c.endpoint} | {c.clients} | {_fmt(c.requests_per_s)} | {_fmt(c.p50)} | "
            f"{_fmt(c.p99)} | {_fmt(c.server_cpu_ms_per_request)} | {_fmt(c.errors, 0)} |"
        )
    return [*lines, "", f"Errors over all HTTP runs: {http.errors}.", ""]


def _scale_lines(scale: ScaleResult) -> list[str]:
    lines = [
        "## Scale (vector index only)",
        "",
        scale.note + ".",
        "",
        "| chunks | index | efSearch | build s | disk MiB | memory MiB | process RSS MiB "
        "| p50 ms | p99 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in scale.sizes:
        for ix in size.indexes:
            for row in ix.searches:
                recall = row.recall_at_10 if row.recall_at_10 is not None else float("nan")
                lines.append(
                    f"| {size.chunks:,} | {ix.kind} | {row.ef_search or '-'} | "
                    f"{ix.build_s:.1f} | {ix.disk_mb:.0f} | {ix.memory_mb:.0f} | "
                    f"{ix.process_rss_mb:.0f} | {row.p50:.2f} | {row.p99:.2f} | {recall:.3f} |"
                )
    if scale.service:
        lines += [
            "",
            "## Scale (the whole service on a synthetic build)",
            "",
            "Started as `serve` starts (model, reader, index) in a process of its own; RSS "
            "from /proc, after start-up and after the searches and asks; in-process calls "
            "(encoder included); recall@10 of the service's dense search against exact search.",
            "",
            "| chunks | index | disk MiB | start-up s | RSS started MiB | RSS served MiB "
            "(heap / mapped) | search p50 / p99 ms | ask p50 / p99 ms | dense p50 / p99 ms "
            "| recall@10 | backend | API side holds MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scale.service:
            held = "-" if r.api_held_mb is None else f"{r.api_held_mb:.1f}"
            lines.append(
                f"| {r.chunks:,} | {r.index_type} | {r.disk_mb:.0f} | {r.startup_s:.1f} | "
                f"{r.rss_started_mb:.0f} | {r.rss_served_mb:.0f} ({r.anon_served_mb:.0f} / "
                f"{r.file_served_mb:.0f}) | {r.search_p50:.1f} / {r.search_p99:.1f} | "
                f"{r.ask_p50:.1f} / {r.ask_p99:.1f} | {r.dense_p50:.2f} / {r.dense_p99:.2f} | "
                f"{r.recall_at_10:.3f} | {r.backend} | {held} |"
            )
        if any(r.api_held_mb is not None for r in scale.service):
            lines += [
                "",
                "Qdrant backend (local mode): RSS includes qdrant-client's local-mode engine, "
                "which keeps the whole collection in this process and searches it by brute "
                "force, and the latencies include tracemalloc's overhead; the API side's "
                "holding is the figure that a server deployment's API process would have "
                "(allocations still held after the requests, the local engine's left out).",
            ]
    return [*lines, ""]


def _feedback_lines(fb: FeedbackResult) -> list[str]:
    http, store, c = fb.http_1_client_ms, fb.store_insert_ms, fb.http_concurrent
    return [
        "## Feedback (milliseconds)",
        "",
        fb.note + ".",
        "",
        "| measure | p50 | p95 | p99 | server CPU ms/request |",
        "|---|---|---|---|---|",
        f"| POST /api/feedback, 1 client | {_fmt(http.p50, 2)} | {_fmt(http.p95, 2)} | "
        f"{_fmt(http.p99, 2)} | {_fmt(fb.http_1_client_server_cpu_ms, 2)} |",
        f"| POST /api/feedback, {c.clients} clients | {_fmt(c.p50, 2)} | | {_fmt(c.p99, 2)} | "
        f"{_fmt(c.server_cpu_ms_per_request, 2)} |",
        f"| FeedbackStore.rate, 1 thread | {_fmt(store.p50, 3)} | {_fmt(store.p95, 3)} | "
        f"{_fmt(store.p99, 3)} | |",
        "",
        f"{c.clients} clients: {_fmt(c.requests_per_s)} ratings/s over HTTP; the store alone "
        f"from 16 threads: {_fmt(fb.store_inserts_per_s_threads, 0)} inserts/s. Rows stored "
        f"{fb.rows_stored} of {fb.rows_expected} sent ({fb.errors} errors); "
        f"{fb.requests_per_run} ratings per run.",
        "",
    ]


def write_outputs(report: BenchReport, out: Path) -> list[Path]:
    """``bench-latest.json`` and ``bench-latest.md`` in ``out``, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("bench-latest.json", report.as_json()),
        ("bench-latest.md", format_markdown(report) + "\n"),
    ):
        path = out / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
