"""Adding and removing corpus files safely: for uploads (``POST /api/admin/documents``) and
``python -m service add``.

An upload is checked before anything is written: its type by suffix, its size, that it reads
(it is loaded alone, in a scratch folder, exactly as the corpus loader will read it) and that
it is not already in the corpus (the same bytes, DOI or title). The name it is stored under is
made here from the client's name (reduced to letters, digits and dashes, with the suffix
checked) and never names an existing file: a client's name is never used as a path.

A change is applied, then undone if the re-index that follows fails, so the corpus folder
always matches the index in service. Files are written under a hidden temporary name (the
loader skips hidden files) and linked to their final name, which fails rather than replace a
file; removed files wait in a hidden folder until the new index is in service.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from service.config import Settings
from service.documents import Document
from service.documents.blocks import slug
from service.ingest import read_corpus

UPLOAD_SUFFIXES = (".pdf", ".md", ".markdown", ".txt", ".html", ".htm")
SIDECAR_SUFFIX = ".yml"

Refusal = Literal["unsupported", "too_large", "unreadable", "duplicate", "not_found", "shared"]


class CorpusChangeError(ValueError):
    """A file or removal that is refused; ``kind`` says why (the API maps it to a status)."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind: Refusal = kind


@dataclass(frozen=True)
class Upload:
    """A checked file, ready to store: its name in the corpus folder and the documents in it."""

    name: str
    data: bytes
    documents: tuple[Document, ...]
    sidecar: bytes | None = None


def stored_name(client_name: str, taken: Collection[str]) -> str:
    """A safe corpus file name for ``client_name``: its last path part, as a slug, with its
    (checked) suffix, made unique against ``taken`` (``paper.pdf``, ``paper-2.pdf``, ...)."""
    base = PurePosixPath(client_name.replace("\\", "/")).name
    suffix = PurePosixPath(base).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        allowed = ", ".join(UPLOAD_SUFFIXES)
        shown = suffix or "no suffix"
        raise CorpusChangeError("unsupported", f"unsupported file type ({shown}); use {allowed}")
    stem = slug(PurePosixPath(base).stem, 12)
    name, n = f"{stem}{suffix}", 2
    lowered = {t.lower() for t in taken}
    while name.lower() in lowered or f"{PurePosixPath(name).stem}{SIDECAR_SUFFIX}" in lowered:
        name, n = f"{stem}-{n}{suffix}", n + 1
    return name


def check_upload(
    settings: Settings,
    client_name: str,
    data: bytes,
    existing: Sequence[Document],
    sidecar: bytes | None = None,
) -> Upload:
    """Refuse (:class:`CorpusChangeError`) or accept one file for the corpus folder."""
    if len(data) > settings.max_file_bytes:
        raise CorpusChangeError(
            "too_large",
            f"the file is {len(data):,} bytes, over the limit of {settings.max_file_bytes:,} "
            "bytes (QA_MAX_FILE_BYTES)",
        )
    taken = [p.name for p in settings.corpus_dir.iterdir()] if settings.corpus_dir.is_dir() else []
    name = stored_name(client_name, taken)
    if sidecar is not None and not name.endswith(".pdf"):
        raise CorpusChangeError("unsupported", "a metadata file goes only with a PDF")
    documents = _read_alone(settings, name, data, sidecar)
    _refuse_duplicates(settings, data, documents, existing)
    return Upload(name, data, documents, sidecar)


def _read_alone(
    settings: Settings, name: str, data: bytes, sidecar: bytes | None
) -> tuple[Document, ...]:
    """The documents ``data`` gives when loaded by itself, as the corpus loader reads it."""
    with tempfile.TemporaryDirectory(prefix="qa-upload-") as scratch:
        folder = Path(scratch) / "corpus"
        folder.mkdir()
        (folder / name).write_bytes(data)
        if sidecar is not None:
            (folder / name).with_suffix(SIDECAR_SUFFIX).write_bytes(sidecar)
        # The real index folder's PDF cache: the re-index that follows reads it from there.
        loaded = read_corpus(settings.model_copy(update={"corpus_dir": folder}))
    if loaded.problems:
        raise CorpusChangeError("unreadable", loaded.problems[0].reason)
    if not loaded.documents:
        raise CorpusChangeError("unreadable", "no document found in the file")
    return tuple(loaded.documents)


def _refuse_duplicates(
    settings: Settings, data: bytes, documents: Sequence[Document], existing: Sequence[Document]
) -> None:
    digest = hashlib.sha256(data).hexdigest()
    for doc in existing:
        path = settings.corpus_dir / doc.path
        try:
            same_bytes = path.stat().st_size == len(data) and _sha256(path) == digest
        except OSError:
            same_bytes = False
        for new in documents:
            same = (
                same_bytes
                or (new.doi and doc.doi and new.doi.casefold() == doc.doi.casefold())
                or slug(new.title, 40) == slug(doc.title, 40)
            )
            if same:
                raise CorpusChangeError(
                    "duplicate",
                    f"the corpus already has this document: '{doc.id}' ({doc.path}); delete it "
                    "first to replace it",
                )
            if new.id == doc.id:
                raise CorpusChangeError(
                    "duplicate",
                    f"the id '{doc.id}' is taken by another document ({doc.path}); give this "
                    "one an id of its own (front matter, or a .yml metadata file for a PDF)",
                )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- applying a change -------------------------------------------------------------------------


@dataclass
class AddFiles:
    """Store uploads in the corpus folder; :meth:`undo` takes them out again."""

    corpus_dir: Path
    uploads: Sequence[Upload]
    written: list[Path] = field(default_factory=list)

    def apply(self) -> None:
        self.corpus_dir.mkdir(parents=True, exist_ok=True)
        try:
            for upload in self.uploads:
                target = self.corpus_dir / upload.name
                self._write(target, upload.data)
                if upload.sidecar is not None:
                    self._write(target.with_suffix(SIDECAR_SUFFIX), upload.sidecar)
        except BaseException:
            self.undo()
            raise

    def _write(self, target: Path, data: bytes) -> None:
        tmp = self.corpus_dir / f".upload-{uuid.uuid4().hex}.part"
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)  # fails if the name was taken meanwhile: nothing replaced
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: exclusive create instead
                with target.open("xb") as fh:
                    fh.write(data)
            self.written.append(target)
        finally:
            tmp.unlink(missing_ok=True)

    def undo(self) -> None:
        for path in reversed(self.written):
            path.unlink(missing_ok=True)
        self.written.clear()

    def finish(self) -> None:
        """Nothing to tidy: the files are where they belong."""

    @property
    def paths(self) -> list[str]:
        return [u.name for u in self.uploads]


@dataclass
class RemoveFiles:
    """Take files out of the corpus folder; kept aside until :meth:`finish`, put back by
    :meth:`undo`."""

    corpus_dir: Path
    names: Sequence[str]
    aside: Path | None = None
    moved: list[tuple[Path, Path]] = field(default_factory=list)

    def apply(self) -> None:
        self.aside = self.corpus_dir / f".removed-{uuid.uuid4().hex}"
        self.aside.mkdir()
        try:
            for name in self.names:
                source = self.corpus_dir / name
                parked = self.aside / f"{len(self.moved)}-{source.name}"
                os.replace(source, parked)
                self.moved.append((source, parked))
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        for source, parked in reversed(self.moved):
            os.replace(parked, source)
        self.moved.clear()
        self.finish()

    def finish(self) -> None:
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None


def removal_for(settings: Settings, document_id: str, documents: Sequence[Document]) -> RemoveFiles:
    """The files to remove to take ``document_id`` out of the corpus: its file and sidecar.
    Refused when the file holds other documents too (an exported page of several articles)."""
    doc = next((d for d in documents if d.id == document_id), None)
    if doc is None:
        raise CorpusChangeError("not_found", f"no document with id '{document_id}'")
    others = sorted(d.id for d in documents if d.path == doc.path and d.id != doc.id)
    if others:
        raise CorpusChangeError(
            "shared",
            f"'{document_id}' comes from {doc.path}, which also holds {', '.join(others)}; "
            "edit or remove that file in the corpus folder instead",
        )
    names = [doc.path]
    for suffix in (".yml", ".yaml"):
        sidecar = PurePosixPath(doc.path).with_suffix(suffix).as_posix()
        if (settings.corpus_dir / sidecar).is_file() and doc.path.lower().endswith(".pdf"):
            names.append(sidecar)
    return RemoveFiles(settings.corpus_dir, names)
