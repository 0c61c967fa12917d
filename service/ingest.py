"""Corpus -> index: the one pipeline that loads the documents, chunks them, embeds the chunks
and their sentences (reusing the vectors of unchanged text from the build in service), builds
the vector and BM25 indexes, and hands the result to :mod:`service.index_store`, which writes
it and swaps it in atomically.

``python -m service ingest``, the engine's start (:func:`ensure_index`) and its live re-index
(:func:`rebuild_index`, also behind ``POST /api/admin/reindex``) all come through here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.chunk_index import ChunkIndex
from service.chunking import Chunk, chunk_document
from service.config import Settings
from service.documents import CorpusLoad, Document, LoadProblem, load_corpus
from service.embedding import Embedder, Vectors
from service.index_store import (
    FORMAT_VERSION,
    MANIFEST,
    BuildReport,
    ChunkingSettings,
    CorpusEmptyError,
    IndexData,
    IndexMismatchError,
    IndexMissingError,
    IndexStoreError,
    IndexWriteError,
    NewBuild,
    ProgressFn,
    build_lock,
    corpus_hash,
    load_index,
    prepare_folder,
    stale_reasons,
    text_key,
    write_build,
)
from service.lexical import tokenize


def _faiss_index(vectors: Vectors, settings: Settings) -> tuple[Any, str]:
    import faiss

    dim = vectors.shape[1]
    index: Any
    if len(vectors) >= settings.ann_threshold:
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
        kind = "hnsw"
    else:
        index = faiss.IndexFlatIP(dim)
        kind = "flat"
    if len(vectors):
        index.add(vectors)
    return index, kind


PDF_CACHE = "extracted"  # in the index folder: what each PDF gave (service.documents.pdf_source)


def read_corpus(settings: Settings) -> CorpusLoad:
    """The corpus folder, read with the settings' limits and the index folder's PDF cache."""
    return load_corpus(
        settings.corpus_dir,
        max_file_bytes=settings.max_file_bytes,
        max_pdf_pages=settings.max_pdf_pages,
        pdf_cache=settings.index_dir / PDF_CACHE,
    )


def _previous_vectors(index_dir: Path) -> dict[str, np.ndarray[Any, Any]]:
    """text-key -> vector from the build being served, to avoid re-embedding unchanged text."""
    try:
        data = load_index(index_dir, verify=False)
    except IndexStoreError:
        return {}
    cache: dict[str, np.ndarray[Any, Any]] = {}
    model = data.manifest.model
    context = data.manifest.chunking.embed_context
    chunk_vectors = data.vectors.reconstruct_n(0, data.vectors.ntotal)
    title, text, last = "", "", None
    try:
        for i, chunk in enumerate(data.chunks):
            if chunk.document_id != last:  # chunks come in document order: one read each
                document = data.documents[chunk.document_id]
                title, text, last = document.title, document.text, chunk.document_id
            cache[text_key(model, chunk.embedding_text(title, context))] = chunk_vectors[i]
            rows = data.chunk_sentence_vectors(i)
            for sentence, row in zip(chunk.sentence_texts(text), rows, strict=True):
                cache[text_key(model, sentence)] = row
    except (ValueError, TypeError, KeyError):  # a damaged record (read lazily): embed afresh
        return {}
    return cache


def _embed_with_cache(
    texts: Sequence[str],
    embedder: Embedder,
    cache: dict[str, np.ndarray[Any, Any]],
    settings: Settings,
    stage: str,
    progress: ProgressFn | None,
) -> tuple[Vectors, int]:
    keys = [text_key(embedder.name, t) for t in texts]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
    if missing:

        def report(done: int, total: int) -> None:
            if progress:
                progress(stage, done, total)

        fresh = embedder.embed(
            [texts[i] for i in missing], batch_size=settings.embed_batch_size, progress=report
        )
        for i, vec in zip(missing, fresh, strict=True):
            cache[keys[i]] = vec
    elif progress:
        progress(stage, len(texts), len(texts))
    out = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    for i, key in enumerate(keys):
        out[i] = cache[key]
    return out, len(missing)


def chunk_corpus(
    documents: Sequence[Document], settings: Settings, embedder: Embedder
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in documents:
        chunks.extend(
            chunk_document(
                doc,
                max_tokens=settings.chunk_max_tokens,
                overlap_sentences=settings.chunk_overlap_sentences,
                count_tokens=embedder.count_tokens,
                with_context=settings.embed_context,
            )
        )
    return chunks


def build_index(
    settings: Settings,
    embedder: Embedder,
    *,
    documents: Sequence[Document] | None = None,
    problems: Sequence[LoadProblem] = (),
    progress: ProgressFn | None = None,
) -> BuildReport:
    """Build a new index from the corpus and make it current, atomically."""
    import bm25s

    started = time.perf_counter()
    if documents is None:
        loaded = read_corpus(settings)
        documents, problems = loaded.documents, loaded.problems
    if not documents:
        raise CorpusEmptyError(
            f"no usable documents in {settings.corpus_dir}/; add .md, .txt or .html files"
        )
    index_dir = settings.index_dir
    prepare_folder(index_dir)

    cache = _previous_vectors(index_dir)
    previous_keys = set(cache)
    if progress:
        progress("chunking", 0, len(documents))
    chunks = chunk_corpus(documents, settings, embedder)
    if not chunks:
        raise CorpusEmptyError(
            f"the documents in {settings.corpus_dir}/ hold no text to index besides headings"
        )
    if progress:
        progress("chunking", len(documents), len(documents))
    titles = {d.id: d.title for d in documents}
    texts = {d.id: d.text for d in documents}
    chunk_inputs = [c.embedding_text(titles[c.document_id], settings.embed_context) for c in chunks]
    chunk_vectors, embedded_chunks = _embed_with_cache(
        chunk_inputs, embedder, cache, settings, "embedding chunks", progress
    )
    sentence_texts = [s for c in chunks for s in c.sentence_texts(texts[c.document_id])]
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c.sentences) for c in chunks])
    sentence_vectors, embedded_sentences = _embed_with_cache(
        sentence_texts, embedder, cache, settings, "embedding sentences", progress
    )
    # Distinct texts taken from the previous build (repeats within this build count once).
    reused = len(
        {text_key(embedder.name, t) for t in (*chunk_inputs, *sentence_texts)} & previous_keys
    )
    if progress:
        progress("indexing", 0, 1)
    faiss_index, kind = _faiss_index(chunk_vectors, settings)
    bm25 = bm25s.BM25()
    corpus_tokens = [tokenize(text) or ["\u2205"] for text in chunk_inputs]
    bm25.index(corpus_tokens, show_progress=False)

    manifest, final = write_build(
        index_dir,
        NewBuild(
            documents=documents,
            chunks=chunks,
            vectors=faiss_index,
            index_type=kind,
            sentence_vectors=sentence_vectors,
            sentence_offsets=offsets,
            bm25=bm25,
            model=embedder.name,
            dimension=embedder.dimension,
            chunking=ChunkingSettings.from_settings(settings),
        ),
        started,
    )
    if progress:
        progress("indexing", 1, 1)
    return BuildReport(
        manifest=manifest,
        path=final,
        problems=list(problems),
        embedded=embedded_chunks + embedded_sentences,
        reused=reused,
        seconds=time.perf_counter() - started,
    )


@dataclass
class EnsureResult:
    data: IndexData | ChunkIndex  # ChunkIndex: another backend (service.backends)
    build: BuildReport | None
    reason: str | None
    warning: str | None = None  # e.g. serving a stale index that could not be rebuilt


def ensure_index(
    settings: Settings,
    embedder: Embedder,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    serve_stale: bool = False,
) -> EnsureResult:
    """Load the index, (re)building it first when it is missing, stale, corrupt or mismatched.

    Raises IndexStoreError when the index cannot be used and there is no corpus to rebuild from.
    With ``serve_stale``, a stale but sound index whose folder cannot be written (read-only
    deployment, full disk) is returned as it is, with a ``warning``, instead of failing.
    """
    with build_lock(settings.index_dir, progress):
        return _ensure(settings, embedder, force=force, progress=progress, serve_stale=serve_stale)


def _ensure(
    settings: Settings,
    embedder: Embedder,
    *,
    force: bool,
    progress: ProgressFn | None,
    serve_stale: bool,
) -> EnsureResult:
    loaded = read_corpus(settings) if settings.corpus_dir.is_dir() else None
    reason: str | None = "rebuild requested" if force else None
    data: IndexData | None = None
    stale: IndexData | None = None
    if not force:
        try:
            data = load_index(settings.index_dir)
            if loaded is not None:
                reasons = stale_reasons(
                    data.manifest, settings, embedder, corpus_hash(loaded.documents)
                )
                if reasons:
                    reason = "index is stale: " + ", ".join(reasons)
                    stale, data = data, None
            if data is not None and data.manifest.dimension != embedder.dimension:
                raise IndexMismatchError(
                    f"{data.path / MANIFEST} has dimension {data.manifest.dimension}, the model "
                    f"gives {embedder.dimension}; rebuild with `python -m service ingest`"
                )
            if data is not None and loaded is None and data.manifest.model != embedder.name:
                raise IndexMismatchError(
                    f"{data.path / MANIFEST} was built with model '{data.manifest.model}', "
                    f"QA_MODEL is '{embedder.name}'; set QA_MODEL to match or rebuild"
                )
        except IndexStoreError as exc:
            if loaded is None and isinstance(exc, IndexMissingError):
                raise IndexMissingError(
                    f"no index in {settings.index_dir}/ and no corpus folder "
                    f"{settings.corpus_dir}/ to build it from; set QA_CORPUS_DIR to the folder "
                    "of documents"
                ) from None
            if loaded is None:
                raise
            reason = str(exc).split(";")[0]
            data = None
    if data is not None:
        return EnsureResult(data, None, None)
    if loaded is None:
        raise IndexMissingError(f"no corpus folder {settings.corpus_dir}/ to build the index from")
    try:
        report = build_index(
            settings,
            embedder,
            documents=loaded.documents,
            problems=loaded.problems,
            progress=progress,
        )
    except IndexWriteError as exc:
        # Only an index whose vectors still fit the model: an older corpus or chunking is
        # out of date but correct for what it holds; another model's vectors are not.
        usable = (
            stale is not None
            and stale.manifest.model == embedder.name
            and stale.manifest.dimension == embedder.dimension
            and stale.manifest.format_version == FORMAT_VERSION
        )
        if not (serve_stale and usable and stale is not None):
            raise
        warning = f"serving the existing index unchanged ({reason}) because {exc}"
        return EnsureResult(stale, None, reason, warning)
    return EnsureResult(load_index(settings.index_dir), report, reason)


class ReindexError(RuntimeError):
    """A re-index that failed; the index in service is unchanged. One line, with the fix."""

    def __init__(self, message: str, problems: list[LoadProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


def rebuild_index(
    settings: Settings, embedder: Embedder, *, progress: ProgressFn | None = None
) -> tuple[BuildReport, IndexData]:
    """Build a new index from the corpus, make it current, and load it (verified).

    Raises :class:`ReindexError` naming the problem (no corpus folder, no usable documents,
    an index folder that cannot be written, a full disk) and carrying the per-file problems.
    """
    if not settings.corpus_dir.is_dir():
        raise ReindexError(
            f"corpus folder {settings.corpus_dir}/ does not exist; create it and add documents "
            "or set QA_CORPUS_DIR"
        )
    loaded = read_corpus(settings)
    try:
        with build_lock(settings.index_dir, progress):
            report = build_index(
                settings,
                embedder,
                documents=loaded.documents,
                problems=loaded.problems,
                progress=progress,
            )
            data = load_index(settings.index_dir)
    except IndexStoreError as exc:
        raise ReindexError(str(exc), loaded.problems) from None
    except OSError as exc:  # the disk filled up or a file could not be written mid-build
        where = exc.filename or settings.index_dir
        raise ReindexError(
            f"could not write the new index ({exc.strerror or exc}: {where}); free disk space "
            f"or fix the permissions of {settings.index_dir}/",
            loaded.problems,
        ) from None
    return report, data
