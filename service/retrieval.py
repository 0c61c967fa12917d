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
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

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
    """Search one loaded index. Thread-safe for concurrent searches."""

    def __init__(
        self,
        data: IndexData,
        embedder: Embedder,
        settings: Settings,
        ranker: LinearRanker | None = None,
    ) -> None:
        self.data = data
        self.embedder = embedder
        self.settings = settings
        self.ranker = ranker
        grouped: dict[str, list[int]] = {}
        for i, chunk in enumerate(data.chunks):
            grouped.setdefault(chunk.document_id, []).append(i)
        numbers = {doc: n for n, doc in enumerate(grouped)}
        self._doc_number = np.asarray([numbers[c.document_id] for c in data.chunks], dtype=np.int64)
        self._doc_rows: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {
            k: np.asarray(v, dtype=np.int64) for k, v in grouped.items()
        }
        self._query_cache = _LRU(1024)
        self.document_texts = {d.id: d.text for d in data.documents.values()}
        vocab: dict[str, int] = dict(getattr(data.bm25, "vocab_dict", {}) or {})
        self._vocab = set(vocab)
        self._term_ids = vocab
        # Inverse document frequency per BM25 term, from the index's own term-chunk matrix.
        indptr = np.asarray(data.bm25.scores["indptr"])
        self._postings_ptr = indptr
        self._postings = np.asarray(data.bm25.scores["indices"])
        df = np.diff(indptr)
        n = max(1, len(data.chunks))
        self.idf = {
            term: float(np.log(1.0 + (n - df[i] + 0.5) / (df[i] + 0.5)))
            for term, i in vocab.items()
            if i < len(df)
        }
        self.max_idf = float(np.log(1.0 + (n + 0.5) / 0.5))

    @property
    def documents(self) -> dict[str, Document]:
        return self.data.documents

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
            query, k, self._allowed_rows(document_ids), query_vector
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
        for rank, (row, score) in enumerate(ranked[:k], start=1):
            chunk = self.data.chunks[row]
            hits.append(
                Hit(
                    rank=rank,
                    score=float(score),
                    chunk=chunk,
                    document=self.data.documents[chunk.document_id],
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
        allowed: np.ndarray[Any, np.dtype[np.int64]] | None,
        query_vector: Vectors | None = None,
    ) -> tuple[Vectors, list[str], list[tuple[int, float]], list[tuple[int, float]]]:
        """The question's vector and words, and its dense and BM25 rankings, deep enough for
        fusion and reranking to see past the first ``k``."""
        total = len(self.data.chunks) if allowed is None else len(allowed)
        depth = min(total, max(50, 4 * k))
        vector = query_vector if query_vector is not None else self.embed_query(query)
        tokens = tokenize(query)
        dense = self._dense(vector, depth, allowed) if depth else []
        lexical = self._bm25(tokens, depth, allowed) if depth else []
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
            stored = self.data.vectors.reconstruct_batch(row_array[missing])
            cosine[missing] = stored @ query
        best_sentence = self._best_sentence(row_array, query, cosine)
        documents = self._doc_number[row_array] if rows else np.zeros(0, dtype=np.int64)
        overlap, doc_overlap = self._word_overlap(tokens, row_array, documents)
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

    def _best_sentence(
        self,
        rows: np.ndarray[Any, np.dtype[np.int64]],
        query: np.ndarray[Any, np.dtype[np.float32]],
        fallback: np.ndarray[Any, np.dtype[np.float64]],
    ) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Each row's best sentence cosine (its chunk cosine when it has no sentences)."""
        offsets = self.data.sentence_offsets
        lo, hi = offsets[rows], offsets[rows + 1]
        counts = hi - lo
        best = fallback.copy()
        has = counts > 0
        if not has.any():
            return best
        lo, counts = lo[has], counts[has]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        gather = np.repeat(lo - starts, counts) + np.arange(int(counts.sum()))
        cosines = self.data.sentence_vectors[gather] @ query
        best[has] = np.maximum.reduceat(cosines, starts)
        return best

    def _word_overlap(
        self,
        tokens: list[str],
        rows: np.ndarray[Any, np.dtype[np.int64]],
        documents: np.ndarray[Any, np.dtype[np.int64]],
    ) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
        """IDF-weighted share of the question's words in each row and in each row's document."""
        terms = set(tokens)
        total = sum(self.term_weight(t) for t in terms)
        in_chunk = np.zeros(len(rows))
        in_document = np.zeros(len(rows))
        if not total or not len(rows):
            return in_chunk, in_document
        chunk_has = np.zeros(len(self.data.chunks), dtype=bool)
        document_has = np.zeros(int(self._doc_number.max()) + 1, dtype=bool)
        for term in terms:
            term_id = self._term_ids.get(term)
            if term_id is None or term_id + 1 >= len(self._postings_ptr):
                continue
            lo, hi = int(self._postings_ptr[term_id]), int(self._postings_ptr[term_id + 1])
            holders = self._postings[lo:hi]
            weight = self.term_weight(term) / total
            chunk_has[:] = False
            chunk_has[holders] = True
            document_has[:] = False
            document_has[self._doc_number[holders]] = True
            in_chunk += weight * chunk_has[rows]
            in_document += weight * document_has[documents]
        return in_chunk, in_document

    def _allowed_rows(
        self, document_ids: Collection[str] | None
    ) -> np.ndarray[Any, np.dtype[np.int64]] | None:
        if document_ids is None:
            return None
        if isinstance(document_ids, str):  # one id, not a collection of one-letter ids
            document_ids = [document_ids]
        unknown = [d for d in document_ids if d not in self.data.documents]
        if unknown:
            raise UnknownDocumentError(unknown)
        rows = [self._doc_rows.get(d, np.zeros(0, dtype=np.int64)) for d in set(document_ids)]
        return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)

    def _dense(
        self, vector: Vectors, n: int, allowed: np.ndarray[Any, np.dtype[np.int64]] | None
    ) -> list[tuple[int, float]]:
        import faiss

        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if allowed is None:
            scores, ids = self.data.vectors.search(query, n)
        else:
            selector = faiss.IDSelectorBatch(allowed)
            params: Any
            if isinstance(self.data.vectors, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                params.efSearch = self.data.vectors.hnsw.efSearch
            else:
                params = faiss.SearchParameters()
            params.sel = selector
            scores, ids = self.data.vectors.search(query, n, params=params)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        # Equal scores in corpus order, as in the BM25 and fused rankings (FAISS leaves ties
        # in heap order).
        return sorted(found, key=lambda item: (-item[1], item[0]))

    def _bm25(
        self, tokens: list[str], n: int, allowed: np.ndarray[Any, np.dtype[np.int64]] | None
    ) -> list[tuple[int, float]]:
        known = [t for t in tokens if t in self._vocab]
        if not known:
            return []
        scores = np.asarray(self.data.bm25.get_scores(known), dtype=np.float32)
        if allowed is not None:
            mask = np.full(scores.shape, -np.inf, dtype=np.float32)
            mask[allowed] = scores[allowed]
            scores = mask
        n = min(n, int(np.isfinite(scores).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top]

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
