"""Chunk and document records on disk, read one at a time.

A build's ``chunks.jsonl`` holds one JSON record a line, and ``chunks.offsets.npy`` the lines'
byte offsets (n + 1 of them, memory-mapped). A loaded build reads and decodes a chunk only
when it is asked for (with a small cache), so a million chunks cost the process eight bytes
each, not a million Python objects. Documents are fewer (ten chunks or more each) and every
not-covered answer lists their titles, so their metadata (``documents.jsonl``, no text) is
held, and each text stays in ``documents.text`` (``documents.offsets.npy``: byte offsets)
until it is read. :class:`ChunkRecords` is a ``Sequence[Chunk]`` and :class:`DocumentRecords`
a ``Mapping[str, Document]``: code that indexed, iterated or measured the lists and dicts they
replace works unchanged.

The sentence vectors are stored as float16 (:func:`save_float16`); :class:`Float16Rows` reads
the few rows an answer needs and casts them to float32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, Sequence, ValuesView
from dataclasses import asdict
from dataclasses import fields as dataclass_fields
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


def document_metadata(doc: Document) -> dict[str, Any]:
    """A document's fields but its text, as JSON values (its text is stored apart)."""
    record = asdict(doc)
    del record["text"]
    record["authors"] = list(doc.authors)
    record["pages"] = list(doc.pages)
    return record


def document_line(doc: Document) -> str:
    """A document's metadata as one JSON line."""
    return json.dumps(document_metadata(doc), ensure_ascii=False) + "\n"


def document_text(doc: Document) -> str:
    return doc.text


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
    """A JSONL (or text) file read a record at a time with ``pread``, by its byte offsets.

    Not a memory map: the pages a map touches count in the process's resident memory (and the
    kernel's read-ahead maps far more than a record around each one); a read goes through the
    page cache, which the kernel shares and reclaims, and leaves the process as it was.
    ``pread`` takes no file position, so concurrent requests can read one file.
    """

    def __init__(self, path: Path, offsets: Offsets) -> None:
        self.path = path
        self.offsets = offsets
        self._file = path.open("rb")
        size = os.fstat(self._file.fileno()).st_size
        if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != size:
            self._file.close()
            raise ValueError(f"{path.name}: its offsets do not match its {size} bytes")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def line(self, i: int) -> bytes:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return os.pread(self._file.fileno(), hi - lo, lo)


class Float16Rows:
    """The rows of a 2-D float16 ``.npy`` read with ``pread`` (see :class:`_Lines` for why),
    as float32."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(fh)
            self._start = fh.tell()
        if fortran or dtype != np.float16 or len(shape) != 2:
            raise ValueError(f"{path.name} is not a 2-D C-order float16 array")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self._row_bytes = self.shape[1] * 2
        self._file = path.open("rb")

    def rows(self, lo: int, hi: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Rows ``[lo, hi)``, as float32."""
        data = os.pread(
            self._file.fileno(), (hi - lo) * self._row_bytes, self._start + lo * self._row_bytes
        )
        return (
            np.frombuffer(data, dtype=np.float16).reshape(hi - lo, self.shape[1]).astype(np.float32)
        )

    def spans(self, lo: Offsets, hi: Offsets) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The rows of every span ``[lo[i], hi[i])``, one after another, as float32."""
        fd, start, size = self._file.fileno(), self._start, self._row_bytes
        data = b"".join(
            os.pread(fd, (int(b) - int(a)) * size, start + int(a) * size)
            for a, b in zip(lo, hi, strict=True)
        )
        return np.frombuffer(data, dtype=np.float16).reshape(-1, self.shape[1]).astype(np.float32)


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


class StoredDocument(Document):
    """A :class:`Document` whose text is read when asked for (``read_text(number)``: from the
    build's text file, or from the store that holds it); equal to (and hashed as) the
    :class:`Document` with the same fields."""

    def __init__(
        self, fields: dict[str, Any], read_text: Callable[[int], str], number: int
    ) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_read_text", read_text)
        object.__setattr__(self, "_number", number)

    @property
    def text(self) -> str:
        read: Callable[[int], str] = self.__dict__["_read_text"]
        return read(self.__dict__["_number"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _DOCUMENT_FIELDS)

    __hash__ = Document.__hash__


_DOCUMENT_FIELDS = tuple(f.name for f in dataclass_fields(Document))


def stored_document(
    record: Mapping[str, Any], read_text: Callable[[int], str], number: int
) -> StoredDocument:
    """A :class:`StoredDocument` from a metadata record (:func:`document_line`'s fields);
    ValueError when the record is not one."""
    values = dict(record)
    values["authors"] = tuple(values.get("authors") or ())
    values["pages"] = tuple(values.get("pages") or ())
    if set(values) - set(_DOCUMENT_FIELDS) or "id" not in values or "title" not in values:
        raise ValueError("not a document record")
    fields = {f.name: f.default for f in dataclass_fields(Document) if f.name != "text"}
    fields.update(values)
    fields.pop("text", None)
    return StoredDocument(fields, read_text, number)


class DocumentRecords(Mapping[str, Document]):
    """A build's documents by id, in the build's order: metadata from ``documents.jsonl``, each
    text read from ``documents.text`` on access. ``number(id)`` is the document's position
    (the per-chunk document numbers refer to it)."""

    def __init__(self, metadata: Path, texts: Path, offsets: Offsets) -> None:
        self._texts = _Lines(texts, offsets)
        self._documents: dict[str, StoredDocument] = {}
        self._ids: list[str] = []
        with metadata.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                try:
                    doc = stored_document(json.loads(line), self._text, n)
                except ValueError:
                    raise ValueError(f"{metadata.name}: record {n} is not a document") from None
                if doc.id in self._documents:
                    raise ValueError(f"{metadata.name}: duplicate document id '{doc.id}'")
                self._documents[doc.id] = doc
                self._ids.append(doc.id)
        if len(self._ids) != len(self._texts):
            raise ValueError(
                f"{metadata.name} holds {len(self._ids)} documents, {texts.name} "
                f"{len(self._texts)} texts"
            )
        self._numbers = {doc_id: n for n, doc_id in enumerate(self._ids)}

    def _text(self, number: int) -> str:
        return self._texts.line(number).decode("utf-8")

    def number(self, document_id: str) -> int | None:
        return self._numbers.get(document_id)

    def id_of(self, number: int) -> str:
        return self._ids[number]

    def __getitem__(self, document_id: str) -> Document:
        return self._documents[document_id]

    # The dict's own views: a not-covered answer walks every document's title.
    def values(self) -> ValuesView[Document]:
        return self._documents.values()

    def items(self) -> ItemsView[str, Document]:
        return self._documents.items()

    def __contains__(self, document_id: object) -> bool:
        return document_id in self._numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
