"""In-process timing: query embedding, retrieval per mode, answer composition, and ingest of
the corpus into an empty index."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.evaluation.bench.config import BenchConfig, Say
from service.evaluation.bench.load import QuestionSource, load_base_questions
from service.evaluation.bench.results import EmbeddingLatency, IngestResult, InProcessResult
from service.evaluation.bench.stats import Latency, latency, percentile, summary

if TYPE_CHECKING:
    from service.config import Settings


def bench_in_process(settings: Settings, config: BenchConfig, say: Say) -> InProcessResult:
    from service.answering import compose_answer
    from service.embedding import load_embedder
    from service.engine import Engine
    from service.retrieval import MODES

    engine, _ = Engine.start(settings)
    raw_embedder = load_embedder(settings)  # without the query batcher: the encoder alone
    retriever = engine.retriever
    data = retriever.data
    base = load_base_questions()
    source = QuestionSource(base, "")
    raw_embedder.embed(source.take(4))  # warm-up
    embed_runs: list[Latency] = []
    embed_cpu_runs: list[float] = []
    batch_runs: list[float] = []
    retrieval_runs: dict[str, list[float]] = {m: [] for m in MODES}
    compose_runs: list[float] = []
    ask_runs: list[float] = []
    for run in range(config.repeats):
        say(f"in-process: run {run + 1}/{config.repeats}")
        questions = source.take(config.inprocess_calls)
        times = []
        vectors = []
        cpu = time.process_time()
        for q in questions:
            t0 = time.perf_counter()
            vectors.append(raw_embedder.embed([q])[0])
            times.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu
        embed_runs.append(latency(times))
        embed_cpu_runs.append(cpu * 1000 / len(questions))
        batches = [questions[i : i + 16] for i in range(0, len(questions), 16)]
        per_question = []
        for batch in batches:
            t0 = time.perf_counter()
            raw_embedder.embed(batch, batch_size=16)
            per_question.append((time.perf_counter() - t0) / len(batch))
        if per_question:
            batch_runs.append(statistics.median(per_question) * 1000)
        for mode in MODES:
            times = []
            for q, v in zip(questions, vectors, strict=True):
                t0 = time.perf_counter()
                retriever.run(q, 5, mode, query_vector=v)
                times.append(time.perf_counter() - t0)
            retrieval_runs[mode].append(percentile([t * 1000 for t in times], 50))
        times = []
        for q, v in zip(questions, vectors, strict=True):
            result = retriever.run(q, settings.top_k, settings.default_mode, query_vector=v)
            t0 = time.perf_counter()
            sentence_vectors = [data.chunk_sentence_vectors(h.chunk_index) for h in result.hits]
            compose_answer(
                result, sentence_vectors, settings, data.documents, retriever.term_weight
            )
            times.append(time.perf_counter() - t0)
        compose_runs.append(percentile([t * 1000 for t in times], 50))
        for q in questions:  # fill the query-vector cache: ask without the encoder
            retriever.embed_query(q)
        times = []
        for q in questions:
            t0 = time.perf_counter()
            engine.ask(q)
            times.append(time.perf_counter() - t0)
        ask_runs.append(percentile([t * 1000 for t in times], 50))
    return InProcessResult(
        chunks=len(data),
        calls_per_run=config.inprocess_calls,
        query_embedding_ms=EmbeddingLatency.of(embed_runs, cpu_ms_mean=summary(embed_cpu_runs)),
        query_embedding_batch16_ms_per_question=summary(batch_runs),
        retrieval_p50_ms={m: summary(v) for m, v in retrieval_runs.items()},
        answer_composition_p50_ms=summary(compose_runs),
        ask_without_encoder_p50_ms=summary(ask_runs),
    )


def bench_ingest(settings: Settings, config: BenchConfig, say: Say) -> IngestResult:
    from service.documents import load_corpus
    from service.embedding import load_embedder
    from service.ingest import build_index

    embedder = load_embedder(settings)
    runs = []
    report = None
    for run in range(config.ingest_runs):
        say(f"ingest: run {run + 1}/{config.ingest_runs}")
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            fresh = settings.model_copy(update={"index_dir": Path(tmp) / "index"})
            t0 = time.perf_counter()
            loaded = load_corpus(fresh.corpus_dir)
            report = build_index(fresh, embedder, documents=loaded.documents)
            runs.append(time.perf_counter() - t0)
    assert report is not None
    return IngestResult(
        seconds=summary(runs),
        documents=report.manifest.documents,
        chunks=report.manifest.chunks,
        sentences=report.manifest.sentences,
        texts_embedded=report.embedded,
        note="corpus read, chunked, embedded and indexed into an empty temporary index "
        "folder, in this process with the model already loaded",
    )
