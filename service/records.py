"""Chunk and document records on disk, read one at a time.

A build's ``chunks.jsonl`` and ``documents.jsonl`` hold one JSON record a line; beside each is
an ``.offsets.npy`` array of the lines' byte offsets (n + 1 of them). A loaded build maps the
JSONL file and the offsets into memory and decodes a record only when it is asked for (with a
small cache), so a million chunks cost the process the pages it reads, not a million Python
objects. :class:`ChunkRecords` is a ``Sequence[Chunk]`` and :class:`DocumentRecords` a
``Mapping[str, Document]``: code that indexed, iterated or measured the lists and dicts they
replace works unchanged.

The sentence vectors are stored as float16 (:func:`save_float16`) and memory-mapped in the same
way; readers cast the few rows they need to float32.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np

from service.chunking import Chunk
from service.documents import Document

Offsets = np.ndarray[Any, np.dtype[np.int64]]
#: Records decoded and kept per store (the passages of a few recent answers).
CACHE_SIZE = 4096
_BLOCK_ROWS = 65536


def write_lines(path: Path, lines: Iterable[str]) -> Offsets:
    """Write ``lines`` (each ending in a newline) to ``path``, fsynced; their byte offsets."""
    offsets = [0]
    with path.open("wb") as fh:
        for line in lines:
            data = line.encode("utf-8")
            fh.write(data)
            offsets.append(offsets[-1] + len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return np.asarray(offsets, dtype=np.int64)


def document_line(doc: Document) -> str:
    record = asdict(doc)
    record["authors"] = list(doc.authors)
    record["pages"] = list(doc.pages)
    return json.dumps(record, ensure_ascii=False) + "\n"


def document_from_json(line: bytes | str) -> Document:
    record = json.loads(line)
    record["authors"] = tuple(record.get("authors") or ())
    record["pages"] = tuple(record.get("pages") or ())
    return Document(**record)


def save_float16(path: Path, vectors: Any) -> None:
    """Save a 2-D array (float32, float16 or a memory map of either) as a float16 ``.npy``,
    copying a block of rows at a time so that a large one never sits in memory whole."""
    rows, dim = int(vectors.shape[0]), int(vectors.shape[1])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for lo in range(0, rows, _BLOCK_ROWS):
        hi = min(rows, lo + _BLOCK_ROWS)
        out[lo:hi] = np.asarray(vectors[lo:hi], dtype=np.float32)
    out.flush()
    del out
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


class _Lines:
    """A JSONL file memory-mapped, with its line offsets."""

    def __init__(self, path: Path, offsets: Offsets) -> None:
        self.path = path
        self.offsets = offsets
        size = path.stat().st_size
        if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != size:
            raise ValueError(f"{path.name}: its offsets do not match its {size} bytes")
        if size == 0:
            self._buffer: mmap.mmap | bytes = b""
        else:
            with path.open("rb") as fh:
                self._buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def line(self, i: int) -> bytes:
        return self._buffer[int(self.offsets[i]) : int(self.offsets[i + 1])]


class ChunkRecords(Sequence[Chunk]):
    """A build's chunks, decoded from ``chunks.jsonl`` on access (see the module doc)."""

    def __init__(self, path: Path, offsets: Offsets, cache_size: int = CACHE_SIZE) -> None:
        self._lines = _Lines(path, offsets)
        self._decode = lru_cache(maxsize=cache_size)(self._read)

    def _read(self, i: int) -> Chunk:
        return Chunk.from_json(self._lines.line(i).decode("utf-8"))

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, i: int) -> Chunk: ...

    @overload
    def __getitem__(self, i: slice) -> list[Chunk]: ...

    def __getitem__(self, i: int | slice) -> Chunk | list[Chunk]:
        n = len(self)
        if isinstance(i, slice):
            return [self._decode(j) for j in range(*i.indices(n))]
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"chunk row {i} out of range (0..{n - 1})")
        return self._decode(i)

    def __iter__(self) -> Iterator[Chunk]:
        # A full pass (evaluation, re-index) decodes each record once, past the cache.
        for i in range(len(self)):
            yield self._read(i)


class DocumentRecords(Mapping[str, Document]):
    """A build's documents by id, decoded from ``documents.jsonl`` on access; ``number(id)`` is
    the document's position in the file (the per-chunk document numbers refer to it)."""

    def __init__(
        self, path: Path, offsets: Offsets, ids: Sequence[str], cache_size: int = 256
    ) -> None:
        self._lines = _Lines(path, offsets)
        if len(ids) != len(self._lines):
            raise ValueError(f"{path.name}: {len(ids)} ids for {len(self._lines)} records")
        self._ids = list(ids)
        self._numbers = {doc_id: n for n, doc_id in enumerate(self._ids)}
        if len(self._numbers) != len(self._ids):
            raise ValueError(f"{path.name}: duplicate document ids")
        self._decode = lru_cache(maxsize=cache_size)(self._read)

    def _read(self, n: int) -> Document:
        doc = document_from_json(self._lines.line(n))
        if doc.id != self._ids[n]:
            raise ValueError(f"record {n} is '{doc.id}', the id list says '{self._ids[n]}'")
        return doc

    def number(self, document_id: str) -> int | None:
        return self._numbers.get(document_id)

    def id_of(self, number: int) -> str:
        return self._ids[number]

    def __getitem__(self, document_id: str) -> Document:
        n = self._numbers.get(document_id)
        if n is None:
            raise KeyError(document_id)
        return self._decode(n)

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
