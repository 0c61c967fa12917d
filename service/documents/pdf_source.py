"""A PDF corpus file -> one :class:`Document`, with the offsets of its pages.

The text comes from :func:`service.documents.pdf_text.read_pdf` (reading order, headings,
captions; no running headers or reference list). The citation comes from a sidecar file beside
the PDF when there is one (``paper.pdf`` + ``paper.yml``, the fields of the Markdown front
matter: ``title``, ``authors``, ``year``, ``journal``, ``doi``, ``pmid``, ``study_type``, ...),
else from what the PDF itself says (its metadata and first page). The study type is inferred
as for the other formats when the sidecar does not name it.

Extraction is the slow part of a load (seconds for a long paper), and a corpus is loaded on
every start to see whether the index is current. With a ``cache_dir``, what a PDF gave is kept
there under the hash of its bytes, so an unchanged PDF is read once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from service.documents.blocks import slug
from service.documents.front_matter import SIDECAR_SUFFIXES, FrontMatter
from service.documents.pdf_text import PdfBlock, PdfContent, PdfMetadata, read_pdf
from service.documents.records import CorpusFileError, Document
from service.documents.references import infer_study_type

#: Bump when the extraction changes, so cached extractions are redone.
EXTRACTION_VERSION = 2


def sidecar_of(pdf: Path) -> Path | None:
    """``paper.yml`` (or ``.yaml``) beside ``paper.pdf``, if there is one."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = pdf.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(path: Path) -> FrontMatter:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CorpusFileError(f"metadata file {path.name} does not parse: {problem}") from None
    if not isinstance(data, dict):
        raise CorpusFileError(f"metadata file {path.name}: expected 'key: value' lines")
    try:
        return FrontMatter.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CorpusFileError(f"metadata file {path.name}, field '{where}': {err['msg']}") from None


def pdf_document(
    path: Path, rel: str, *, max_pages: int, cache_dir: Path | None = None
) -> Document:
    """The document of the PDF at ``path`` (``rel``: its path in the corpus folder)."""
    sidecar = sidecar_of(path)
    meta = read_sidecar(sidecar) if sidecar is not None else FrontMatter()
    content = _extract(path, max_pages, cache_dir)
    if not content.blocks:
        raise CorpusFileError("no text found in the PDF besides its title and references")
    found = content.metadata
    title = meta.title or found.title or path.stem
    authors = tuple(meta.authors) or found.authors
    year = meta.year or found.year
    doi = meta.doi or found.doi
    text, pages = render_pages(title, content.blocks, content.page_count)
    prose = " ".join(b.text for b in content.blocks if not b.level)
    if meta.id:
        doc_id = meta.id
    elif authors and year:
        doc_id = f"{slug(authors[0].split()[-1])}-{year}"
    else:
        doc_id = slug(path.stem, 12)
    journal = meta.journal or found.journal
    return Document(
        id=doc_id,
        title=title,
        text=text,
        authors=authors,
        year=year,
        journal=journal,
        doi=doi,
        pmid=meta.pmid or found.pmid,
        pmcid=meta.pmcid,
        url=meta.url or (f"https://doi.org/{doi}" if doi else None),
        study_type=meta.study_type or infer_study_type(meta.source_title or title, prose),
        source_title=meta.source_title,
        reference=meta.reference or _reference(title, authors, journal, year, doi),
        path=rel,
        pages=pages,
    )


def render_pages(
    title: str, blocks: list[PdfBlock], page_count: int
) -> tuple[str, tuple[int, ...]]:
    """The canonical Markdown text (as :func:`service.documents.blocks.render_markdown`) and
    where each page starts in it. A page without text starts where the next one does."""
    parts = [f"# {title}"]
    offset = len(parts[0])
    starts: dict[int, int] = {1: 0}
    for block in blocks:
        piece = f"{'#' * max(block.level, 2)} {block.text}" if block.level else block.text
        offset += 2  # the blank line between blocks
        starts.setdefault(block.page, offset)
        parts.append(piece)
        offset += len(piece)
    text = "\n\n".join(parts) + "\n"
    pages: list[int] = []
    for page in range(page_count, 0, -1):  # backwards: an empty page takes the next start
        pages.append(starts.get(page, pages[-1] if pages else len(text)))
    pages.reverse()
    for n in range(1, len(pages)):  # keep them non-decreasing
        pages[n] = max(pages[n], pages[n - 1])
    return text, tuple(pages)


def _reference(
    title: str, authors: tuple[str, ...], journal: str | None, year: int | None, doi: str | None
) -> str | None:
    """A reference line from what is known, when there is more than a title."""
    if not (journal or doi):
        return None
    names = ", ".join(authors[:6]) + (", et al." if len(authors) > 6 else "")
    parts = [p for p in (names, title, journal, str(year) if year else None) if p]
    return ". ".join(p.rstrip(".") for p in parts) + "." + (f" doi:{doi}" if doi else "")


def _extract(path: Path, max_pages: int, cache_dir: Path | None) -> PdfContent:
    if cache_dir is None:
        return read_pdf(path, max_pages=max_pages)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cached = cache_dir / f"{digest}-v{EXTRACTION_VERSION}.json"
    try:
        return _from_json(json.loads(cached.read_text(encoding="utf-8")), max_pages)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    content = read_pdf(path, max_pages=max_pages)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp-{digest[:8]}")
        tmp.write_text(json.dumps(asdict(content), ensure_ascii=False), encoding="utf-8")
        tmp.replace(cached)
    except OSError:
        pass  # a read-only index folder: extract again next time
    return content


def _from_json(raw: dict[str, Any], max_pages: int) -> PdfContent:
    if int(raw["page_count"]) > max_pages:  # the limit may have been lowered since
        raise ValueError("over the page limit")
    meta = dict(raw["metadata"])
    meta["authors"] = tuple(meta.get("authors") or ())
    return PdfContent(
        blocks=[PdfBlock(**b) for b in raw["blocks"]],
        page_count=int(raw["page_count"]),
        metadata=PdfMetadata(**meta),
        references=list(raw["references"]),
    )
