"""The question-answering engine: one loaded index + embedder, used by the CLI and the API.

Holds the current :class:`Retriever` behind a lock-free reference, so a rebuilt index can be
swapped in while requests are being answered (each request uses the retriever it started with).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from service.answering import Answer, compose_answer
from service.config import RetrievalMode, Settings
from service.embedding import Embedder, load_embedder
from service.index_store import EnsureResult, IndexData, ProgressFn, ensure_index
from service.retrieval import Hit, Retriever


@dataclass(frozen=True)
class SearchOutcome:
    query: str
    mode: str
    hits: list[Hit]
    timings_ms: dict[str, float]


class Engine:
    def __init__(self, settings: Settings, embedder: Embedder, data: IndexData) -> None:
        self.settings = settings
        self.embedder = embedder
        self.retriever = Retriever(data, embedder, settings)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        progress: ProgressFn | None = None,
    ) -> tuple[Engine, EnsureResult]:
        """Load the model and the index, building the index first if missing or stale."""
        embedder = embedder or load_embedder(settings)
        ensured = ensure_index(settings, embedder, progress=progress)
        return cls(settings, embedder, ensured.data), ensured

    @property
    def data(self) -> IndexData:
        return self.retriever.data

    def swap(self, data: IndexData) -> None:
        """Serve a new index from the next request on."""
        self.retriever = Retriever(data, self.embedder, self.settings)

    def search(
        self,
        query: str,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        document_ids: Collection[str] | None = None,
    ) -> SearchOutcome:
        retriever = self.retriever
        started = time.perf_counter()
        result = retriever.run(
            query, k or self.settings.top_k, mode or self.settings.default_mode, document_ids
        )
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return SearchOutcome(query, result.mode, result.hits, {"retrieval": elapsed})

    def ask(
        self,
        question: str,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        document_ids: Collection[str] | None = None,
    ) -> Answer:
        retriever = self.retriever
        started = time.perf_counter()
        result = retriever.run(
            question, k or self.settings.top_k, mode or self.settings.default_mode, document_ids
        )
        retrieval_ms = (time.perf_counter() - started) * 1000
        data = retriever.data
        vectors = [data.chunk_sentence_vectors(h.chunk_index) for h in result.hits]
        texts = {d.id: d.text for d in data.documents.values()}
        answer = compose_answer(
            result, vectors, texts, self.settings, data.documents, retriever.term_weight
        )
        answer.timings_ms["retrieval"] = round(retrieval_ms, 3)
        answer.timings_ms["total"] = round((time.perf_counter() - started) * 1000, 3)
        return answer
