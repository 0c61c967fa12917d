"""A corpus folder -> documents, each bad file skipped with the reason."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from service.documents.blocks import normalize_text, slug
from service.documents.boilerplate import RawArticle, import_articles, split_articles
from service.documents.front_matter import SIDECAR_SUFFIXES, curated_document, split_front_matter
from service.documents.html_text import blocks_from_html
from service.documents.markdown_text import MD_HEADING, blocks_from_markdown
from service.documents.plain_text import blocks_from_plain
from service.documents.records import CorpusFileError, CorpusLoad, Document, LoadProblem

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf")
MAX_FILE_BYTES = 20 * 1024 * 1024  # QA_MAX_FILE_BYTES' default
MAX_PDF_PAGES = 300  # QA_MAX_PDF_PAGES' default


def check_size(path: Path, max_bytes: int = MAX_FILE_BYTES) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise CorpusFileError(
            f"file is too large ({size:,} bytes; limit {max_bytes:,}, QA_MAX_FILE_BYTES)"
        )


def read_text_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """Read a corpus file as UTF-8 text, or raise CorpusFileError saying what is wrong."""
    check_size(path, max_bytes)
    raw = path.read_bytes()
    if not raw.strip():
        raise CorpusFileError("empty file")
    if b"\x00" in raw[:8192]:
        raise CorpusFileError("binary file (contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusFileError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise CorpusFileError("empty file")
    return text


def read_pdf_file(path: Path, rel: str, max_pages: int, cache: Path | None) -> Document:
    """The document of a PDF; CorpusFileError for anything that goes wrong with this file."""
    try:
        from service.documents.pdf_source import pdf_document  # pdfplumber is imported here

        return pdf_document(path, rel, max_pages=max_pages, cache_dir=cache)
    except (CorpusFileError, OSError):
        raise
    except Exception as exc:  # the extractor's own failure: this file only
        raise CorpusFileError(f"not a readable PDF ({type(exc).__name__}: {exc})"[:300]) from None


def load_corpus(
    corpus_dir: Path,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_pdf_pages: int = MAX_PDF_PAGES,
    pdf_cache: Path | None = None,
) -> CorpusLoad:
    """Load every supported file under ``corpus_dir`` (sorted by path), skipping bad ones.

    ``pdf_cache``: a folder where what each PDF gave is kept, so an unchanged one is read once.
    """
    result = CorpusLoad()
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus_dir} does not exist")
    curated: list[Document] = []
    imported: list[RawArticle] = []
    origins: list[Path] = []
    for path in sorted(p for p in corpus_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(corpus_dir).as_posix()
        if any(part.startswith(".") for part in path.relative_to(corpus_dir).parts):
            continue
        if path.suffix.lower() in SIDECAR_SUFFIXES:
            if not path.with_suffix(".pdf").is_file():
                result.problems.append(
                    LoadProblem(rel, f"metadata file without a PDF beside it ({path.stem}.pdf)")
                )
            continue  # read with its PDF
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            if path.name.lower() not in {"readme", "license"}:
                result.problems.append(
                    LoadProblem(rel, f"unsupported file type '{path.suffix or path.name}'")
                )
            continue
        try:
            if path.suffix.lower() == ".pdf":
                check_size(path, max_file_bytes)
                curated.append(read_pdf_file(path, rel, max_pdf_pages, pdf_cache))
                continue
            text = read_text_file(path, max_file_bytes)
            if path.suffix.lower() in (".md", ".markdown"):
                meta, body = split_front_matter(normalize_text(text))
                if meta is not None:
                    curated.append(curated_document(meta, body, rel))
                    continue
                blocks = blocks_from_markdown(normalize_text(text))
            elif path.suffix.lower() in (".html", ".htm"):
                blocks = blocks_from_html(text)
            else:
                blocks = blocks_from_plain(normalize_text(text))
            if not blocks:
                raise CorpusFileError("no text found")
            imported.extend(split_articles(rel, blocks))
            origins.append(path)
        except CorpusFileError as exc:
            result.problems.append(LoadProblem(rel, str(exc)))
        except OSError as exc:
            result.problems.append(LoadProblem(rel, f"cannot read: {exc.strerror or exc}"))
    imported_docs = import_articles(imported)
    derived = {id(doc) for doc in imported_docs}
    seen: dict[str, Document] = {}
    for doc in [*curated, *imported_docs]:
        if doc.id in seen and id(doc) in derived and not _same_article(doc, seen[doc.id]):
            # An imported id is made up ("li-2025"): a different article may share it.
            doc = replace(doc, id=_free_id(doc.id, seen))
        if doc.id in seen:
            result.problems.append(
                LoadProblem(
                    doc.path, f"duplicate id '{doc.id}' (already used by {seen[doc.id].path})"
                )
            )
            continue
        if not any(line.strip() and not MD_HEADING.match(line) for line in doc.text.split("\n")):
            result.problems.append(LoadProblem(doc.path, "no text besides the title"))
            continue
        seen[doc.id] = doc
        result.documents.append(doc)
    return result


def _same_article(a: Document, b: Document) -> bool:
    if a.doi and b.doi:
        return a.doi.casefold() == b.doi.casefold()
    return slug(a.title, 40) == slug(b.title, 40)


def _free_id(doc_id: str, taken: Collection[str]) -> str:
    """``li-2025`` -> ``li-2025b`` (then ``c``, ...), as author-year citations do."""
    for suffix in "bcdefghijklmnopqrstuvwxyz":
        if f"{doc_id}{suffix}" not in taken:
            return f"{doc_id}{suffix}"
    n = 2
    while f"{doc_id}-{n}" in taken:
        n += 1
    return f"{doc_id}-{n}"
