"""The scale section: FAISS indexes over generated vectors, each measured in a child process of
its own so that its memory is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.evaluation.bench.config import BenchConfig, BenchError, Say
from service.evaluation.bench.machine import rss_mb
from service.evaluation.bench.results import (
    HnswSettings,
    IndexResult,
    ScaleResult,
    ScaleSize,
    SearchRow,
)
from service.evaluation.bench.stats import latency

if TYPE_CHECKING:
    from service.config import Settings

SCALE_DIMENSION = 384  # all-MiniLM-L6-v2
SCALE_K = 10
EF_SEARCH = (32, 64, 128, 256)


def generate_vectors(n: int, d: int, seed: int, kind: str = "clustered") -> Any:
    """Synthetic unit vectors. ``clustered``: n/100 Gaussian clusters on the unit sphere (each
    vector about cos 0.7 from its cluster centre), a stand-in for topical embeddings;
    ``uniform``: independent uniform random unit vectors (no structure: the hardest case)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    centres = None
    if kind == "clustered":
        centre_rng = np.random.default_rng(12345)  # the same clusters for data and queries
        count = max(8, n // 100)
        centres = centre_rng.standard_normal((count, d), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = rng.standard_normal((hi - lo, d), dtype=np.float32)
        if centres is not None:
            block /= np.sqrt(d)
            block += centres[rng.integers(0, len(centres), hi - lo)]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


@dataclass
class ScaleJob:
    """One index for the worker to build and search (passed to it as JSON)."""

    n: int
    d: int
    kind: str
    data: str
    tmp: str
    queries: int
    k: int
    m: int
    ef_construction: int
    ef_search: list[int]
    truth: str | None  # exact neighbours to score recall against (None: this is the exact one)
    truth_out: str  # where the exact index saves its neighbours


def _scale_worker(job: ScaleJob) -> IndexResult:
    """Run in a child process: build one index, save it, reload it, time searches."""
    import faiss
    import numpy as np

    n, d, kind = job.n, job.d, job.kind
    tmp = Path(job.tmp)
    vectors = generate_vectors(n, d, seed=1, kind=job.data)
    queries = generate_vectors(job.queries, d, seed=2, kind=job.data)
    # Clustered data: queries come from the data's clusters (see generate_vectors); to keep
    # them on the data's clusters when n differs, the centres are seeded independently of n.
    t0 = time.perf_counter()
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, job.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = job.ef_construction
        index.add(vectors)
    elif kind == "hnsw-sq8":
        index = faiss.index_factory(d, f"HNSW{job.m},SQ8", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = job.ef_construction
        index.train(vectors[: min(n, 100_000)])
        index.add(vectors)
    else:
        raise BenchError(f"unknown index kind '{kind}'")
    build_s = time.perf_counter() - t0
    path = tmp / f"{kind}-{n}.faiss"
    faiss.write_index(index, str(path))
    disk_mb = path.stat().st_size / 2**20
    del index, vectors
    import gc

    gc.collect()
    before = rss_mb()
    index = faiss.read_index(str(path))
    after = rss_mb()
    path.unlink()
    # One thread per search, as in a server answering concurrent requests (FAISS's OpenMP
    # teams on a busy 2-core machine cost more than they gain: 41 ms vs 14 ms for flat 100k).
    faiss.omp_set_num_threads(1)
    efs: list[int | None] = list(job.ef_search) if kind != "flat" else [None]
    rows = []
    truth = np.load(job.truth) if job.truth else None
    k = job.k
    for ef in efs:
        if ef is not None:
            index.hnsw.efSearch = ef
        index.search(queries[:5], k)  # warm-up
        times = []
        found = np.empty((len(queries), k), dtype=np.int64)
        for i in range(len(queries)):
            t = time.perf_counter()
            _, ids = index.search(queries[i : i + 1], k)
            times.append(time.perf_counter() - t)
            found[i] = ids[0]
        lat = latency(times)
        recall = None
        if truth is not None:
            hits = sum(len(set(found[i]) & set(truth[i])) for i in range(len(queries)))
            recall = hits / (len(queries) * k)
        elif kind == "flat":
            np.save(job.truth_out, found)
            recall = 1.0
        rows.append(SearchRow(ef, lat.p50, lat.p95, lat.p99, lat.mean, recall_at_10=recall))
    return IndexResult(
        kind=kind,
        build_s=build_s,
        disk_mb=disk_mb,
        memory_mb=after - before,
        process_rss_mb=after,
        searches=rows,
    )


def run_worker(code: str, payload: str, timeout: float, what: str) -> dict[str, Any]:
    """Run ``code`` in a fresh Python with ``payload`` on its stdin (not in argv: settings may
    hold tokens); return the JSON object its last output line prints.

    A fixed mmap threshold: freed large blocks go back to the OS, so the RSS a worker reports
    is what it holds."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=payload,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"{what} failed: {tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _run_scale_worker(job: ScaleJob, timeout: float) -> IndexResult:
    code = "import json,sys; from service.evaluation.bench.scale import ScaleJob, _scale_worker; "
    code += "print(json.dumps(_scale_worker(ScaleJob(**json.loads(sys.stdin.read()))).to_dict()))"
    what = f"scale worker ({job.kind}, {job.n})"
    return IndexResult.from_dict(run_worker(code, json.dumps(asdict(job)), timeout, what))


def bench_scale(settings: Settings, config: BenchConfig, say: Say) -> ScaleResult:
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for n in config.scale:
            truth = Path(tmp) / f"truth-{n}.npy"
            indexes = []
            for kind in ("flat", *[k for k in config.scale_indexes if k != "flat"]):
                say(f"scale: {n:,} vectors, {kind}")
                job = ScaleJob(
                    n=n,
                    d=SCALE_DIMENSION,
                    kind=kind,
                    data=config.scale_data,
                    tmp=tmp,
                    queries=config.scale_queries,
                    k=SCALE_K,
                    m=settings.hnsw_m,
                    ef_construction=settings.hnsw_ef_construction,
                    ef_search=list(EF_SEARCH),
                    truth=str(truth) if kind != "flat" else None,
                    truth_out=str(truth),
                )
                indexes.append(_run_scale_worker(job, timeout=4 * 3600))
            sizes.append(ScaleSize(chunks=n, indexes=indexes))
    return ScaleResult(
        data=config.scale_data,
        dimension=SCALE_DIMENSION,
        queries=config.scale_queries,
        k=SCALE_K,
        hnsw=HnswSettings(
            m=settings.hnsw_m,
            ef_construction=settings.hnsw_ef_construction,
            service_ef_search=settings.hnsw_ef_search,
        ),
        sizes=sizes,
        note=(
            "synthetic vectors, not real embeddings: "
            + (
                "uniform random unit vectors"
                if config.scale_data == "uniform"
                else "random unit vectors in Gaussian clusters (n/100 clusters, cos ~0.7 to "
                "the centre), queries drawn from the same clusters"
            )
            + "; the vector index only (the service also keeps chunk records, BM25 and "
            "per-sentence vectors, which are not generated here); one query per search call, "
            "FAISS searching on one thread (indexes are built on all cores); "
            "memory_mb is the RSS growth on loading the saved index in a fresh process"
        ),
    )
