"""The benchmark harness (service/evaluation/bench/) in a tiny configuration.

One run with the hashing embedder, a few requests to a real server on 127.0.0.1 and a 2,000
vector scale test; the checks are on the shape and sanity of the report, never on timings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS, ROOT, make_settings

from service.config import Settings
from service.evaluation.bench import (
    SECTIONS,
    TARGETS,
    BenchConfig,
    BenchReport,
    Summary,
    config_from_args,
    format_markdown,
    generate_vectors,
    measured_targets,
    percentile,
    run_benchmark,
    summary,
    write_outputs,
)
from service.evaluation.bench.results import (
    HnswSettings,
    IndexResult,
    ScaleResult,
    ScaleSize,
    SearchRow,
)

TINY = BenchConfig(
    repeats=1,
    startup_runs=1,
    ingest_runs=1,
    inprocess_calls=8,
    requests_1_client=10,
    concurrency=(4,),
    requests_concurrent=24,
    seconds_per_run=20.0,
    memory_requests=40,
    scale=(2_000,),
    scale_queries=10,
    scale_service=(2_000,),
    server_timeout_s=60.0,
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    settings: Settings = make_settings(tmp_path_factory.mktemp("bench"), CORPUS)
    assert settings.model == "hash"
    return run_benchmark(settings, TINY)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _median(stat: Summary | None) -> float:
    assert stat is not None
    assert stat.min is not None and stat.median is not None and stat.max is not None
    assert stat.min <= stat.median <= stat.max
    return stat.median


def test_report_has_every_section(report: BenchReport) -> None:
    data = report.to_dict()
    for key in ("meta", "startup", "in_process", "http", "memory", "scale", "feedback", "targets"):
        assert key in data, key
    json.dumps(data)  # serialisable as is
    meta = report.meta
    assert meta.machine.cores is not None and meta.machine.cores >= 1
    assert meta.settings.model == "hash"
    assert meta.settings.metrics == "on"  # QA_METRICS of the servers measured


def test_startup_figures(report: BenchReport) -> None:
    startup = report.startup
    assert startup is not None
    assert _positive(_median(startup.to_ready_s))
    ingest = startup.ingest
    assert ingest is not None
    assert _positive(_median(ingest.seconds))
    assert ingest.documents == 5 and ingest.chunks > 0


def test_in_process_figures(report: BenchReport) -> None:
    inproc = report.in_process
    assert inproc is not None
    embed = inproc.query_embedding_ms
    assert _positive(_median(embed.p50))
    assert _median(embed.p50) <= _median(embed.p99)
    assert _positive(_median(inproc.query_embedding_batch16_ms_per_question))
    assert set(inproc.retrieval_p50_ms) == {"rerank", "hybrid", "dense", "bm25"}
    for stat in inproc.retrieval_p50_ms.values():
        assert _positive(_median(stat))
    assert _positive(_median(inproc.answer_composition_p50_ms))
    assert _positive(_median(inproc.ask_without_encoder_p50_ms))


def test_http_figures(report: BenchReport) -> None:
    http = report.http
    assert http is not None
    assert http.errors == 0, http.error_examples
    for endpoint in ("/api/search", "/api/ask"):
        row = http.single_client_ms[endpoint]
        p50, p95, p99 = (_median(stat) for stat in (row.p50, row.p95, row.p99))
        assert _positive(p50)
        assert p50 <= p95 <= p99
        assert _median(row.errors) == 0
    rows = http.concurrent
    assert {(r.endpoint, r.clients) for r in rows} == {
        ("/api/search", 4),
        ("/api/ask", 4),
    }
    for c in rows:
        assert _positive(_median(c.requests_per_s))
        assert _median(c.p50) <= _median(c.p99)
        assert _median(c.errors) == 0
        assert _median(c.requests) == TINY.requests_concurrent


def test_memory_figures(report: BenchReport) -> None:
    memory = report.memory
    assert memory is not None
    assert _positive(memory.rss_at_rest_mb) and _positive(memory.rss_after_mb)
    assert memory.requests == TINY.memory_requests
    assert memory.errors == 0


def test_scale_figures(report: BenchReport) -> None:
    scale = report.scale
    assert scale is not None
    assert "synthetic" in scale.note
    (size,) = scale.sizes
    assert size.chunks == 2_000
    kinds = [ix.kind for ix in size.indexes]
    assert kinds == ["flat", "hnsw", "hnsw-sq8"]
    for ix in size.indexes:
        assert ix.build_s >= 0 and _positive(ix.disk_mb) and _positive(ix.process_rss_mb)
        for row in ix.searches:
            assert _positive(row.p50) and row.p50 <= row.p99
            assert row.recall_at_10 is not None and 0.0 <= row.recall_at_10 <= 1.0
    flat = size.indexes[0].searches[0]
    assert flat.recall_at_10 == 1.0
    # HNSW on 2,000 clustered vectors finds nearly all true neighbours.
    best = max(r.recall_at_10 or 0.0 for r in size.indexes[1].searches)
    assert best >= 0.9
    # The whole service started on a synthetic build of 2,000 chunks (exact search there).
    assert scale.service is not None
    (row,) = scale.service
    assert (row.chunks, row.index_type, row.requests) == (2_000, "flat", 300)
    assert row.recall_at_10 == 1.0
    assert row.rss_before_start_mb < row.rss_started_mb <= row.rss_served_mb + 50
    assert row.anon_served_mb + row.file_served_mb == pytest.approx(row.rss_served_mb, abs=1)
    for p50, p99 in ((row.search_p50, row.search_p99), (row.ask_p50, row.ask_p99)):
        assert _positive(p50) and p50 <= p99
    assert _positive(row.startup_s) and _positive(row.disk_mb)


def test_the_whole_service_at_scale_on_the_qdrant_backend(tmp_path: Path) -> None:
    from service.evaluation.bench.service_scale import bench_service_scale

    settings = make_settings(
        tmp_path / "s", CORPUS, backend="qdrant", qdrant_path=str(tmp_path / "unused")
    )
    said: list[str] = []
    (row,) = bench_service_scale(settings, (600,), tmp_path / "work", said.append, requests=4)
    assert (row.backend, row.chunks, row.requests) == ("qdrant", 600, 4)
    assert row.recall_at_10 == 1.0  # local mode searches exactly
    # What the API side holds: the model and per-document metadata, bounded caches; not the
    # collection (the local engine's allocations are left out).
    assert row.api_held_mb is not None and 0 < row.api_held_mb < row.rss_served_mb
    assert any("publishing" in line for line in said)
    assert not (tmp_path / "work" / "qdrant-600").exists()  # the folder is removed after
    assert not (tmp_path / "unused").exists()  # the configured store is never touched


def test_feedback_figures(report: BenchReport) -> None:
    fb = report.feedback
    assert fb is not None
    assert fb.errors == 0, fb.error_examples
    assert fb.requests_per_run == TINY.requests_1_client
    assert fb.rows_stored == fb.rows_expected == 2 * TINY.requests_1_client  # nothing lost
    for lat in (fb.http_1_client_ms, fb.store_insert_ms):
        assert _positive(_median(lat.p50)) and _median(lat.p50) <= _median(lat.p99)
    c = fb.http_concurrent
    assert (c.endpoint, c.clients, _median(c.requests)) == ("/api/feedback", 16, 10)
    assert _positive(_median(c.requests_per_s)) and _median(c.errors) == 0
    assert _positive(_median(fb.store_inserts_per_s_threads))
    assert "## Feedback" in format_markdown(report)


def test_targets_and_outputs(report: BenchReport, tmp_path: Path) -> None:
    targets = report.targets
    assert set(targets) == set(TARGETS)
    assert targets["http_errors"].met is True
    assert targets["scale_1m_recall_at_10"].measured is None  # no 1M run here
    written = write_outputs(report, tmp_path)
    assert [p.name for p in written] == ["bench-latest.json", "bench-latest.md"]
    assert json.loads(written[0].read_text())["targets"] == {
        name: t.to_dict() for name, t in targets.items()
    }
    text = written[1].read_text()
    for heading in ("## Targets", "## Start-up", "## In-process", "## HTTP", "## Scale"):
        assert heading in text


# -- pieces --------------------------------------------------------------------------------------


def test_percentile_and_summary() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    s = summary([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max) == (2.0, 1.0, 3.0)
    assert summary([]).median is None


SAVED = sorted((ROOT / "eval" / "results").glob("bench*.json"))


@pytest.mark.parametrize("path", SAVED, ids=[p.name for p in SAVED])
def test_saved_reports_read_back_to_the_same_json_and_markdown(path: Path) -> None:
    """The typed report of a saved run writes the same JSON (keys, order, values) and the same
    Markdown as that run wrote."""
    report = BenchReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert report.as_json() == path.read_text(encoding="utf-8")
    assert format_markdown(report) + "\n" == path.with_suffix(".md").read_text(encoding="utf-8")


def test_sections_not_run_are_left_out_of_the_json() -> None:
    data = json.loads((ROOT / "eval/results/bench-latest.json").read_text(encoding="utf-8"))
    del data["scale"], data["memory"], data["startup"]["ingest"]
    report = BenchReport.from_dict(data)
    assert report.scale is None and report.memory is None
    assert report.startup is not None and report.startup.ingest is None
    assert list(report.to_dict()) == ["meta", "in_process", "startup", "http", "targets"]
    assert list(report.to_dict()["startup"]) == ["to_ready_s", "note"]
    repeated = report.to_dict()["http"]["single_client_ms"]["/api/search (one repeated question)"]
    assert list(repeated) == ["p50", "p95", "p99", "mean"]  # no CPU, errors or request count
    assert "## Scale" not in format_markdown(report)


def test_generated_vectors_are_unit_length() -> None:
    import numpy as np

    for kind in ("clustered", "uniform"):
        vectors = generate_vectors(500, 32, seed=3, kind=kind)
        assert vectors.shape == (500, 32) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = generate_vectors(500, 32, seed=3)
    np.testing.assert_array_equal(again, generate_vectors(500, 32, seed=3))


def test_best_approximate_configuration_is_picked_for_1m() -> None:
    def row(ef: int, p50: float, recall: float) -> SearchRow:
        return SearchRow(ef, p50=p50, p95=p50, p99=p50 * 2, mean=p50, recall_at_10=recall)

    def index(kind: str, rss: float, searches: list[SearchRow]) -> IndexResult:
        return IndexResult(kind, 1.0, 100.0, 100.0, process_rss_mb=rss, searches=searches)

    flat = index("flat", 1600, [row(0, 40, 1)])
    hnsw = index("hnsw", 1900, [row(64, 1.0, 0.90), row(128, 2.0, 0.96), row(256, 4, 0.99)])
    scale = ScaleResult(
        data="clustered",
        dimension=384,
        queries=200,
        k=10,
        hnsw=HnswSettings(m=32, ef_construction=80, service_ef_search=64),
        sizes=[ScaleSize(chunks=1_000_000, indexes=[flat, hnsw])],
        note="",
    )
    targets = measured_targets(scale=scale)
    assert targets["scale_1m_recall_at_10"].measured == 0.96
    assert targets["scale_1m_search_p50_ms"].measured == 2.0
    assert targets["scale_1m_search_p50_ms"].config == "hnsw, efSearch 128"
    assert targets["scale_1m_rss_mb"].met is True
    assert targets["startup_to_ready_s"].met is None  # not measured


def test_command_line_flags() -> None:
    from service.cli import build_parser

    parser = build_parser()
    config = config_from_args(parser.parse_args(["bench", "--quick"]))
    assert config.scale == (10_000,) and config.repeats == 1
    config = config_from_args(parser.parse_args(["bench", "--scale", "10000,100000"]))
    assert config.scale == (10_000, 100_000) and config.repeats == 3
    assert config_from_args(parser.parse_args(["bench", "--scale", "0"])).scale == ()
    config = config_from_args(
        parser.parse_args(["bench", "--sections", "http,scale", "--concurrency", "2,8"])
    )
    assert config.sections == ("http", "scale") and config.concurrency == (2, 8)
    assert set(BenchConfig().sections) == set(SECTIONS)


def test_bad_flags_fail_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    assert main(["bench", "--sections", "everything", "--no-write"]) == 1
    assert "unknown section(s) everything" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--scale", "lots"])


def test_markdown_names_the_machine(report: BenchReport) -> None:
    text = format_markdown(report)
    assert report.meta.machine.cpu in text
    assert "median of repeated runs" in text
    assert "query batching on, metrics on." in text
