"""Question -> ranked :class:`Hit` records: dense (FAISS), BM25, both fused (hybrid), or the
fused candidates re-scored by a learned ranker (rerank, the default).

Hybrid ranking is reciprocal rank fusion (RRF): each chunk scores ``sum(1 / (k + rank))`` over
the dense and BM25 rankings, so neither score scale dominates. ``rerank`` takes the union of the
dense and BM25 candidates and orders them by :class:`service.reranking.LinearRanker` over
features of the chunk, its best sentence and its document.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

from service.chunk_index import ChunkIndex, EmbeddedIndex, Ranking
from service.chunking import Chunk
from service.config import RetrievalMode, Settings
from service.documents import Document, PageSpan
from service.embedding import Embedder, Vectors
from service.index_store import IndexData
from service.lexical import tokenize
from service.reranking import CandidateSignals, LinearRanker, feature_matrix

MODES: tuple[str, ...] = get_args(RetrievalMode)


class UnknownDocumentError(ValueError):
    def __init__(self, unknown: Sequence[str]) -> None:
        super().__init__(f"unknown document id(s): {', '.join(sorted(unknown))}")
        self.unknown = list(unknown)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk: Chunk
    document: Document
    chunk_index: int
    dense_score: float | None = None
    bm25_score: float | None = None

    @property
    def pages(self) -> PageSpan | None:
        """The source pages of the passage (documents from PDFs); None for other formats."""
        return self.document.page_span(self.chunk.start, self.chunk.end)


@dataclass(frozen=True)
class Signals:
    """Evidence about how well the corpus covers a question (used to decide abstention)."""

    dense_top: float
    bm25_top: float
    query_terms: int
    known_terms: int
    known_weight: float = 0.0  # IDF-weighted share of the question's terms the corpus knows


@dataclass(frozen=True)
class SearchResult:
    """One search: the ranked hits and what the answer step needs besides (the query's vector,
    the coverage signals); :meth:`service.engine.Engine.search` adds its timings."""

    query: str
    mode: str
    hits: list[Hit]
    query_vector: Vectors
    signals: Signals
    timings_ms: dict[str, float] = field(default_factory=dict)


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Vectors | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: Vectors) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class Retriever:
    """Search one index in service (any :class:`ChunkIndex` backend). Thread-safe for
    concurrent searches."""

    def __init__(
        self,
        index: ChunkIndex | IndexData,
        embedder: Embedder,
        settings: Settings,
        ranker: LinearRanker | None = None,
    ) -> None:
        self.index: ChunkIndex = EmbeddedIndex(index) if isinstance(index, IndexData) else index
        self.embedder = embedder
        self.settings = settings
        self.ranker = ranker
        self._query_cache = _LRU(1024)
        # Inverse document frequency per lexical term, from the index's own counts.
        df = self.index.document_frequencies
        self._vocab = set(df)
        n = max(1, len(self.index))
        self.idf = {term: float(np.log(1.0 + (n - f + 0.5) / (f + 0.5))) for term, f in df.items()}
        self.max_idf = float(np.log(1.0 + (n + 0.5) / 0.5))

    @property
    def data(self) -> ChunkIndex:
        """The index in service (the name the callers of the embedded-only days used)."""
        return self.index

    @property
    def documents(self) -> Mapping[str, Document]:
        return self.index.documents

    def _known_weight(self, terms: set[str]) -> float:
        total = sum(self.term_weight(t) for t in terms)
        known = sum(self.term_weight(t) for t in terms if t in self._vocab)
        return known / total if total else 0.0

    def knows(self, term: str) -> bool:
        """Whether any chunk holds this stemmed term."""
        return term in self._vocab

    def term_weight(self, term: str) -> float:
        """IDF of a stemmed term; unknown terms weigh as much as the rarest."""
        return self.idf.get(term, self.max_idf)

    def embed_query(self, query: str) -> Vectors:
        cached = self._query_cache.get(query)
        if cached is not None:
            return cached
        vector: Vectors = self.embedder.embed([query])[0]
        self._query_cache.put(query, vector)
        return vector

    def search(
        self,
        query: str,
        k: int = 5,
        mode: RetrievalMode | str = "rerank",
        document_ids: Collection[str] | None = None,
    ) -> list[Hit]:
        return self.run(query, k, mode, document_ids).hits

    def run(
        self,
        query: str,
        k: int = 5,
        mode: RetrievalMode | str = "rerank",
        document_ids: Collection[str] | None = None,
        query_vector: Vectors | None = None,
    ) -> SearchResult:
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        if k < 1:
            raise ValueError("k must be at least 1")
        vector, tokens, dense, lexical = self._rankings(
            query, k, self._allowed(document_ids), query_vector
        )
        dense_scores = dict(dense)
        bm25_scores = dict(lexical)
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = [(i, s) for i, s in lexical if s > 0]
        elif mode == "rerank" and self.ranker is not None:
            candidates = self.candidate_signals(vector, tokens, dense, lexical)
            scores = self.ranker.score(feature_matrix(candidates))
            ranked = sorted(
                ((int(r), float(x)) for r, x in zip(candidates.rows, scores, strict=True)),
                key=lambda item: (-item[1], item[0]),
            )
        else:  # hybrid, or rerank without a ranker (said so in the result's mode)
            ranked = self._fuse([dense, [(i, s) for i, s in lexical if s > 0]])
            mode = "hybrid"
        hits = []
        documents = self.index.documents
        for rank, (row, score) in enumerate(ranked[:k], start=1):
            chunk = self.index.chunk(row)
            hits.append(
                Hit(
                    rank=rank,
                    score=float(score),
                    chunk=chunk,
                    document=documents[chunk.document_id],
                    chunk_index=row,
                    dense_score=dense_scores.get(row),
                    bm25_score=bm25_scores.get(row),
                )
            )
        signals = Signals(
            dense_top=float(dense[0][1]) if dense else 0.0,
            bm25_top=float(lexical[0][1]) if lexical else 0.0,
            query_terms=len(set(tokens)),
            known_terms=len(set(tokens) & self._vocab),
            known_weight=self._known_weight(set(tokens)),
        )
        return SearchResult(query, mode, hits, vector, signals)

    def _rankings(
        self,
        query: str,
        k: int,
        allowed: frozenset[str] | None,
        query_vector: Vectors | None = None,
    ) -> tuple[Vectors, list[str], Ranking, Ranking]:
        """The question's vector and words, and its dense and BM25 rankings, deep enough for
        fusion and reranking to see past the first ``k``."""
        counts = self.index.chunk_counts
        total = len(self.index) if allowed is None else sum(counts.get(d, 0) for d in allowed)
        depth = min(total, max(50, 4 * k))
        vector = query_vector if query_vector is not None else self.embed_query(query)
        tokens = tokenize(query)
        known = [t for t in tokens if t in self._vocab]
        dense, lexical = self.index.candidates(vector, known, depth, allowed) if depth else ([], [])
        return vector, tokens, dense, lexical

    def candidates(self, query: str, k: int = 5) -> CandidateSignals:
        """The rerank mode's candidates for ``query`` and their signals (for training)."""
        return self.candidate_signals(*self._rankings(query, k, None))

    def candidate_signals(
        self,
        vector: Vectors,
        tokens: list[str],
        dense: Sequence[tuple[int, float]],
        lexical: Sequence[tuple[int, float]],
    ) -> CandidateSignals:
        """What the ranker sees about each dense or BM25 candidate (see service/reranking.py)."""
        lexical = [(i, s) for i, s in lexical if s > 0]
        rows = list(dict.fromkeys([i for i, _ in dense] + [i for i, _ in lexical]))
        dense_rank = {row: n for n, (row, _) in enumerate(dense, start=1)}
        bm25_rank = {row: n for n, (row, _) in enumerate(lexical, start=1)}
        dense_score = dict(dense)
        bm25_score = dict(lexical)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        row_array = np.asarray(rows, dtype=np.int64)
        cosine = np.asarray([dense_score.get(r, np.nan) for r in rows], dtype=np.float64)
        missing = np.flatnonzero(np.isnan(cosine))
        if len(missing):  # BM25-only candidates: their vectors from the index
            cosine[missing] = self.index.chunk_vectors(row_array[missing]) @ query
        best_sentence = self.index.best_sentence(row_array, query, cosine)
        documents = self.index.document_numbers(row_array)
        overlap, doc_overlap = self._word_overlap(tokens, row_array)
        unranked = len(dense) + 1
        return CandidateSignals(
            rows=row_array,
            documents=documents,
            dense=cosine,
            sentence=best_sentence,
            bm25=np.asarray([bm25_score.get(r, 0.0) for r in rows], dtype=np.float64),
            dense_rank=np.asarray([dense_rank.get(r, unranked) for r in rows], dtype=np.float64),
            bm25_rank=np.asarray([bm25_rank.get(r, 0) for r in rows], dtype=np.float64),
            overlap=overlap,
            doc_overlap=doc_overlap,
        )

    def _word_overlap(
        self, tokens: list[str], rows: np.ndarray[Any, np.dtype[np.int64]]
    ) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
        """IDF-weighted share of the question's words in each row and in each row's document."""
        terms = set(tokens)
        total = sum(self.term_weight(t) for t in terms)
        if not total or not len(rows):
            return np.zeros(len(rows)), np.zeros(len(rows))
        weights = {t: self.term_weight(t) / total for t in terms if t in self._vocab}
        return self.index.word_overlap(weights, rows)

    def _allowed(self, document_ids: Collection[str] | None) -> frozenset[str] | None:
        if document_ids is None:
            return None
        if isinstance(document_ids, str):  # one id, not a collection of one-letter ids
            document_ids = [document_ids]
        unknown = [d for d in document_ids if d not in self.index.documents]
        if unknown:
            raise UnknownDocumentError(unknown)
        return frozenset(document_ids)

    def _fuse(
        self,
        rankings: Sequence[Sequence[tuple[int, float]]],
        weights: Sequence[float] | None = None,
    ) -> list[tuple[int, float]]:
        fused: dict[int, float] = {}
        for n, ranking in enumerate(rankings):
            weight = weights[n] if weights else 1.0
            for rank, (row, _score) in enumerate(ranking, start=1):
                fused[row] = fused.get(row, 0.0) + weight / (self.settings.rrf_k + rank)
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
