"""The build's compact storage: float16 sentence vectors, chunk and document records read
lazily from memory-mapped files, and the format version that makes older builds rebuild."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from service.chunk_index import EmbeddedIndex
from service.chunking import Chunk
from service.config import Settings
from service.documents import load_corpus
from service.embedding import HashEmbedder
from service.index_store import (
    CHUNK_DOCUMENTS,
    CHUNKS,
    FORMAT_VERSION,
    MANIFEST,
    IndexCorruptError,
    current_build,
    load_index,
)
from service.ingest import chunk_corpus, ensure_index
from service.records import ChunkRecords, DocumentRecords, save_float16, write_lines

EMBEDDER = HashEmbedder()


def test_float16_round_trip_is_within_its_rounding(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((70_000, 8)).astype(np.float32)  # more than one copy block
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    save_float16(tmp_path / "v.npy", vectors)
    loaded = np.load(tmp_path / "v.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16
    assert loaded.shape == vectors.shape
    # float16 keeps 11 significant bits: relative error at most 2**-11 for these magnitudes.
    assert np.max(np.abs(loaded.astype(np.float32) - vectors)) <= 2**-11
    assert not np.array_equal(loaded.astype(np.float32), vectors)  # it is really float16


def test_lazy_chunks_equal_the_eager_records(template: Settings) -> None:
    data = load_index(template.index_dir)
    documents = load_corpus(template.corpus_dir).documents
    eager = chunk_corpus(documents, template, EMBEDDER)
    assert isinstance(data.chunks, ChunkRecords) and len(data.chunks) == len(eager)
    assert list(data.chunks) == eager
    assert [data.chunks[i] for i in range(len(eager))] == eager
    assert data.chunks[-1] == eager[-1] and data.chunks[2:5] == eager[2:5]
    with pytest.raises(IndexError):
        data.chunks[len(eager)]
    # The file still holds one JSON record a line, as before.
    lines = (data.path / CHUNKS).read_text(encoding="utf-8").splitlines()
    assert [Chunk.from_json(line) for line in lines] == eager


def test_lazy_documents_equal_the_corpus(template: Settings) -> None:
    data = load_index(template.index_dir)
    documents = load_corpus(template.corpus_dir).documents
    assert isinstance(data.documents, DocumentRecords)
    assert dict(data.documents) == {d.id: d for d in documents}
    assert list(data.documents) == [d.id for d in documents]  # the corpus's order
    first = documents[0]
    stored = data.documents[first.id]
    # Its text is read from documents.text when asked for; it equals and hashes as the corpus's.
    assert "text" not in stored.__dict__ and stored.text == first.text
    assert stored == first and first == stored and hash(stored) == hash(first)
    assert asdict(stored) == asdict(first)
    lines = (data.path / "documents.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(documents) and all('"text"' not in line for line in lines)
    assert first.id in data.documents and "no-such-id" not in data.documents
    assert data.documents.get("no-such-id") is None
    with pytest.raises(KeyError):
        data.documents["no-such-id"]
    # Per-chunk document numbers name each chunk's document.
    numbers = np.load(data.path / CHUNK_DOCUMENTS)
    assert numbers.dtype == np.int32
    assert [data.documents.id_of(int(n)) for n in numbers] == [c.document_id for c in data.chunks]


def test_the_large_arrays_are_memory_mapped(template: Settings) -> None:
    data = load_index(template.index_dir)
    assert isinstance(data.sentence_vectors, np.memmap)
    assert data.sentence_vectors.dtype == np.float16
    assert isinstance(data.chunk_documents, np.memmap)
    assert isinstance(data.bm25.scores["data"], np.memmap)
    rows = data.chunk_sentence_vectors(0)
    assert rows.dtype == np.float32 and not isinstance(rows, np.memmap)


def test_sentence_rows_read_as_the_memory_map_holds(template: Settings) -> None:
    data = load_index(template.index_dir)
    stored = np.asarray(data.sentence_vectors, dtype=np.float32)
    offsets = data.sentence_offsets
    assert np.array_equal(data.chunk_sentence_vectors(3), stored[offsets[3] : offsets[4]])
    chunks = np.asarray([5, 0, 2])
    expected = np.concatenate([stored[offsets[c] : offsets[c + 1]] for c in chunks])
    assert np.array_equal(data.sentence_rows.spans(offsets[chunks], offsets[chunks + 1]), expected)
    assert data.sentence_rows.shape == data.sentence_vectors.shape


def test_the_embedded_index_over_lazy_records_matches_an_eager_count(template: Settings) -> None:
    data = load_index(template.index_dir)
    index = EmbeddedIndex(data)
    chunks = list(data.chunks)
    expected: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        expected.setdefault(chunk.document_id, []).append(chunk)
    assert index.chunk_counts == {d: len(c) for d, c in expected.items()}
    for doc_id, doc_chunks in expected.items():
        assert index.chunks_of(doc_id) == doc_chunks
    assert index.chunks_of("no-such-id") == []
    rows = np.arange(len(chunks), dtype=np.int64)
    numbers = index.document_numbers(rows)
    assert numbers.dtype == np.int64
    same = [a.document_id == b.document_id for a in chunks for b in chunks]
    assert same == [bool(x == y) for x in numbers for y in numbers]
    one = next(iter(expected))
    query = EMBEDDER.embed([expected[one][0].text])[0]
    assert {data.chunks[r].document_id for r, _ in index.dense(query, 50, [one])} == {one}


def test_an_older_format_is_rebuilt(built: Settings) -> None:
    old = current_build(built.index_dir)
    path = old / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["format_version"] = FORMAT_VERSION - 1
    path.write_text(json.dumps(manifest), encoding="utf-8")
    ensured = ensure_index(built, EMBEDDER)
    assert ensured.build is not None and ensured.data.path != old
    assert ensured.reason is not None
    assert f"index format {FORMAT_VERSION - 1}" in ensured.reason
    assert ensured.data.manifest.format_version == FORMAT_VERSION == 2


def test_offsets_that_disagree_with_the_file_are_refused(built: Settings) -> None:
    build = current_build(built.index_dir)
    np.save(build / "chunks.offsets.npy", np.asarray([0, 5], dtype=np.int64))
    # The manifest agrees (so only the records' own check can catch it).
    manifest = json.loads((build / MANIFEST).read_text(encoding="utf-8"))
    manifest["files"]["chunks.offsets.npy"]["bytes"] = (build / "chunks.offsets.npy").stat().st_size
    (build / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="unreadable records"):
        load_index(built.index_dir, verify=False)


def test_write_lines_gives_byte_offsets_of_utf8(tmp_path: Path) -> None:
    offsets = write_lines(tmp_path / "x.jsonl", ["é\n", "ab\n"])
    assert offsets.tolist() == [0, 3, 6]  # "é" is two bytes
