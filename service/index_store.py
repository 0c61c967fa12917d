"""The index on disk: its layout, manifest, atomic writing and swapping, loading and checking.

Building one (chunking, embedding, the vector and BM25 indexes) is :mod:`service.ingest`;
this module only stores and reads what it builds.

Layout of ``index/``::

    CURRENT                 name of the build being served (replaced atomically)
    build-<time>-<id>/      one complete build
        manifest.json       what built it: model, dimension, chunking, corpus hash, files
        documents.jsonl     document records (citation metadata), one a line
        documents.text      their texts, one after another (UTF-8)
        documents.offsets.npy   byte offsets of the texts
        chunks.jsonl        chunk records with offsets and sentence spans, one a line
        chunks.offsets.npy  their byte offsets
        chunk_documents.npy each chunk's document number (int32, its line in documents.jsonl)
        vectors.faiss       chunk embeddings (exact inner product, or HNSW when large)
        sentences.npy       sentence embeddings (float16), for composing answers without
                            re-encoding; sentence_offsets.npy: chunk i -> rows [o[i], o[i+1])
        bm25/               BM25 (bm25s) over the same chunks

A loaded build reads a chunk record, a document's text or a chunk's sentence vectors from the
files when they are asked for (:mod:`service.records`) and memory-maps BM25's matrix, so the
process holds the FAISS index, the documents' metadata and a few arrays of one number per
chunk, not the corpus (see the README, "Performance").

A build is written into a temporary folder and only then named in ``CURRENT``, so a crash or
Ctrl-C mid-build leaves the previous index in service.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from service import __version__
from service.checksums import sha256_file
from service.chunking import Chunk
from service.config import Settings
from service.documents import Document, LoadProblem
from service.embedding import Embedder, Vectors
from service.records import (
    ChunkRecords,
    DocumentRecords,
    Float16Rows,
    document_line,
    document_text,
    save_float16,
    write_lines,
)

#: 2: records memory-mapped with byte offsets, float16 sentence vectors, chunk document numbers.
FORMAT_VERSION = 2
POINTER = "CURRENT"
MANIFEST = "manifest.json"
DOCUMENTS = "documents.jsonl"
CHUNKS = "chunks.jsonl"
DOCUMENT_TEXTS = "documents.text"
DOCUMENT_OFFSETS = "documents.offsets.npy"
CHUNK_OFFSETS = "chunks.offsets.npy"
CHUNK_DOCUMENTS = "chunk_documents.npy"
SENTENCE_OFFSETS = "sentence_offsets.npy"
VECTORS = "vectors.faiss"
SENTENCES = "sentences.npy"
BM25_DIR = "bm25"
VERIFY_CHECKSUM_BELOW = 256 * 1024 * 1024

ProgressFn = Callable[[str, int, int], None]


class IndexStoreError(RuntimeError):
    """Base for index problems; messages are one line and say how to fix it."""


class IndexMissingError(IndexStoreError):
    pass


class IndexCorruptError(IndexStoreError):
    pass


class IndexMismatchError(IndexStoreError):
    pass


class CorpusEmptyError(IndexStoreError):
    pass


class IndexWriteError(IndexStoreError):
    """The index folder cannot be written (permissions, full disk)."""


@dataclass(frozen=True)
class ChunkingSettings:
    max_tokens: int
    overlap_sentences: int
    embed_context: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> ChunkingSettings:
        return cls(
            settings.chunk_max_tokens, settings.chunk_overlap_sentences, settings.embed_context
        )


@dataclass(frozen=True)
class Manifest:
    format_version: int
    package_version: str
    model: str
    dimension: int
    chunking: ChunkingSettings
    corpus_hash: str
    documents: int
    chunks: int
    sentences: int
    index_type: str
    built_at: str
    build_seconds: float
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Raises ValueError, TypeError or KeyError when ``data`` is not a valid manifest."""
        if not isinstance(data, dict):
            raise TypeError("manifest is not a JSON object")
        data = dict(data)
        data["chunking"] = ChunkingSettings(**data["chunking"])
        manifest = cls(**data)
        for name in ("format_version", "dimension", "documents", "chunks", "sentences"):
            value = getattr(manifest, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"'{name}' must be a non-negative integer")
        files = manifest.files
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise ValueError("'files' must map file names to their size and checksum")
        return manifest


@dataclass
class IndexData:
    """Everything retrieval and answering need: a build, memory-mapped where it is large.

    ``documents`` and ``chunks`` decode a record on access (a ``Mapping`` and a ``Sequence``);
    ``sentence_vectors`` is float16, memory-mapped (cast rows to float32 to use them, as
    :meth:`chunk_sentence_vectors` does); ``chunk_documents[i]`` is chunk i's document number,
    its position in ``documents``.
    """

    path: Path
    manifest: Manifest
    documents: DocumentRecords
    chunks: ChunkRecords
    chunk_documents: np.ndarray[Any, np.dtype[np.int32]]
    vectors: Any  # faiss.Index
    sentence_vectors: np.ndarray[Any, np.dtype[np.float16]]  # memory-mapped, for bulk reads
    sentence_rows: Float16Rows  # the same, read a few rows at a time (answering)
    sentence_offsets: np.ndarray[Any, np.dtype[np.int64]]  # chunk i -> rows [o[i], o[i+1])
    bm25: Any  # bm25s.BM25 (its matrix memory-mapped)

    @cached_property
    def chunk_counts(self) -> dict[str, int]:
        """Chunks per document id."""
        counts = np.bincount(self.chunk_documents, minlength=len(self.documents))
        return {self.documents.id_of(n): int(c) for n, c in enumerate(counts) if c}

    def chunk_sentence_vectors(self, chunk_index: int) -> Vectors:
        lo, hi = (
            int(self.sentence_offsets[chunk_index]),
            int(self.sentence_offsets[chunk_index + 1]),
        )
        return self.sentence_rows.rows(lo, hi)


@dataclass
class BuildReport:
    manifest: Manifest
    path: Path
    problems: list[LoadProblem]
    embedded: int  # distinct texts sent to the embedder
    reused: int  # distinct texts whose vectors were copied from the previous build
    seconds: float
    rebuilt: bool = True


# ---------------------------------------------------------------------------------------------
# Hashes and staleness


def corpus_hash(documents: Iterable[Document]) -> str:
    digest = hashlib.sha256()
    for doc in sorted(documents, key=lambda d: d.id):
        digest.update(f"{doc.id}\x1f{doc.content_hash}\x1e".encode())
    return digest.hexdigest()


def text_key(model: str, text: str) -> str:
    """Which cached vector a text's embedding is: model and text."""
    return hashlib.sha256(f"{model}\x1f{text}".encode()).hexdigest()


def stale_reasons(
    manifest: Manifest, settings: Settings, embedder: Embedder, corpus: str
) -> list[str]:
    """Why an index no longer matches the corpus and settings (empty list: up to date)."""
    reasons = []
    if manifest.format_version != FORMAT_VERSION:
        reasons.append(f"index format {manifest.format_version} (expected {FORMAT_VERSION})")
    if manifest.model != embedder.name:
        reasons.append(f"model changed ({manifest.model} -> {embedder.name})")
    if manifest.chunking != ChunkingSettings.from_settings(settings):
        reasons.append("chunking settings changed")
    if manifest.corpus_hash != corpus:
        reasons.append("corpus changed")
    return reasons


# ---------------------------------------------------------------------------------------------
# Building


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def prepare_folder(index_dir: Path) -> None:
    """Make sure a build can be written to ``index_dir`` and remove earlier builds' leftovers.

    Raises :class:`IndexWriteError` naming the folder when it cannot be written.
    """
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        probe = index_dir / f".write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise IndexWriteError(
            f"cannot write to {index_dir}/ ({exc.strerror or exc}); "
            "fix its permissions or set QA_INDEX_DIR to a writable folder"
        ) from None
    _remove_leftovers(index_dir)


LOCK = ".build.lock"


@contextlib.contextmanager
def build_lock(index_dir: Path, progress: ProgressFn | None = None) -> Iterator[None]:
    """Hold the index folder's build lock: one process at a time checks and builds an index
    there (two CLI runs, or a server and ``ingest``, started on a missing index). The others
    wait, then find the index the first one built. A folder that cannot be written (a
    read-only deployment) is used without the lock: nothing can be built there anyway."""
    import fcntl

    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        handle = (index_dir / LOCK).open("a")
    except OSError:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stage = f"waiting for another process building the index in {index_dir}/"
            if progress is not None:
                progress(stage, 0, 1)
            fcntl.flock(handle, fcntl.LOCK_EX)
            if progress is not None:
                progress(stage, 1, 1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class NewBuild:
    """What a build holds, ready to write (see :func:`write_build`)."""

    documents: Sequence[Document]
    chunks: Sequence[Chunk]
    vectors: Any  # faiss.Index over the chunk embeddings
    index_type: str
    sentence_vectors: Vectors
    sentence_offsets: np.ndarray[Any, np.dtype[np.int64]]
    bm25: Any  # bm25s.BM25 over the same chunks
    model: str
    dimension: int
    chunking: ChunkingSettings


def write_build(index_dir: Path, build: NewBuild, started: float) -> tuple[Manifest, Path]:
    """Write ``build`` into a temporary folder, name it in ``CURRENT`` atomically, and drop all
    but it and the build it replaces. A failure leaves the previous build in service."""
    import faiss

    documents, chunks = build.documents, build.chunks
    tmp = index_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        numbers = {d.id: n for n, d in enumerate(documents)}
        write_lines(tmp / DOCUMENTS, map(document_line, documents))
        np.save(
            tmp / DOCUMENT_OFFSETS, write_lines(tmp / DOCUMENT_TEXTS, map(document_text, documents))
        )
        chunk_documents = np.zeros(len(chunks), dtype=np.int32)

        def chunk_lines() -> Iterator[str]:
            for i, chunk in enumerate(chunks):
                chunk_documents[i] = numbers[chunk.document_id]
                yield chunk.to_json() + "\n"

        np.save(tmp / CHUNK_OFFSETS, write_lines(tmp / CHUNKS, chunk_lines()))
        np.save(tmp / CHUNK_DOCUMENTS, chunk_documents)
        faiss.write_index(build.vectors, str(tmp / VECTORS))
        save_float16(tmp / SENTENCES, build.sentence_vectors)
        np.save(tmp / SENTENCE_OFFSETS, build.sentence_offsets)
        build.bm25.save(str(tmp / BM25_DIR), show_progress=False)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[path.relative_to(tmp).as_posix()] = {
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        elapsed = time.perf_counter() - started
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            package_version=__version__,
            model=build.model,
            dimension=build.dimension,
            chunking=build.chunking,
            corpus_hash=corpus_hash(documents),
            documents=len(documents),
            chunks=len(chunks),
            sentences=len(build.sentence_vectors),
            index_type=build.index_type,
            built_at=datetime.now(UTC).isoformat(timespec="seconds"),
            build_seconds=round(elapsed, 3),
            files=files,
        )
        _write_text(tmp / MANIFEST, manifest.to_json())
        _fsync_dir(tmp)
        name = f"build-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        final = index_dir / name
        previous = _current_name(index_dir)
        os.replace(tmp, final)
        _set_current(index_dir, name)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.strerror or str(exc)
        raise IndexWriteError(
            f"cannot write the index to {index_dir}/ ({reason}); the previous index is "
            "unchanged. Free disk space or set QA_INDEX_DIR to a writable folder"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_old_builds(index_dir, keep={name, previous} - {None})
    return manifest, final


def _set_current(index_dir: Path, name: str) -> None:
    tmp = index_dir / f".{POINTER}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _write_text(tmp, name + "\n")
    os.replace(tmp, index_dir / POINTER)
    _fsync_dir(index_dir)


def _remove_leftovers(index_dir: Path) -> None:
    """Temporary files of builds that never finished (crash, kill, Ctrl-C); those of a build
    another live process is running are left alone."""
    for path in index_dir.glob(".tmp-*"):
        pid = path.name.split("-")[1] if path.name.count("-") >= 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another process is building right now
        shutil.rmtree(path, ignore_errors=True)
    for path in index_dir.glob(f".{POINTER}.*"):
        pid = path.name.removeprefix(f".{POINTER}.").split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another process is switching the pointer right now
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _current_name(index_dir: Path) -> str | None:
    try:
        return (index_dir / POINTER).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _remove_old_builds(index_dir: Path, keep: Collection[str | None]) -> None:
    """Keep the new build and the one served before it (a reader may still be using it)."""
    for old in index_dir.glob("build-*"):
        if old.is_dir() and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Loading


def current_build(index_dir: Path) -> Path:
    pointer = index_dir / POINTER
    if not pointer.exists():
        raise IndexMissingError(
            f"no index in {index_dir}/; build it with `python -m service ingest`"
        )
    name = pointer.read_text(encoding="utf-8").strip()
    path = index_dir / name
    if not name or "/" in name or not path.is_dir():
        raise IndexCorruptError(
            f"{pointer} names a missing build '{name}'; rebuild with `python -m service ingest`"
        )
    return path


def read_manifest(index_dir: Path) -> Manifest:
    path = current_build(index_dir) / MANIFEST
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise IndexCorruptError(
            f"{path} is missing; rebuild with `python -m service ingest`"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise IndexCorruptError(
            f"{path} is not a valid manifest ({type(exc).__name__}: {exc}); "
            "rebuild with `python -m service ingest`"
        ) from None


def load_index(index_dir: Path, *, verify: bool = True) -> IndexData:
    """Load the current build, refusing anything truncated, corrupt or inconsistent."""
    import bm25s
    import faiss

    build = current_build(index_dir)
    manifest = read_manifest(index_dir)
    fix = "rebuild with `python -m service ingest`"
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{build / MANIFEST} has index format {manifest.format_version}, this version reads "
            f"{FORMAT_VERSION}; {fix}"
        )
    for name, info in manifest.files.items():
        path = build / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing; {fix}")
        size = path.stat().st_size
        if size != info.get("bytes"):
            raise IndexCorruptError(
                f"{path} has {size} bytes, the manifest says {info.get('bytes')} "
                f"(truncated or modified); {fix}"
            )
        if verify and size < VERIFY_CHECKSUM_BELOW and sha256_file(path) != info.get("sha256"):
            raise IndexCorruptError(f"{path} does not match its checksum (corrupt); {fix}")
    try:
        documents = DocumentRecords(
            build / DOCUMENTS,
            build / DOCUMENT_TEXTS,
            _load_array(build / DOCUMENT_OFFSETS, np.int64),
        )
        chunks = ChunkRecords(build / CHUNKS, _load_array(build / CHUNK_OFFSETS, np.int64))
        chunk_documents = _load_array(build / CHUNK_DOCUMENTS, np.int32)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise IndexCorruptError(f"{build} has unreadable records ({exc}); {fix}") from None
    try:
        vectors = faiss.read_index(str(build / VECTORS))
    except RuntimeError:
        raise IndexCorruptError(f"{build / VECTORS} cannot be read by FAISS; {fix}") from None
    try:
        sentence_vectors = np.load(build / SENTENCES, mmap_mode="r", allow_pickle=False)
        sentence_rows = (
            Float16Rows(build / SENTENCES) if sentence_vectors.dtype == np.float16 else None
        )
        offsets = _load_array(build / SENTENCE_OFFSETS, np.int64)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"{build / SENTENCES} cannot be read ({exc}); {fix}") from None
    try:
        bm25 = bm25s.BM25.load(str(build / BM25_DIR), mmap=True, show_progress=False)
    except Exception as exc:  # bm25s raises a variety of errors on damaged files
        raise IndexCorruptError(f"{build / BM25_DIR} cannot be read ({exc}); {fix}") from None

    problems = []
    if vectors.d != manifest.dimension:
        problems.append(f"{VECTORS} has dimension {vectors.d}, manifest {manifest.dimension}")
    if vectors.ntotal != len(chunks) or len(chunks) != manifest.chunks:
        problems.append(
            f"{VECTORS} holds {vectors.ntotal} vectors, {CHUNKS} {len(chunks)} chunks, "
            f"manifest {manifest.chunks}"
        )
    if len(documents) != manifest.documents:
        problems.append(
            f"{DOCUMENTS} holds {len(documents)} documents, manifest {manifest.documents}"
        )
    if sentence_vectors.dtype != np.float16:
        problems.append(f"{SENTENCES} holds {sentence_vectors.dtype}, not float16")
    if sentence_vectors.ndim != 2 or sentence_vectors.shape[0] != manifest.sentences:
        problems.append(
            f"{SENTENCES} has shape {sentence_vectors.shape}, manifest {manifest.sentences} rows"
        )
    elif sentence_vectors.shape[1] != manifest.dimension:
        problems.append(f"{SENTENCES} has dimension {sentence_vectors.shape[1]}")
    if len(offsets) != len(chunks) + 1 or (len(offsets) and int(offsets[-1]) != manifest.sentences):
        problems.append("sentence offsets do not match the chunks")
    if len(chunk_documents) != len(chunks) or (
        len(chunk_documents)
        and (int(chunk_documents.min()) < 0 or int(chunk_documents.max()) >= len(documents))
    ):
        problems.append(f"{CHUNK_DOCUMENTS} names documents missing from {DOCUMENTS}")
    if problems or sentence_rows is None:
        raise IndexCorruptError(f"{build}: {'; '.join(problems)}; {fix}")
    if isinstance(vectors, faiss.IndexHNSW):
        vectors.hnsw.efSearch = max(vectors.hnsw.efSearch, 16)
    return IndexData(
        path=build,
        manifest=manifest,
        documents=documents,
        chunks=chunks,
        chunk_documents=chunk_documents,
        vectors=vectors,
        sentence_vectors=sentence_vectors,
        sentence_rows=sentence_rows,
        sentence_offsets=offsets,
        bm25=bm25,
    )


def _load_array(path: Path, dtype: type[np.generic]) -> Any:
    """A 1-D array of ``dtype``, memory-mapped; ValueError when the file holds another."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim != 1 or array.dtype != dtype:
        raise ValueError(f"{path.name} holds {array.dtype} {array.shape}, expected 1-D {dtype}")
    return array
