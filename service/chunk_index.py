"""The storage seam: what retrieval and answering read from an index, and the embedded backend.

:class:`ChunkIndex` is the contract. A backend stores the chunks, their dense vectors, the
vectors of their sentences and a lexical index, and answers two candidate searches, ``dense``
and ``lexical``, each optionally restricted to some documents; everything after that (fusion,
the learned ranker's features and scores, sentence choice, the answer) stays in
:mod:`service.retrieval` and :mod:`service.answering`, the same for every backend. Rows are the
chunks' positions in the build (0..n-1), so a backend's candidates, the ranker's features and
the answer's citations all name chunks the same way.

:class:`EmbeddedIndex` is the default backend: a build folder loaded into this process
(:class:`service.index_store.IndexData`: FAISS for the dense vectors, bm25s for BM25, the
sentence vectors as one float16 file; records and sentence vectors are read from the files
when asked for, BM25's matrix is memory-mapped).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from service.chunking import Chunk
from service.documents import Document
from service.embedding import Vectors
from service.index_store import IndexData, IndexStoreError, Manifest

Rows = np.ndarray[Any, np.dtype[np.int64]]
Floats = np.ndarray[Any, np.dtype[np.float64]]
#: One ranking: (row, score), best first.
Ranking = list[tuple[int, float]]


class BackendUnavailable(IndexStoreError):
    """The index's store cannot answer: unreachable, timed out, or its collection is gone.

    One line naming where (a URL, a folder) and what (a collection); the API answers 503 with
    it and ``/readyz`` reports it. Raised by backends that live outside this process
    (:mod:`service.qdrant_index`)."""


class ChunkIndex(Protocol):
    """One index in service, as retrieval and answering see it."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def build_name(self) -> str:
        """Which build this is (a folder name, a collection name): for logs, metrics, feedback."""
        ...

    @property
    def documents(self) -> Mapping[str, Document]: ...

    @property
    def chunk_counts(self) -> Mapping[str, int]:
        """Chunks per document id."""
        ...

    def __len__(self) -> int:
        """The number of chunks."""
        ...

    def chunk(self, row: int) -> Chunk: ...

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk, in row order (evaluation and training read them all)."""
        ...

    def chunks_of(self, document_id: str) -> list[Chunk]:
        """One document's chunks, in reading order."""
        ...

    def chunk_sentence_vectors(self, row: int) -> Vectors:
        """The ingest-time vectors of a chunk's sentences (one row per sentence)."""
        ...

    def dense(self, query: Vectors, n: int, document_ids: Collection[str] | None) -> Ranking:
        """The ``n`` chunks closest to ``query`` (cosine), ties in row order."""
        ...

    def lexical(
        self, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> Ranking:
        """The ``n`` best BM25 scores for the (stemmed) ``terms``, ties in row order; only
        chunks holding at least one of them."""
        ...

    def chunk_vectors(self, rows: Rows) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The stored dense vectors of ``rows``."""
        ...

    def best_sentence(self, rows: Rows, query: Vectors, fallback: Floats) -> Floats:
        """Each row's best sentence cosine with ``query`` (``fallback`` without sentences)."""
        ...

    def document_numbers(self, rows: Rows) -> Rows:
        """A number per document (the same for every chunk of one document), for ``rows``."""
        ...

    def word_overlap(self, weights: Mapping[str, float], rows: Rows) -> tuple[Floats, Floats]:
        """For each row: the summed ``weights`` of the terms its chunk holds, and of those its
        document holds (in any chunk)."""
        ...

    @property
    def document_frequencies(self) -> Mapping[str, int]:
        """Chunks holding each stemmed term (the lexical vocabulary)."""
        ...

    def candidates(
        self, query: Vectors, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> tuple[Ranking, Ranking]:
        """``dense(query, ...)`` and ``lexical(terms, ...)`` together (one round trip where
        the backend is remote); no ``terms``: no lexical candidates."""
        ...

    def refresh(self) -> ChunkIndex:
        """The index to serve now: this one, or a newer build published since it was opened
        (by another process). Raises :class:`BackendUnavailable` when the store cannot say."""
        ...


class EmbeddedIndex:
    """The default backend: a build loaded into this process (FAISS, bm25s, numpy)."""

    def __init__(self, data: IndexData) -> None:
        self.data = data
        # Per chunk one int32 (its document number); per document a slice of ``_by_document``
        # (the rows sorted by document): no per-chunk Python objects.
        self._doc_number = data.chunk_documents
        self._by_document: Rows = np.argsort(data.chunk_documents, kind="stable")
        self._doc_start: Rows = np.zeros(len(data.documents) + 1, dtype=np.int64)
        np.cumsum(
            np.bincount(data.chunk_documents, minlength=len(data.documents)),
            out=self._doc_start[1:],
        )
        vocab: dict[str, int] = dict(getattr(data.bm25, "vocab_dict", {}) or {})
        self._term_ids = vocab
        self._postings_ptr = np.asarray(data.bm25.scores["indptr"])
        self._postings = np.asarray(data.bm25.scores["indices"])

    def _doc_rows(self, document_id: str) -> Rows | None:
        number = self.data.documents.number(document_id)
        if number is None:
            return None
        return self._by_document[self._doc_start[number] : self._doc_start[number + 1]]

    # -- what the index holds

    @property
    def manifest(self) -> Manifest:
        return self.data.manifest

    @property
    def build_name(self) -> str:
        return self.data.path.name

    @property
    def documents(self) -> Mapping[str, Document]:
        return self.data.documents

    @property
    def chunk_counts(self) -> dict[str, int]:
        return self.data.chunk_counts

    def __len__(self) -> int:
        return len(self.data.chunks)

    def chunk(self, row: int) -> Chunk:
        return self.data.chunks[row]

    def chunks(self) -> Iterator[Chunk]:
        return iter(self.data.chunks)

    def chunks_of(self, document_id: str) -> list[Chunk]:
        rows = self._doc_rows(document_id)
        return [] if rows is None else [self.data.chunks[int(r)] for r in rows]

    def chunk_sentence_vectors(self, row: int) -> Vectors:
        return self.data.chunk_sentence_vectors(row)

    @cached_property
    def document_frequencies(self) -> dict[str, int]:
        df = np.diff(self._postings_ptr)
        return {term: int(df[i]) for term, i in self._term_ids.items() if i < len(df)}

    # -- the two candidate searches

    def _allowed(self, document_ids: Collection[str] | None) -> Rows | None:
        if document_ids is None:
            return None
        empty = np.zeros(0, dtype=np.int64)
        rows = [self._doc_rows(d) for d in set(document_ids)]
        found = [r for r in rows if r is not None]
        return np.sort(np.concatenate(found)).astype(np.int64) if found else empty

    def dense(self, query: Vectors, n: int, document_ids: Collection[str] | None) -> Ranking:
        import faiss

        allowed = self._allowed(document_ids)
        n = min(n, len(self) if allowed is None else len(allowed))
        if n <= 0:
            return []
        vector = np.asarray(query, dtype=np.float32).reshape(1, -1)
        index = self.data.vectors
        if allowed is None:
            scores, ids = index.search(vector, n)
        else:
            params: Any
            if isinstance(index, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                params.efSearch = index.hnsw.efSearch
            else:
                params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorBatch(allowed)
            scores, ids = index.search(vector, n, params=params)
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        # Equal scores in corpus order, as in the BM25 and fused rankings (FAISS leaves ties
        # in heap order).
        return sorted(found, key=lambda item: (-item[1], item[0]))

    def lexical(
        self, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> Ranking:
        known = [t for t in terms if t in self._term_ids]
        if not known or n <= 0:
            return []
        scores = np.asarray(self.data.bm25.get_scores(known), dtype=np.float32)
        allowed = self._allowed(document_ids)
        if allowed is not None:
            mask = np.full(scores.shape, -np.inf, dtype=np.float32)
            mask[allowed] = scores[allowed]
            scores = mask
        # Only chunks holding a term: bm25s gives every other chunk 0.
        n = min(n, int((scores > 0).sum()))
        if n <= 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top]

    def candidates(
        self, query: Vectors, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> tuple[Ranking, Ranking]:
        dense = self.dense(query, n, document_ids)
        return dense, (self.lexical(terms, n, document_ids) if terms else [])

    def refresh(self) -> EmbeddedIndex:
        return self  # a new build is swapped in by whoever built it (Engine.reindex)

    # -- what the ranker reads about candidates

    def chunk_vectors(self, rows: Rows) -> np.ndarray[Any, np.dtype[np.float32]]:
        stored: np.ndarray[Any, np.dtype[np.float32]] = self.data.vectors.reconstruct_batch(rows)
        return stored

    def best_sentence(self, rows: Rows, query: Vectors, fallback: Floats) -> Floats:
        offsets = self.data.sentence_offsets
        lo, hi = offsets[rows], offsets[rows + 1]
        counts = hi - lo
        best = fallback.copy()
        has = counts > 0
        if not has.any():
            return best
        lo, hi, counts = lo[has], hi[has], counts[has]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        stored = self.data.sentence_rows.spans(lo, hi)  # float16 on disk, float32 here
        cosines = stored @ np.asarray(query, dtype=np.float32)
        best[has] = np.maximum.reduceat(cosines, starts)
        return best

    def document_numbers(self, rows: Rows) -> Rows:
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        return self._doc_number[rows].astype(np.int64)

    def word_overlap(self, weights: Mapping[str, float], rows: Rows) -> tuple[Floats, Floats]:
        in_chunk = np.zeros(len(rows))
        in_document = np.zeros(len(rows))
        if not weights or not len(rows):
            return in_chunk, in_document
        documents = self._doc_number[rows]
        chunk_has = np.zeros(len(self), dtype=bool)
        document_has = np.zeros(len(self.data.documents), dtype=bool)
        for term, weight in weights.items():
            term_id = self._term_ids.get(term)
            if term_id is None or term_id + 1 >= len(self._postings_ptr):
                continue
            lo, hi = int(self._postings_ptr[term_id]), int(self._postings_ptr[term_id + 1])
            holders = self._postings[lo:hi]
            chunk_has[:] = False
            chunk_has[holders] = True
            document_has[:] = False
            document_has[self._doc_number[holders]] = True
            in_chunk += weight * chunk_has[rows]
            in_document += weight * document_has[documents]
        return in_chunk, in_document
