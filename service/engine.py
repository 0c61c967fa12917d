"""The question-answering engine: one loaded index + embedder, used by the CLI and the API.

Holds the current :class:`Retriever` behind a lock-free reference, so a rebuilt index can be
swapped in while requests are being answered (each request uses the retriever it started with).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import TypeVar

from service.answering import Answer, compose_answer
from service.backends import open_index, rebuild
from service.batching import with_query_batching
from service.chunk_index import BackendUnavailable, ChunkIndex
from service.config import RetrievalMode, Settings
from service.embedding import Embedder, load_embedder
from service.index_store import BuildReport, IndexData, ProgressFn
from service.ingest import EnsureResult
from service.reader import Reader, load_reader
from service.reranking import DEFAULT_PATH as DEFAULT_RANKER
from service.reranking import LinearRanker
from service.retrieval import Retriever, SearchResult

log = logging.getLogger(__name__)
T = TypeVar("T")


def load_ranker(settings: Settings) -> LinearRanker | None:
    """The rerank mode's weights: QA_RANKER_PATH, else the shipped ``service/ranker.json``.

    Without either (only while training the first weights), rerank orders like hybrid.
    """
    if settings.ranker_path is None and not DEFAULT_RANKER.is_file():
        log.warning(
            "no ranker weights at %s: mode 'rerank' orders like 'hybrid'; "
            "run python -m service train-ranker",
            DEFAULT_RANKER,
        )
        return None
    ranker = LinearRanker.load(settings.ranker_path or DEFAULT_RANKER)
    fitted_for = ranker.info.get("model")
    if fitted_for is not None and fitted_for != settings.model:
        log.warning(
            "the rerank weights were fitted for model %r, not %r: retrain them "
            "(python -m service train-ranker) or set QA_DEFAULT_MODE=hybrid",
            fitted_for,
            settings.model,
        )
    return ranker


#: ``Engine(reader=CONFIGURED)``: load the reader the settings name (``QA_READER``).
CONFIGURED = "configured"


class Engine:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        data: IndexData | ChunkIndex,
        reader: Reader | str | None = CONFIGURED,
    ) -> None:
        self.settings = settings
        # Questions from concurrent requests share encoder calls (service/batching.py).
        self.embedder = with_query_batching(embedder, settings)
        self.ranker = load_ranker(settings)
        # The reader does not depend on the index, so it survives a swap.
        self.reader: Reader | None = load_reader(settings) if isinstance(reader, str) else reader
        self.retriever = Retriever(data, self.embedder, settings, self.ranker)
        self.index_warning: str | None = None  # set when serving an index that is out of date

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        progress: ProgressFn | None = None,
        reader: Reader | str | None = CONFIGURED,
    ) -> tuple[Engine, EnsureResult]:
        """Load the model and the index, building the index first if missing or stale.

        A stale index whose folder cannot be written is served as it is, with a warning
        (``ensured.warning``, also kept as ``engine.index_warning``) for the caller to report,
        rather than not at all.
        """
        embedder = embedder or load_embedder(settings)
        ensured = open_index(settings, embedder, progress=progress, serve_stale=True)
        engine = cls(settings, embedder, ensured.data, reader)
        engine.index_warning = ensured.warning
        return engine, ensured

    @property
    def data(self) -> ChunkIndex:
        """The index in service (see :mod:`service.chunk_index`)."""
        return self.retriever.index

    def swap(self, data: IndexData | ChunkIndex) -> None:
        """Serve a new index from the next request on."""
        self.retriever = Retriever(data, self.embedder, self.settings, self.ranker)
        self.index_warning = None

    def reindex(self, progress: ProgressFn | None = None) -> BuildReport:
        """Re-ingest the corpus into a new build and serve it (see :func:`rebuild_index`).

        Requests keep being answered from the current index until the new one is swapped in.
        Callers run one re-index at a time (the admin endpoint holds a lock).
        """
        report, data = rebuild(self.settings, self.embedder, progress=progress)
        self.swap(data)
        return report

    def ensure_current(self) -> ChunkIndex:
        """Follow the backend to the build it serves now (another process may have published
        a new one); raises :class:`BackendUnavailable` when the backend cannot answer."""
        data = self.retriever.index
        latest = data.refresh()
        if latest is not data:
            log.info("serving %s (was %s)", latest.build_name, data.build_name)
            self.swap(latest)
        return latest

    def _answered(self, call: Callable[[], T]) -> T:
        """``call()``; if the backend fails, once more on the build it serves now (a re-publish
        dropped the collection this one was reading)."""
        try:
            return call()
        except BackendUnavailable:
            before = self.retriever.index
            if self.ensure_current() is before:
                raise
            return call()

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        document_ids: Collection[str] | None = None,
    ) -> SearchResult:
        return self._answered(lambda: self._search(query, k, mode, document_ids))

    def _search(
        self,
        query: str,
        k: int | None,
        mode: RetrievalMode | str | None,
        document_ids: Collection[str] | None,
    ) -> SearchResult:
        retriever = self.retriever
        started = time.perf_counter()
        vector = retriever.embed_query(query)
        encode_ms = (time.perf_counter() - started) * 1000
        result = retriever.run(
            query,
            k or self.settings.top_k,
            mode or self.settings.default_mode,
            document_ids,
            query_vector=vector,
        )
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return replace(result, timings_ms={"retrieval": elapsed, "encode": round(encode_ms, 3)})

    def ask(
        self,
        question: str,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        document_ids: Collection[str] | None = None,
        *,
        retrieval_query: str | None = None,
    ) -> Answer:
        """Answer ``question``; with ``retrieval_query``, retrieve passages with that text (a
        follow-up read in context) but still choose and score sentences against ``question``.

        The coverage check then sees the retrieval query's signals, so callers using
        ``retrieval_query`` must check the answer is grounded in the question's own words.
        """
        return self._answered(lambda: self._ask(question, k, mode, document_ids, retrieval_query))

    def _ask(
        self,
        question: str,
        k: int | None,
        mode: RetrievalMode | str | None,
        document_ids: Collection[str] | None,
        retrieval_query: str | None,
    ) -> Answer:
        retriever = self.retriever
        started = time.perf_counter()
        query = retrieval_query or question
        vector = retriever.embed_query(query)  # timed on its own: the encoder's share
        encode_ms = (time.perf_counter() - started) * 1000
        result = retriever.run(
            query,
            k or self.settings.top_k,
            mode or self.settings.default_mode,
            document_ids,
            query_vector=vector,
        )
        retrieval_ms = (time.perf_counter() - started) * 1000
        if retrieval_query is not None and retrieval_query != question:
            encode_started = time.perf_counter()
            vector = retriever.embed_query(question)
            encode_ms += (time.perf_counter() - encode_started) * 1000
            result = replace(result, query=question, query_vector=vector)
        data = retriever.data
        vectors = [data.chunk_sentence_vectors(h.chunk_index) for h in result.hits]
        answer = compose_answer(
            result,
            vectors,
            self.settings,
            data.documents,
            retriever.term_weight,
            self.reader,
            retriever.knows,
        )
        answer.timings_ms["retrieval"] = round(retrieval_ms, 3)
        answer.timings_ms["encode"] = round(encode_ms, 3)
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        return answer
