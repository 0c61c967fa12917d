"""The whole service over a synthetic build: resident memory, start-up, search and ask latency,
and the approximate index's recall, at sizes the real corpus cannot reach.

:func:`write_synthetic_build` writes a build straight through the index writer
(:func:`service.index_store.write_build`) without the encoder: made-up words for the texts
(about 1 KB and 5 sentences a chunk, 10 chunks a document), clustered random unit vectors for
the chunks (as the vector-only scale section), each sentence its chunk's vector plus noise, and
BM25 computed from the words' stems. :func:`_service_worker` then starts the service on it in a
process of its own (:meth:`service.engine.Engine.start`, as ``serve`` does: model, reader and
index) and measures it from ``/proc``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from service.evaluation.bench.config import Say
from service.evaluation.bench.results import ServiceScaleRow
from service.evaluation.bench.scale import SCALE_K, generate_vectors, run_worker
from service.evaluation.bench.stats import latency

if TYPE_CHECKING:
    from service.chunking import Chunk
    from service.config import Settings
    from service.documents import Document

CHUNKS_PER_DOCUMENT = 10
SENTENCES_PER_CHUNK = 5
WORDS_PER_SENTENCE = 26
VOCABULARY = 20_000
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "da", "ri", "go", "lu", "fe")


def _vocabulary() -> list[str]:
    """Distinct made-up words, 2 to 4 syllables, the same on every call."""
    import numpy as np

    rng = np.random.default_rng(7)
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        count = int(rng.integers(2, 5))
        words["".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), count))] = None
    return list(words)


class SyntheticCorpus:
    """Documents and chunks generated on demand from their number (deterministic), so that a
    million chunks are written without holding them."""

    def __init__(self, chunks: int, seed: int = 1, *, keep: bool = False) -> None:
        import numpy as np

        self.n_chunks = chunks
        self.n_documents = -(-chunks // CHUNKS_PER_DOCUMENT)
        self.seed = seed
        self.words = _vocabulary()
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        p = (1 / ranks) / (1 / ranks).sum()  # Zipf: a few common words, a long tail
        self.cdf = np.cumsum(p)
        self.cdf[-1] = 1.0
        self._last: tuple[int, tuple[Document, list[Chunk], list[Any]]] | None = None
        # keep: every document generated once, for the build's several passes (about 3 GB at
        # 1M chunks, in the generating process only).
        self._kept: dict[int, tuple[Document, list[Chunk], list[Any]]] | None = {} if keep else None

    def _pick(self, *ids: int) -> list[str]:
        words = self.words
        return [words[i] for i in ids]

    def document(self, n: int) -> tuple[Document, list[Chunk], list[Any]]:
        """Document ``n``, its chunks and each chunk's word numbers."""
        if self._last is not None and self._last[0] == n:
            return self._last[1]
        if self._kept is not None and n in self._kept:
            return self._kept[n]
        import numpy as np

        from service.chunking import Chunk, Span
        from service.documents import Document

        rng = np.random.default_rng((self.seed, n))
        first = n * CHUNKS_PER_DOCUMENT
        count = min(CHUNKS_PER_DOCUMENT, self.n_chunks - first)
        doc_id = f"syn-{n:07d}"
        title = f"Synthetic study {n}"
        shape = (count, SENTENCES_PER_CHUNK, WORDS_PER_SENTENCE)
        ids = np.searchsorted(self.cdf, rng.random(shape)).astype(np.int16)
        pick = self._pick
        parts: list[str] = []
        position = 0
        pending: list[tuple[int, int, int, str, tuple[Span, ...]]] = []
        for j in range(count):
            spans = []
            sentences = []
            offset = position
            for s in range(SENTENCES_PER_CHUNK):
                sentence = " ".join(pick(*ids[j, s].tolist())).capitalize() + "."
                spans.append(Span(offset, offset + len(sentence)))
                sentences.append(sentence)
                offset += len(sentence) + 1
            text = " ".join(sentences)
            pending.append((j, position, position + len(text), text, tuple(spans)))
            parts.append(text)
            position += len(text) + 2
        doc = Document(
            id=doc_id,
            title=title,
            text="\n\n".join(parts),
            authors=("Synthetic A",),
            year=2020,
            study_type="synthetic",
            path=f"{doc_id}.md",
        )
        chunks = [
            Chunk(f"{doc_id}-{j}", doc_id, j, title, text, start, end, spans)
            for j, start, end, text, spans in pending
        ]
        words_of = [ids[j].reshape(-1) for j in range(count)]
        self._last = (n, (doc, chunks, words_of))
        if self._kept is not None:
            self._kept[n] = self._last[1]
        return self._last[1]


class _Documents(Sequence["Document"]):
    def __init__(self, corpus: SyntheticCorpus) -> None:
        self.corpus = corpus

    def __len__(self) -> int:
        return self.corpus.n_documents

    @overload
    def __getitem__(self, i: int) -> Document: ...
    @overload
    def __getitem__(self, i: slice) -> list[Document]: ...
    def __getitem__(self, i: int | slice) -> Document | list[Document]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.corpus.document(i)[0]

    def __iter__(self) -> Iterator[Document]:
        for n in range(len(self)):
            yield self.corpus.document(n)[0]


class _Chunks(Sequence["Chunk"]):
    def __init__(self, corpus: SyntheticCorpus) -> None:
        self.corpus = corpus

    def __len__(self) -> int:
        return self.corpus.n_chunks

    @overload
    def __getitem__(self, i: int) -> Chunk: ...
    @overload
    def __getitem__(self, i: slice) -> list[Chunk]: ...
    def __getitem__(self, i: int | slice) -> Chunk | list[Chunk]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n, j = divmod(i, CHUNKS_PER_DOCUMENT)
        return self.corpus.document(n)[1][j]

    def __iter__(self) -> Iterator[Chunk]:
        for n in range(self.corpus.n_documents):
            yield from self.corpus.document(n)[1]


def _bm25(corpus: SyntheticCorpus) -> Any:
    """bm25s's index (its default Lucene scoring) over the chunks' stemmed words, computed with
    numpy: bm25s's own indexing holds every token as a Python int (about 5 GB at 1M chunks)."""
    import bm25s
    import numpy as np

    from service.lexical import tokenize

    stems: dict[str, int] = {}
    term_of = np.full(VOCABULARY, -1, dtype=np.int64)
    for w, word in enumerate(corpus.words):
        tokens = tokenize(word)
        if tokens:
            term_of[w] = stems.setdefault(tokens[0], len(stems))
    n, terms = corpus.n_chunks, len(stems)
    keys, tfs, lengths = [], [], np.zeros(n, dtype=np.float32)
    row = 0
    for d in range(corpus.n_documents):
        for words in corpus.document(d)[2]:
            t = term_of[words]
            t = t[t >= 0]
            lengths[row] = len(t)
            k, c = np.unique(t * n + row, return_counts=True)  # term-major keys
            keys.append(k)
            tfs.append(c.astype(np.float32))
            row += 1
    key = np.concatenate(keys)
    tf = np.concatenate(tfs)
    del keys, tfs
    order = np.argsort(key, kind="stable")
    key, tf = key[order], tf[order]
    term, doc = np.divmod(key, n)
    del key, order
    model = bm25s.BM25()
    k1, b = model.k1, model.b
    df = np.bincount(term, minlength=terms).astype(np.float64)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
    avg = float(lengths.mean()) or 1.0
    score = idf[term] * tf / (k1 * ((1 - b) + b * lengths[doc] / avg) + tf)
    indptr = np.zeros(terms + 1, dtype=np.int64)
    np.cumsum(df.astype(np.int64), out=indptr[1:])
    model.scores = {
        "data": score.astype(np.float32),
        "indices": doc.astype(np.int32),
        "indptr": indptr,
        "num_docs": n,
    }
    model.vocab_dict = stems
    model.nonoccurrence_array = None  # Lucene scoring has none
    return model


@dataclass
class SyntheticBuild:
    index_dir: str
    queries: str  # query vectors (.npy) for recall
    truth: str  # their exact top-k chunk rows (.npy)
    questions: list[str]  # texts for /api/search and /api/ask
    build_s: float


def write_synthetic_build(
    index_dir: Path, chunks: int, settings: Settings, *, queries: int = 200
) -> SyntheticBuild:
    """A build of ``chunks`` synthetic chunks in ``index_dir`` (see the module doc), with the
    vector index the settings give (HNSW from ``QA_ANN_THRESHOLD`` chunks) and the exact
    neighbours of ``queries`` query vectors for recall."""
    import faiss
    import numpy as np

    from service.embedding import load_embedder
    from service.index_store import ChunkingSettings, NewBuild, prepare_folder, write_build
    from service.ingest import _faiss_index

    started = time.perf_counter()
    embedder = load_embedder(settings)  # its name and dimension for the manifest; no encoding
    dim = embedder.dimension  # 384 for the bundled model
    corpus = SyntheticCorpus(chunks, keep=True)
    vectors = generate_vectors(chunks, dim, seed=1, kind="clustered")
    query_vectors = generate_vectors(queries, dim, seed=2, kind="clustered")
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(query_vectors, SCALE_K)
    del exact
    index_dir.mkdir(parents=True, exist_ok=True)
    prepare_folder(index_dir)
    # Sentence vectors: each its chunk's vector plus noise (cos ~0.9), float16 on disk.
    rows = chunks * SENTENCES_PER_CHUNK
    sentence_path = index_dir / "synthetic-sentences.npy"
    sentences = np.lib.format.open_memmap(
        sentence_path, mode="w+", dtype=np.float16, shape=(rows, dim)
    )
    rng = np.random.default_rng(3)
    step = 50_000
    for lo in range(0, chunks, step):
        hi = min(chunks, lo + step)
        block = np.repeat(vectors[lo:hi], SENTENCES_PER_CHUNK, axis=0)
        block += rng.standard_normal(block.shape, dtype=np.float32) * (0.5 / dim**0.5)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        sentences[lo * SENTENCES_PER_CHUNK : hi * SENTENCES_PER_CHUNK] = block
    offsets = np.arange(0, rows + 1, SENTENCES_PER_CHUNK, dtype=np.int64)
    index, kind = _faiss_index(vectors, settings)
    del vectors
    bm25 = _bm25(corpus)
    write_build(
        index_dir,
        NewBuild(
            documents=_Documents(corpus),
            chunks=_Chunks(corpus),
            vectors=index,
            index_type=kind,
            sentence_vectors=sentences,
            sentence_offsets=offsets,
            bm25=bm25,
            model=embedder.name,
            dimension=embedder.dimension,
            chunking=ChunkingSettings.from_settings(settings),
        ),
        started,
    )
    del sentences
    sentence_path.unlink()
    np.save(index_dir / "queries.npy", query_vectors)
    np.save(index_dir / "truth.npy", truth)
    words = corpus.words
    qrng = np.random.default_rng(11)
    questions = [
        f"What is the effect of {words[a]} {words[b]} on {words[c]}?"
        for a, b, c in qrng.integers(20, 2000, size=(400, 3))
    ]
    return SyntheticBuild(
        index_dir=str(index_dir),
        queries=str(index_dir / "queries.npy"),
        truth=str(index_dir / "truth.npy"),
        questions=questions,
        build_s=time.perf_counter() - started,
    )


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, RssAnon (heap: the FAISS index, arrays, objects) and RssFile (mapped files and
    libraries) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) / 1024
    return out


@dataclass
class ServiceJob:
    build: SyntheticBuild
    chunks: int
    searches: int
    asks: int
    settings: dict[str, Any]  # the bench's settings (JSON form), for the service it starts


def _service_worker(job: ServiceJob) -> ServiceScaleRow:
    """Run in a child process: start the service on the build, then measure it."""
    import numpy as np

    from service.config import load_settings
    from service.engine import Engine

    settings = load_settings(
        **{
            **job.settings,
            "index_dir": Path(job.build.index_dir),
            "corpus_dir": Path(job.build.index_dir) / "no-corpus",  # serve the build as it is
        }
    )
    qdrant = settings.backend == "qdrant"
    if qdrant:
        import tracemalloc

        from service.qdrant_index import open_client

        # The local-mode engine loads the collection here, outside the trace (it is the
        # server's memory in a deployment); the trace then covers the service's start.
        open_client(settings)
        tracemalloc.start(12)
    before = memory_mb()
    t0 = time.perf_counter()
    engine, _ = Engine.start(settings)
    startup_s = time.perf_counter() - t0
    started = memory_mb()
    questions = job.build.questions
    engine.search(questions[0])  # warm-up
    engine.ask(questions[1])
    search_times, ask_times = [], []
    for i in range(job.searches):
        t = time.perf_counter()
        engine.search(questions[i % len(questions)])
        search_times.append(time.perf_counter() - t)
    for i in range(job.asks):
        t = time.perf_counter()
        engine.ask(questions[(i + 200) % len(questions)])
        ask_times.append(time.perf_counter() - t)
    served = memory_mb()
    api_held_mb = api_side_held_mb() if qdrant else None
    queries = np.load(job.build.queries)
    truth = np.load(job.build.truth)
    hits = 0
    dense_times = []
    for q, expected in zip(queries, truth, strict=True):
        t = time.perf_counter()
        found = engine.data.dense(q, SCALE_K, None)
        dense_times.append(time.perf_counter() - t)
        hits += len({row for row, _ in found} & {int(r) for r in expected})
    search, ask, dense = latency(search_times), latency(ask_times), latency(dense_times)
    build_dir = Path(job.build.index_dir)
    disk = sum(p.stat().st_size for p in build_dir.glob("build-*/**/*") if p.is_file())
    return ServiceScaleRow(
        chunks=job.chunks,
        index_type=engine.data.manifest.index_type,
        build_s=job.build.build_s,
        disk_mb=disk / 2**20,
        startup_s=startup_s,
        rss_before_start_mb=before["VmRSS"],
        rss_started_mb=started["VmRSS"],
        rss_served_mb=served["VmRSS"],
        anon_served_mb=served["RssAnon"],
        file_served_mb=served["RssFile"],
        requests=job.searches + job.asks,
        search_p50=search.p50,
        search_p99=search.p99,
        ask_p50=ask.p50,
        ask_p99=ask.p99,
        dense_p50=dense.p50,
        dense_p99=dense.p99,
        recall_at_10=hits / (len(queries) * SCALE_K),
        backend=settings.backend,
        api_held_mb=api_held_mb,
    )


def api_side_held_mb() -> float:
    """MiB allocated since tracing started and still held, leaving out every allocation made
    inside qdrant-client's local-mode engine (in a deployment: the Qdrant server's memory)."""
    import gc
    import tracemalloc

    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, "*qdrant_client/local/*", all_frames=True)]
    )
    tracemalloc.stop()
    return sum(s.size for s in snapshot.statistics("filename")) / 2**20


def _run_service_worker(job: ServiceJob, timeout: float) -> ServiceScaleRow:
    code = (
        "import json,sys; from service.evaluation.bench.service_scale import ServiceJob, "
        "SyntheticBuild, _service_worker; d = json.loads(sys.stdin.read()); "
        "d['build'] = SyntheticBuild(**d['build']); "
        "print(json.dumps(_service_worker(ServiceJob(**d)).to_dict()))"
    )
    what = f"service scale worker ({job.chunks} chunks)"
    return ServiceScaleRow.from_dict(run_worker(code, json.dumps(asdict(job)), timeout, what))


def bench_service_scale(
    settings: Settings, sizes: Sequence[int], folder: Path, say: Say, *, requests: int = 300
) -> list[ServiceScaleRow]:
    """The whole service at each size (a synthetic build in ``folder``, removed afterwards)."""
    import shutil

    rows = []
    for n in sizes:
        index_dir = folder / f"service-{n}"
        say(f"scale: the whole service at {n:,} chunks: writing the synthetic build")
        build = write_synthetic_build(index_dir, n, settings)
        served = settings.model_dump(mode="json")
        try:
            if settings.backend == "qdrant":
                served = _publish_synthetic(settings, build, folder / f"qdrant-{n}", say)
            say(f"scale: the whole service at {n:,} chunks: starting it and measuring")
            job = ServiceJob(
                build=build,
                chunks=n,
                searches=requests // 2,
                asks=requests // 2,
                settings=served,
            )
            rows.append(_run_service_worker(job, timeout=3600))
        finally:
            shutil.rmtree(index_dir, ignore_errors=True)
            shutil.rmtree(folder / f"qdrant-{n}", ignore_errors=True)
    return rows


def _publish_synthetic(
    settings: Settings, build: SyntheticBuild, folder: Path, say: Say
) -> dict[str, Any]:
    """Publish the synthetic build to a local-mode Qdrant folder of its own (a server would be
    shared with the deployment's own collections); the settings the worker serves it with."""
    from service.index_store import load_index
    from service.qdrant_index import close_clients, open_client, publish

    local = settings.model_copy(update={"qdrant_url": None, "qdrant_path": str(folder)})
    say(f"scale: publishing {build.index_dir} to Qdrant local mode in {folder}")
    publish(open_client(local), local, load_index(Path(build.index_dir)))
    close_clients()  # the worker opens the folder (local mode: one process at a time)
    return local.model_dump(mode="json")
