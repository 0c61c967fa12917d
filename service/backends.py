"""Open and rebuild the configured storage backend (``QA_BACKEND``).

``embedded``: :func:`service.ingest.ensure_index` / :func:`service.ingest.rebuild_index` as
they are. ``qdrant``: the same local build (``QA_INDEX_DIR`` stays its working copy and
embedding cache, so unchanged text is not re-embedded), published to Qdrant
(:func:`service.qdrant_index.publish`) and served from there (:class:`QdrantIndex`).

At start-up with ``qdrant``: a missing alias is built and published from the corpus; a
published build with another model, dimension or chunking is refused (one message naming
both); one whose corpus hash differs from the corpus folder is rebuilt and published; with no
corpus folder (an API replica) the build the alias names is served as it is. A build
published by an older version in another layout is rebuilt and republished (with a corpus)
or refused with a message saying so (without one).
"""

from __future__ import annotations

from service.chunk_index import ChunkIndex
from service.config import Settings
from service.embedding import Embedder
from service.index_store import (
    BuildReport,
    IndexData,
    IndexMismatchError,
    IndexMissingError,
    IndexStoreError,
    ProgressFn,
    corpus_hash,
)
from service.ingest import EnsureResult, ReindexError, ensure_index, read_corpus, rebuild_index


def open_index(
    settings: Settings,
    embedder: Embedder,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    serve_stale: bool = False,
) -> EnsureResult:
    """The index to serve, (re)built and published first where needed (see the module)."""
    if settings.backend == "embedded":
        return ensure_index(
            settings, embedder, force=force, progress=progress, serve_stale=serve_stale
        )
    from service.qdrant_index import (
        OutdatedCollection,
        QdrantIndex,
        mismatch,
        open_client,
        publish,
        resolve,
        translated,
    )
    from service.qdrant_index import where as qdrant_where

    client = open_client(settings)
    alias, at = settings.qdrant_collection, qdrant_where(settings)
    has_corpus = settings.corpus_dir.is_dir()
    with translated(at, alias):
        current = resolve(client, alias)
    reason: str | None = "rebuild requested" if force else None
    served: QdrantIndex | None = None
    if current is not None:
        try:
            served = QdrantIndex(client, settings, current)
        except OutdatedCollection:
            if not has_corpus:
                raise
            # A new local build (its vectors copied, not re-embedded) gets a new collection;
            # the old one serves until the alias switches.
            force = True
            reason = f"collection '{current}' was published by an older version"
    if served is not None:
        problem = mismatch(served.manifest, settings, embedder.name, embedder.dimension)
        if problem and not force:
            raise IndexMismatchError(
                f"Qdrant collection '{current}' at {at} does not fit: {problem}; set QA_MODEL "
                "and QA_CHUNK_* to match, or rebuild with `python -m service ingest --force`"
            )
        if not force:
            if not has_corpus:
                return EnsureResult(served, None, None)
            loaded = read_corpus(settings)
            if corpus_hash(loaded.documents) == served.manifest.corpus_hash:
                return EnsureResult(served, None, None)
            reason = "collection is stale: corpus changed"
    elif current is None:
        if not has_corpus:
            raise IndexMissingError(
                f"no collection behind alias '{alias}' in Qdrant at {at} and no corpus folder "
                f"{settings.corpus_dir}/ to build it from; set QA_CORPUS_DIR or publish with "
                "`python -m service ingest`"
            )
        reason = reason or f"no collection behind alias '{alias}' in Qdrant"
    local = ensure_index(settings, embedder, force=force, progress=progress)
    assert isinstance(local.data, IndexData)  # ensure_index loads the local build
    name = publish(client, settings, local.data, progress)
    index = QdrantIndex(client, settings, name)
    return EnsureResult(index, local.build, reason)


def rebuild(
    settings: Settings, embedder: Embedder, *, progress: ProgressFn | None = None
) -> tuple[BuildReport, ChunkIndex]:
    """A new build from the corpus, published where the backend serves from, and opened.

    Raises :class:`ReindexError` (the index in service is unchanged)."""
    report, data = rebuild_index(settings, embedder, progress=progress)
    if settings.backend == "embedded":
        from service.chunk_index import EmbeddedIndex

        return report, EmbeddedIndex(data)
    from service.qdrant_index import QdrantIndex, open_client, publish

    try:
        client = open_client(settings)
        name = publish(client, settings, data, progress)
        return report, QdrantIndex(client, settings, name)
    except IndexStoreError as exc:
        raise ReindexError(str(exc), report.problems) from None
