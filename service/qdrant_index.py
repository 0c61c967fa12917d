"""The Qdrant backend: a :class:`~service.chunk_index.ChunkIndex` over qdrant-client.

One build is two collections, switched in together by one atomic alias update:

- ``<alias>-<build>``: a point per chunk (id = its row) with a dense vector ``dense`` (DOT: our
  vectors are normalised), a sparse vector ``bm25`` holding the chunk's full bm25s weights (a
  query with term counts then scores exactly as ``bm25s.get_scores``), the sentence vectors as
  a multivector ``sentences`` (left out when a chunk has none) and the chunk record as payload
  (with its stemmed terms, for the ranker's word-overlap feature);
- ``<alias>-<build>-meta``: vector-less points holding the manifest, a point per document
  (metadata, chunk count, text, rows and stemmed terms) and the vocabulary (term -> sparse
  index, document frequency).

Aliases ``<alias>`` and ``<alias>-meta`` name the build in service. An API process loads the
manifest, each document's metadata and the vocabulary (a payload selector leaves texts, rows
and term sets in Qdrant); it fetches chunks and vectors per query, a document's terms when a
candidate comes from it (the ranker's document-overlap feature) and its text or rows when a
request shows the document. Small LRUs keep the recent ones. It holds no per-chunk state, so
any number of replicas can serve one collection and their memory does not grow with it.

A build is published by :func:`publish`: new collections, upserted in batches, counted, then
the aliases switched and the previous build dropped; a crash before the switch leaves the
old build in service and the half-built collections are removed by the next publish.

qdrant-client's errors (REST, gRPC, local mode) become :class:`BackendUnavailable`.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from service.chunk_index import BackendUnavailable, Floats, Ranking, Rows
from service.chunking import Chunk, Span
from service.config import Settings
from service.documents import Document
from service.embedding import Vectors
from service.index_store import (
    ChunkingSettings,
    IndexData,
    IndexStoreError,
    Manifest,
    ProgressFn,
    text_key,
)
from service.records import document_metadata, stored_document

DENSE = "dense"
SPARSE = "bm25"
SENTENCES = "sentences"
META_SUFFIX = "-meta"
VOCABULARY_PAGE = 5000
UPSERT_BATCH = 256
RECORDS_KEPT = 2048
#: Document texts and per-document term sets kept per process (the rest stay in Qdrant).
TEXTS_KEPT = 64
TERM_SETS_KEPT = 1024
#: The meta collection's layout: 2 keeps each document's text, rows and terms apart from the
#: metadata an API process loads at start-up. A build published in another layout is rebuilt.
META_FORMAT = 2
_ON_DEMAND = ["text", "rows", "document_terms"]
_BUILD = r"-build-\d{8}T\d{6}-[0-9a-f]{6}"


class QdrantLockedError(IndexStoreError):
    """A local-mode folder held by another process (qdrant-client allows one per folder)."""


class OutdatedCollection(BackendUnavailable):
    """A build published by an older version of the service, in another meta layout."""


def where(settings: Settings) -> str:
    """The store, for messages: the URL, or the local-mode folder."""
    if settings.qdrant_url:
        return settings.qdrant_url
    return f"local folder {settings.qdrant_path}"


def meta_alias(alias: str) -> str:
    return alias + META_SUFFIX


def meta_collection(collection: str) -> str:
    return collection + META_SUFFIX


# ---------------------------------------------------------------------------------------------
# Clients and errors

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def open_client(settings: Settings) -> Any:
    """The process's one client for the configured store (local mode allows one per folder,
    so the server's reader and its re-index share it)."""
    key = (
        settings.qdrant_url,
        settings.qdrant_path,
        settings.qdrant_api_key,
        settings.qdrant_timeout_s,
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _connect(settings)
            _clients[key] = client
        return client


def _connect(settings: Settings) -> Any:
    import warnings

    from qdrant_client import QdrantClient

    warnings.filterwarnings("ignore", message="Local mode is not recommended", category=UserWarning)
    if settings.qdrant_url:
        return QdrantClient(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            timeout=math.ceil(settings.qdrant_timeout_s),
            check_compatibility=False,
        )
    path = settings.qdrant_path or ":memory:"
    if path == ":memory:":
        return QdrantClient(location=":memory:")
    try:
        return QdrantClient(path=path)
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise QdrantLockedError(
            f"the Qdrant local-mode folder {path}/ (QA_QDRANT_PATH) is in use by another "
            "process, and local mode allows one at a time; stop that process, or run a Qdrant "
            "server and set QA_QDRANT_URL instead"
        ) from None


@atexit.register
def close_clients() -> None:
    """Close every client (releases local-mode folders; tests, restarts)."""
    with _clients_lock:
        for client in _clients.values():
            with contextlib.suppress(Exception):
                client.close()
        _clients.clear()


def _unavailable(exc: Exception, at: str, collection: str | None) -> BackendUnavailable | None:
    """``exc`` from qdrant-client as one line, or None when it is not the store's failure."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import (
        ApiException,
        ResponseHandlingException,
        UnexpectedResponse,
    )

    named = f"collection '{collection}'" if collection else "the collection"
    missing = (
        f"{named} is missing in Qdrant at {at}; publish a build with `python -m service ingest`"
    )
    if isinstance(exc, UnexpectedResponse):
        if exc.status_code == 404:
            return BackendUnavailable(missing)
        return BackendUnavailable(f"Qdrant at {at} answered {exc.status_code} for {named}")
    if isinstance(exc, ResponseHandlingException):
        import httpx

        if isinstance(exc.source, httpx.TimeoutException):
            return BackendUnavailable(
                f"Qdrant at {at} did not answer in time (QA_QDRANT_TIMEOUT_S)"
            )
        return BackendUnavailable(f"Qdrant at {at} is unreachable ({exc})")
    if isinstance(exc, ResourceExhaustedResponse):
        return BackendUnavailable(f"Qdrant at {at} is overloaded; retry later")
    if isinstance(exc, ApiException):
        return BackendUnavailable(f"Qdrant at {at} failed: {exc}")
    try:
        import grpc  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - grpcio comes with qdrant-client
        grpc = None
    if grpc is not None and isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code == grpc.StatusCode.NOT_FOUND:
            return BackendUnavailable(missing)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return BackendUnavailable(
                f"Qdrant at {at} did not answer in time (QA_QDRANT_TIMEOUT_S)"
            )
        return BackendUnavailable(f"Qdrant at {at} is unavailable ({code.name})")
    if isinstance(exc, ValueError) and str(exc).endswith("not found"):  # local mode
        return BackendUnavailable(missing)
    if isinstance(exc, OSError):
        return BackendUnavailable(f"Qdrant at {at} is unreachable ({exc})")
    return None


@contextlib.contextmanager
def translated(at: str, collection: str | None = None) -> Iterator[None]:
    """Turn the store's failures inside the block into :class:`BackendUnavailable`."""
    try:
        yield
    except IndexStoreError:
        raise
    except Exception as exc:
        mapped = _unavailable(exc, at, collection)
        if mapped is None:
            raise
        raise mapped from exc


def resolve(client: Any, alias: str) -> str | None:
    """The collection ``alias`` names, or None."""
    for item in client.get_aliases().aliases:
        if item.alias_name == alias:
            return str(item.collection_name)
    return None


# ---------------------------------------------------------------------------------------------
# Publishing a build


def _sparse_rows(bm25: Any, n_chunks: int) -> tuple[Rows, Rows, Floats, Rows]:
    """bm25s's eager score matrix (a row per term) as per-chunk (term, weight) lists: term ids,
    weights and the bounds of each chunk's slice."""
    data, indices, indptr = (np.asarray(bm25.scores[k]) for k in ("data", "indices", "indptr"))
    terms = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((terms, indices))  # by chunk, then term
    doc_of, term_of, weight = indices[order], terms[order], data[order]
    bounds = np.searchsorted(doc_of, np.arange(n_chunks + 1))
    return term_of.astype(np.int64), bounds.astype(np.int64), weight.astype(np.float64), indptr


def _chunk_payload(chunk: Chunk) -> dict[str, Any]:
    return {
        "id": chunk.id,
        "document_id": chunk.document_id,
        "ordinal": chunk.ordinal,
        "section": chunk.section,
        "text": chunk.text,
        "start": chunk.start,
        "end": chunk.end,
        "sentences": [[s.start, s.end] for s in chunk.sentences],
    }


def _chunk_of(payload: Mapping[str, Any]) -> Chunk:
    return Chunk(
        id=payload["id"],
        document_id=payload["document_id"],
        ordinal=int(payload["ordinal"]),
        section=payload["section"],
        text=payload["text"],
        start=int(payload["start"]),
        end=int(payload["end"]),
        sentences=tuple(Span(int(a), int(b)) for a, b in payload["sentences"]),
    )


def publish(
    client: Any, settings: Settings, data: IndexData, progress: ProgressFn | None = None
) -> str:
    """Publish the local build ``data`` as a new collection and switch the alias to it; returns
    the collection's name. Until the switch the previous build keeps serving."""
    from qdrant_client import models

    alias = settings.qdrant_collection
    at = where(settings)
    name = f"{alias}-{data.path.name}"
    meta = meta_collection(name)
    chunks, n = data.chunks, len(data.chunks)
    model = data.manifest.model
    with translated(at, name):
        current = resolve(client, alias)
        if current == name and client.collection_exists(meta):
            return name  # this build is already in service
        drop_leftovers(client, alias, keep={current})
        for stale in (name, meta):
            if client.collection_exists(stale):
                client.delete_collection(stale)
        dim = data.manifest.dimension
        client.create_collection(
            name,
            vectors_config={
                DENSE: models.VectorParams(size=dim, distance=models.Distance.DOT),
                SENTENCES: models.VectorParams(
                    size=dim,
                    distance=models.Distance.DOT,
                    multivector_config=models.MultiVectorConfig(
                        comparator=models.MultiVectorComparator.MAX_SIM
                    ),
                ),
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams()},
        )
        vocab: dict[str, int] = dict(getattr(data.bm25, "vocab_dict", {}) or {})
        term_names = {i: t for t, i in vocab.items()}
        term_of, bounds, weight, indptr = _sparse_rows(data.bm25, n)
        dense = data.vectors.reconstruct_n(0, data.vectors.ntotal)
        documents = data.documents
        stage = f"publishing to Qdrant collection {name}"
        for lo in range(0, n, UPSERT_BATCH):
            points = []
            for row in range(lo, min(n, lo + UPSERT_BATCH)):
                chunk = chunks[row]
                a, b = int(bounds[row]), int(bounds[row + 1])
                vector: dict[str, Any] = {
                    DENSE: dense[row].astype(float).tolist(),
                    SPARSE: models.SparseVector(
                        indices=term_of[a:b].tolist(), values=weight[a:b].tolist()
                    ),
                }
                sentences = data.chunk_sentence_vectors(row)
                if len(sentences):
                    vector[SENTENCES] = sentences.astype(float).tolist()
                title = documents[chunk.document_id].title
                payload = _chunk_payload(chunk) | {
                    "row": row,
                    "terms": [term_names[int(t)] for t in term_of[a:b]],
                    "key": text_key(
                        model, chunk.embedding_text(title, data.manifest.chunking.embed_context)
                    ),
                }
                points.append(models.PointStruct(id=row, vector=vector, payload=payload))
            client.upsert(name, points=points, wait=True)
            if progress:
                progress(stage, min(n, lo + UPSERT_BATCH), n)
        if n == 0 and progress:
            progress(stage, 0, 0)
        meta_points = _meta_points(data, name, term_of, bounds, indptr, term_names)
        client.create_collection(meta, vectors_config={})
        for lo in range(0, len(meta_points), UPSERT_BATCH):
            batch = meta_points[lo : lo + UPSERT_BATCH]
            client.upsert(
                meta,
                points=[models.PointStruct(id=i, vector={}, payload=p) for i, p in batch],
                wait=True,
            )
        counted = client.count(name, exact=True).count
        counted_meta = client.count(meta, exact=True).count
        if counted != n or counted_meta != len(meta_points):
            raise IndexStoreError(
                f"Qdrant collection {name} at {at} holds {counted} chunks and {counted_meta} "
                f"records, not {n} and {len(meta_points)}; the alias still names {current}"
            )
        operations: list[Any] = []
        for alias_name, target in ((alias, name), (meta_alias(alias), meta)):
            if current is not None or resolve(client, alias_name) is not None:
                operations.append(
                    models.DeleteAliasOperation(
                        delete_alias=models.DeleteAlias(alias_name=alias_name)
                    )
                )
            operations.append(
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=target, alias_name=alias_name)
                )
            )
        client.update_collection_aliases(change_aliases_operations=operations)
        if current is not None and current != name:
            for old in (current, meta_collection(current)):
                with contextlib.suppress(Exception):
                    client.delete_collection(old)
    return name


def _meta_points(
    data: IndexData,
    name: str,
    term_of: Rows,
    bounds: Rows,
    indptr: Rows,
    term_names: Mapping[int, str],
) -> list[tuple[int, dict[str, Any]]]:
    """The meta collection's records: the manifest, a record per document, vocabulary pages."""
    rows_of: dict[str, list[int]] = {}
    for row, chunk in enumerate(data.chunks):
        rows_of.setdefault(chunk.document_id, []).append(row)
    points: list[tuple[int, dict[str, Any]]] = [
        (
            0,
            {
                "kind": "manifest",
                "manifest": asdict(data.manifest),
                "collection": name,
                "meta_format": META_FORMAT,
            },
        )
    ]

    def document(doc: Document, number: int, rows: list[int], terms: list[str]) -> None:
        payload = {
            "kind": "document",
            "number": number,
            "record": document_metadata(doc),
            "chunks": len(rows),
            # Read on demand, never at start-up (see _ON_DEMAND):
            "text": doc.text,
            "rows": rows,
            "document_terms": terms,
        }
        points.append((len(points), payload))

    for number, (doc_id, rows) in enumerate(rows_of.items()):
        held = {int(t) for r in rows for t in term_of[int(bounds[r]) : int(bounds[r + 1])]}
        document(data.documents[doc_id], number, rows, sorted(term_names[t] for t in held))
    for doc_id, doc in data.documents.items():
        if doc_id not in rows_of:  # a document without chunks (headings only)
            document(doc, -1, [], [])
    df = np.diff(indptr)
    ids = sorted(i for i in term_names if i < len(df))  # bm25s's '' has no postings row
    for lo in range(0, len(ids), VOCABULARY_PAGE):
        page = ids[lo : lo + VOCABULARY_PAGE]
        points.append(
            (
                len(points),
                {
                    "kind": "vocabulary",
                    "terms": [term_names[i] for i in page],
                    "ids": page,
                    "df": [int(df[i]) for i in page],
                },
            )
        )
    return points


def drop_leftovers(client: Any, alias: str, keep: Collection[str | None]) -> list[str]:
    """Delete this alias's build collections that no alias names (a build killed before its
    switch); ``keep`` the one in service. Returns the names deleted."""
    pattern = re.compile(re.escape(alias) + _BUILD + f"({re.escape(META_SUFFIX)})?")
    kept = {k for k in keep if k} | {meta_collection(k) for k in keep if k}
    dropped = []
    for item in client.get_collections().collections:
        if pattern.fullmatch(item.name) and item.name not in kept:
            client.delete_collection(item.name)
            dropped.append(item.name)
    return dropped


# ---------------------------------------------------------------------------------------------
# Serving


@dataclass(frozen=True)
class _Record:
    chunk: Chunk
    vector: np.ndarray[Any, np.dtype[np.float32]]
    sentences: np.ndarray[Any, np.dtype[np.float32]]
    terms: frozenset[str]


class QdrantIndex:
    """One published build in Qdrant, bound to its collection (not the alias), so a request
    started on it ends on it; :meth:`refresh` follows the alias to a newer build."""

    def __init__(self, client: Any, settings: Settings, collection: str) -> None:
        self.client = client
        self.settings = settings
        self.collection = collection
        self.at = where(settings)
        self._records: OrderedDict[int, _Record] = OrderedDict()
        self._lock = threading.Lock()
        self._load_meta()

    @classmethod
    def open(cls, client: Any, settings: Settings, collection: str | None = None) -> QdrantIndex:
        """The build ``collection``, or the one the alias names (IndexStoreError if none)."""
        with translated(where(settings), collection or settings.qdrant_collection):
            name = collection or resolve(client, settings.qdrant_collection)
        if name is None:
            raise BackendUnavailable(
                f"Qdrant at {where(settings)} has no collection behind alias "
                f"'{settings.qdrant_collection}'; publish one with `python -m service ingest`"
            )
        return cls(client, settings, name)

    def _load_meta(self) -> None:
        """The manifest, every document's metadata and the vocabulary; each document's text,
        rows and term set stay in Qdrant until asked for (so start-up and resident memory
        grow with the documents and the vocabulary, not with the chunks)."""
        from qdrant_client import models

        meta = meta_collection(self.collection)
        records: list[Any] = []
        with translated(self.at, meta):
            offset = None
            while True:
                page, offset = self.client.scroll(
                    meta,
                    limit=1000,
                    offset=offset,
                    with_payload=models.PayloadSelectorExclude(exclude=_ON_DEMAND),
                    with_vectors=False,
                )
                records.extend(page)
                if offset is None:
                    break
        manifest: Manifest | None = None
        layout = None
        # A document's text, read from the meta collection when asked for; the last few kept.
        self._read_text = lru_cache(maxsize=TEXTS_KEPT)(self._text)
        self._documents: dict[str, Document] = {}
        self._doc_point: dict[str, int] = {}  # document id -> its meta point
        self._doc_number: dict[str, int] = {}
        self._number_point: dict[int, int] = {}  # document number -> its meta point
        self._chunk_counts: dict[str, int] = {}
        self._term_ids: dict[str, int] = {}
        self._df: dict[str, int] = {}
        for record in sorted(records, key=lambda r: int(r.id)):
            payload = record.payload or {}
            kind = payload.get("kind")
            if kind == "manifest":
                manifest = Manifest.from_dict(payload["manifest"])
                layout = payload.get("meta_format")
            elif kind == "document" and layout == META_FORMAT:
                point = int(record.id)
                doc = stored_document(payload["record"], self._read_text, point)
                self._documents[doc.id] = doc
                self._doc_point[doc.id] = point
                if payload["chunks"]:
                    number = int(payload["number"])
                    self._doc_number[doc.id] = number
                    self._number_point[number] = point
                    self._chunk_counts[doc.id] = int(payload["chunks"])
            elif kind == "vocabulary":
                for term, i, f in zip(payload["terms"], payload["ids"], payload["df"], strict=True):
                    self._term_ids[term] = int(i)
                    self._df[term] = int(f)
        if manifest is None:
            raise BackendUnavailable(
                f"collection '{meta}' in Qdrant at {self.at} holds no manifest; re-publish with "
                "`python -m service ingest --force`"
            )
        if layout != META_FORMAT:
            raise OutdatedCollection(
                f"collection '{meta}' in Qdrant at {self.at} was published by an older version "
                "of the service; re-publish with `python -m service ingest --force`"
            )
        self._manifest = manifest
        self._n = sum(self._chunk_counts.values())
        self._term_sets: OrderedDict[int, frozenset[str]] = OrderedDict()

    def _meta_fields(self, points: Sequence[int], key: str) -> dict[int, Any]:
        """``key`` of the meta ``points`` (one ``retrieve``)."""
        from qdrant_client import models

        meta = meta_collection(self.collection)
        with translated(self.at, meta):
            found = self.client.retrieve(
                meta,
                ids=list(points),
                with_payload=models.PayloadSelectorInclude(include=[key]),
                with_vectors=False,
            )
        values = {int(p.id): (p.payload or {}).get(key) for p in found}
        lost = [p for p in points if values.get(p) is None]
        if lost:
            raise BackendUnavailable(
                f"collection '{meta}' in Qdrant at {self.at} lacks the {key} of records "
                f"{lost[:5]}; re-publish with `python -m service ingest --force`"
            )
        return values

    def _text(self, point: int) -> str:
        return str(self._meta_fields([point], "text")[point])

    def _document_terms(self, numbers: Collection[int]) -> dict[int, frozenset[str]]:
        """The stemmed terms of documents (by number), for the ranker's document overlap."""
        with self._lock:
            found = {n: self._term_sets[n] for n in numbers if n in self._term_sets}
            for n in found:
                self._term_sets.move_to_end(n)
        missing = [n for n in numbers if n not in found]
        if missing:
            fetched = self._meta_fields([self._number_point[n] for n in missing], "document_terms")
            with self._lock:
                for n in missing:
                    terms = frozenset(fetched[self._number_point[n]])
                    found[n] = self._term_sets[n] = terms
                while len(self._term_sets) > TERM_SETS_KEPT:
                    self._term_sets.popitem(last=False)
        return found

    # -- what the index holds

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def build_name(self) -> str:
        return self.collection

    @property
    def documents(self) -> dict[str, Document]:
        return self._documents

    @property
    def chunk_counts(self) -> dict[str, int]:
        return self._chunk_counts

    @property
    def document_frequencies(self) -> dict[str, int]:
        return self._df

    def __len__(self) -> int:
        return self._n

    def _fetch(self, rows: Sequence[int]) -> list[_Record]:
        """The records of ``rows`` (from the LRU, else one ``retrieve``), in order."""
        wanted = [int(r) for r in rows]
        with self._lock:
            found = {r: self._records[r] for r in wanted if r in self._records}
            for r in found:
                self._records.move_to_end(r)
        missing = list(dict.fromkeys(r for r in wanted if r not in found))
        if missing:
            with translated(self.at, self.collection):
                points = self.client.retrieve(
                    self.collection,
                    ids=missing,
                    with_payload=True,
                    with_vectors=[DENSE, SENTENCES],
                )
            dim = self._manifest.dimension
            for point in points:
                vectors = point.vector or {}
                sentences = vectors.get(SENTENCES) or []
                record = _Record(
                    chunk=_chunk_of(point.payload),
                    vector=np.asarray(vectors[DENSE], dtype=np.float32),
                    sentences=np.asarray(sentences, dtype=np.float32).reshape(-1, dim),
                    terms=frozenset(point.payload.get("terms") or ()),
                )
                found[int(point.id)] = record
            with self._lock:
                for r in missing:
                    if r in found:
                        self._records[r] = found[r]
                while len(self._records) > RECORDS_KEPT:
                    self._records.popitem(last=False)
        lost = [r for r in wanted if r not in found]
        if lost:
            raise BackendUnavailable(
                f"collection '{self.collection}' in Qdrant at {self.at} lacks chunks "
                f"{lost[:5]}; re-publish with `python -m service ingest --force`"
            )
        return [found[r] for r in wanted]

    def chunk(self, row: int) -> Chunk:
        return self._fetch([row])[0].chunk

    def chunks(self) -> Iterator[Chunk]:
        for lo in range(0, self._n, UPSERT_BATCH):
            ids = list(range(lo, min(self._n, lo + UPSERT_BATCH)))
            with translated(self.at, self.collection):
                points = self.client.retrieve(
                    self.collection, ids=ids, with_payload=True, with_vectors=False
                )
            for point in sorted(points, key=lambda p: int(p.id)):
                yield _chunk_of(point.payload)

    def chunks_of(self, document_id: str) -> list[Chunk]:
        if not self._chunk_counts.get(document_id):
            return []
        point = self._doc_point[document_id]
        rows = [int(r) for r in self._meta_fields([point], "rows")[point]]
        return [r.chunk for r in self._fetch(rows)]

    def chunk_sentence_vectors(self, row: int) -> Vectors:
        return self._fetch([row])[0].sentences

    # -- the two candidate searches

    def _filter(self, document_ids: Collection[str] | None) -> Any:
        from qdrant_client import models

        if document_ids is None:
            return None
        return models.Filter(
            must=[
                models.FieldCondition(
                    key="document_id", match=models.MatchAny(any=sorted(document_ids))
                )
            ]
        )

    def _depth(self, n: int, document_ids: Collection[str] | None) -> int:
        if document_ids is None:
            return min(n, self._n)
        return min(n, sum(self._chunk_counts.get(d, 0) for d in set(document_ids)))

    def _sparse(self, terms: Sequence[str]) -> Any:
        from qdrant_client import models

        ids = [self._term_ids[t] for t in terms if t in self._term_ids]
        if not ids:
            return None
        unique, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
        return models.SparseVector(indices=unique.tolist(), values=counts.astype(float).tolist())

    @staticmethod
    def _ranking(points: Sequence[Any]) -> Ranking:
        # float32 as the embedded backend's scores (FAISS, bm25s), so its exact ties stay ties;
        # equal scores in row order (local mode puts the highest id first).
        found = [(int(p.id), float(np.float32(p.score))) for p in points]
        return sorted(found, key=lambda x: (-x[1], x[0]))

    def candidates(
        self, query: Vectors, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> tuple[Ranking, Ranking]:
        from qdrant_client import models

        n = self._depth(n, document_ids)
        if n <= 0:
            return [], []
        flt = self._filter(document_ids)
        sparse = self._sparse(terms)
        requests = [
            models.QueryRequest(
                query=np.asarray(query, dtype=np.float32).astype(float).tolist(),
                using=DENSE,
                limit=n,
                filter=flt,
                with_payload=False,
            )
        ]
        if sparse is not None:
            requests.append(
                models.QueryRequest(
                    query=sparse, using=SPARSE, limit=n, filter=flt, with_payload=False
                )
            )
        with translated(self.at, self.collection):
            answers = self.client.query_batch_points(self.collection, requests=requests)
        dense = self._ranking(answers[0].points)
        lexical = self._ranking(answers[1].points) if sparse is not None else []
        return dense, [(r, s) for r, s in lexical if s > 0]

    def dense(self, query: Vectors, n: int, document_ids: Collection[str] | None) -> Ranking:
        return self.candidates(query, (), n, document_ids)[0]

    def lexical(
        self, terms: Sequence[str], n: int, document_ids: Collection[str] | None
    ) -> Ranking:
        n = self._depth(n, document_ids)
        sparse = self._sparse(terms)
        if n <= 0 or sparse is None:
            return []
        with translated(self.at, self.collection):
            answer = self.client.query_points(
                self.collection,
                query=sparse,
                using=SPARSE,
                limit=n,
                query_filter=self._filter(document_ids),
                with_payload=False,
            )
        return [(r, s) for r, s in self._ranking(answer.points) if s > 0]

    # -- what the ranker reads about candidates

    def chunk_vectors(self, rows: Rows) -> np.ndarray[Any, np.dtype[np.float32]]:
        dim = self._manifest.dimension
        if not len(rows):
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([r.vector for r in self._fetch(rows.tolist())])

    def best_sentence(self, rows: Rows, query: Vectors, fallback: Floats) -> Floats:
        best = fallback.copy()
        if not len(rows):
            return best
        q = np.asarray(query, dtype=np.float32)
        for i, record in enumerate(self._fetch(rows.tolist())):
            if len(record.sentences):
                best[i] = float(np.max(record.sentences @ q))
        return best

    def document_numbers(self, rows: Rows) -> Rows:
        if not len(rows):
            return np.zeros(0, dtype=np.int64)
        records = self._fetch(rows.tolist())
        return np.asarray([self._doc_number[r.chunk.document_id] for r in records], dtype=np.int64)

    def word_overlap(self, weights: Mapping[str, float], rows: Rows) -> tuple[Floats, Floats]:
        in_chunk = np.zeros(len(rows))
        in_document = np.zeros(len(rows))
        if not weights or not len(rows):
            return in_chunk, in_document
        records = self._fetch(rows.tolist())
        numbers = [self._doc_number[r.chunk.document_id] for r in records]
        term_sets = self._document_terms(set(numbers))
        for i, (record, number) in enumerate(zip(records, numbers, strict=True)):
            held = term_sets[number]
            in_chunk[i] = sum(w for t, w in weights.items() if t in record.terms)
            in_document[i] = sum(w for t, w in weights.items() if t in held)
        return in_chunk, in_document

    # -- following the alias

    def refresh(self) -> QdrantIndex:
        alias = self.settings.qdrant_collection
        with translated(self.at, self.collection):
            current = resolve(self.client, alias)
            if current == self.collection:
                if not self.client.collection_exists(self.collection):
                    raise BackendUnavailable(
                        f"collection '{self.collection}' is missing in Qdrant at {self.at}; "
                        "publish a build with `python -m service ingest`"
                    )
                return self
        if current is None:
            raise BackendUnavailable(
                f"collection '{self.collection}' (alias '{alias}') is gone from Qdrant at "
                f"{self.at}; publish a build with `python -m service ingest`"
            )
        return QdrantIndex(self.client, self.settings, current)


def mismatch(manifest: Manifest, settings: Settings, model: str, dimension: int) -> str | None:
    """How a published build differs from what the settings would build (None: it fits)."""
    chunking = ChunkingSettings.from_settings(settings)
    if (manifest.model, manifest.dimension, manifest.chunking) == (model, dimension, chunking):
        return None

    def describe(m: str, d: int, c: ChunkingSettings) -> str:
        return (
            f"model '{m}', dimension {d}, chunking max_tokens={c.max_tokens} "
            f"overlap_sentences={c.overlap_sentences} embed_context={c.embed_context}"
        )

    return (
        f"the published build has {describe(manifest.model, manifest.dimension, manifest.chunking)}"
        f"; the settings give {describe(model, dimension, chunking)}"
    )
