"""PDF articles -> blocks (headings, paragraphs, captions), metadata and the reference list.

Uses pdfplumber (MIT) over pdfminer.six (MIT): they give every character with its font name,
size and position, which is what reading order, headings and running headers need, with no
model to download. PyMuPDF would be faster but is AGPL, which we avoid in a served product.

The work is split: ``pdf_fragments`` (characters -> line fragments, word spacing),
``pdf_layout`` (lines in reading order: columns, running headers), ``pdf_structure`` (headings,
paragraphs, captions), ``pdf_references`` (the reference list), ``pdf_lines`` (joining lines,
hyphenation) and ``pdf_metadata`` (title, authors, DOI, year). This module opens the file,
guards against bad ones and puts the parts together. Every problem is a
:class:`CorpusFileError` with a reason for the user; nothing pdfminer raises escapes.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pdfplumber
from pdfminer.pdfdocument import PDFEncryptionError
from pdfminer.pdftypes import PDFStream, resolve1
from pdfplumber.utils.exceptions import PdfminerException

from service.documents.pdf_fragments import Char, PageChars, page_text
from service.documents.pdf_layout import layout_pages
from service.documents.pdf_metadata import PdfMetadata, front_matter, read_metadata
from service.documents.pdf_structure import OutlineEntry, PdfBlock, structure
from service.documents.records import CorpusFileError

__all__ = ["PdfBlock", "PdfContent", "PdfMetadata", "read_pdf"]

log = logging.getLogger(__name__)

TIME_LIMIT_S = 180.0  # a damaged or pathological file must not hold a load for ever
ENCRYPTED = "encrypted; remove the password and add it again"
NO_TEXT = "no extractable text (a scanned image?); OCR is not supported"
_BOLD = re.compile(r"bold|black|heavy|semibold|demi|cmbx|cmssbx|cmb\d|[-,](?:b|bd|medi)$", re.I)
_SHOWS_TEXT = re.compile(rb"T[jJ]\b|\)\s*['\"]|\bDo\b")  # text operators, or nested forms


@dataclass(frozen=True)
class PdfContent:
    blocks: list[PdfBlock]  # reading order; no running lines, title, authors or references
    page_count: int
    metadata: PdfMetadata
    references: list[str]  # the reference list's entries, kept out of ``blocks``


def read_pdf(path: Path, *, max_pages: int = 300) -> PdfContent:
    """Read an article PDF, or raise CorpusFileError saying why it cannot be used."""
    _check_file(path)
    started = time.monotonic()
    try:
        with pdfplumber.open(path) as pdf:
            page_count = len(pdf.pages)
            if page_count == 0:
                raise CorpusFileError("the PDF has no pages")
            if page_count > max_pages:
                raise CorpusFileError(
                    f"too many pages ({page_count}; the limit is {max_pages}, "
                    "set by QA_MAX_PDF_PAGES)"
                )
            verdicts: dict[int, bool] = {}
            pages = []
            for number, page in enumerate(pdf.pages, 1):
                pages.append(page_text(_page_chars(page, number, verdicts)))
                page.close()  # drop pdfplumber's per-page caches as we go
                if time.monotonic() - started > TIME_LIMIT_S:
                    raise CorpusFileError(
                        f"reading took over {TIME_LIMIT_S:.0f} s (a damaged or very complex "
                        f"file; stopped at page {number} of {page_count})"
                    )
            info, xmp, outline = _info(pdf), _xmp(pdf), _outline(pdf)
    except CorpusFileError:
        raise
    except Exception as exc:  # pdfminer raises anything from KeyError to RecursionError
        raise CorpusFileError(_reason(exc)) from None
    if not any(p.fragments for p in pages):
        raise CorpusFileError(NO_TEXT)
    try:
        lines, first_page = layout_pages(pages)
        front = front_matter(lines, pages[0].height)
        metadata = read_metadata(info, xmp, front, first_page)
        kept = [line for i, line in enumerate(lines) if i not in front.drop]
        blocks, references = structure(kept, outline)
    except Exception as exc:  # our bug, met on some file: skip the file, keep the load going
        log.exception("the PDF reader failed on %s", path)
        raise CorpusFileError(
            f"the PDF reader failed on this file ({type(exc).__name__}); please report it"
        ) from None
    if not blocks and not references:
        raise CorpusFileError(NO_TEXT)
    return PdfContent(blocks, page_count, metadata, references)


def _check_file(path: Path) -> None:
    """Cheap checks before pdfminer sees the file: it can be slow on garbage."""
    size = path.stat().st_size
    if size == 0:
        raise CorpusFileError("empty file")
    with path.open("rb") as f:
        head = f.read(1024)
        f.seek(max(0, size - 8192))
        tail = f.read()
    if b"%PDF-" not in head:
        raise CorpusFileError("not a PDF file (no %PDF- header)")
    if b"%%EOF" not in tail:
        raise CorpusFileError("not a readable PDF (corrupt or truncated: no %%EOF end marker)")


def _reason(exc: BaseException) -> str:
    cause = exc.args[0] if isinstance(exc, PdfminerException) and exc.args else exc
    if isinstance(cause, PDFEncryptionError):  # includes PDFPasswordIncorrect
        return ENCRYPTED
    detail = str(cause).strip().splitlines()[0][:120] if str(cause).strip() else ""
    name = type(cause).__name__
    return f"not a readable PDF (corrupt or truncated: {name}{': ' + detail if detail else ''})"


# pdfplumber's pages and pdfminer's objects are typed loosely (dicts of Any), so the functions
# below take them as Any and hand on only our own typed records.


def _page_chars(page: Any, number: int, verdicts: dict[int, bool]) -> PageChars:
    _skip_textless_forms(page.page_obj, verdicts)
    width, height = float(page.width), float(page.height)
    chars = [
        Char(c["text"], float(c["x0"]), float(c["x1"]), float(c["top"]), float(c["bottom"]),
             float(c["size"]), bool(_BOLD.search(str(c.get("fontname", "")))))
        for c in page.chars
        if c.get("upright", True) and c["text"] and not c["text"].startswith("(cid:")
        and float(c["size"]) >= 2
        and c["x1"] > 0 and c["x0"] < width and c["bottom"] > 0 and c["top"] < height
    ]  # fmt: skip
    return PageChars(number, width, height, chars)


def _skip_textless_forms(page_obj: Any, verdicts: dict[int, bool]) -> None:
    """Hide form XObjects that show no text (vector figures) from pdfminer.

    pdfminer tokenises every path operator in Python: one figure page of the test preprint took
    5 s of its 8. Text inside figures is not prose, and a form with text operators is kept.
    """
    resources = resolve1(page_obj.resources)
    xobjects = resolve1(resources.get("XObject")) if isinstance(resources, dict) else None
    if not isinstance(xobjects, dict):
        return
    kept = {}
    for name, ref in xobjects.items():
        key = getattr(ref, "objid", None) or id(ref)
        if key not in verdicts:
            verdicts[key] = _may_show_text(ref)
        if verdicts[key]:
            kept[name] = ref
    if len(kept) < len(xobjects):
        page_obj.resources = {**resources, "XObject": kept}


def _may_show_text(ref: Any) -> bool:
    stream = resolve1(ref)
    if not isinstance(stream, PDFStream):
        return True
    if getattr(resolve1(stream.get("Subtype")), "name", None) != "Form":
        return True  # images: pdfminer only notes them
    try:
        return bool(_SHOWS_TEXT.search(stream.get_data()))
    except Exception:  # let pdfminer meet the broken stream and decide
        return True


def _info(pdf: Any) -> dict[str, str]:
    try:
        return {str(k): " ".join(v.split()) for k, v in pdf.metadata.items() if isinstance(v, str)}
    except Exception:
        return {}


def _xmp(pdf: Any) -> bytes | None:
    try:
        stream = resolve1(pdf.doc.catalog.get("Metadata"))
        if isinstance(stream, PDFStream):
            data = stream.get_data()
            return data if len(data) <= 1_000_000 else None
    except Exception:
        pass
    return None


def _outline(pdf: Any) -> list[OutlineEntry]:
    """The bookmarks with the page each points to (none when absent or broken)."""
    try:
        page_ids = {page.page_obj.pageid: i for i, page in enumerate(pdf.pages, 1)}
        entries = []
        # Bounded: a malformed outline may loop through its /Next links.
        for level, title, dest, action, _ in itertools.islice(pdf.doc.get_outlines(), 2000):
            page = _dest_page(pdf.doc, dest, action, page_ids)
            if page is not None and isinstance(title, str) and title.strip():
                entries.append(OutlineEntry(" ".join(title.split()), int(level), page))
        return entries
    except Exception:
        return []


def _dest_page(doc: Any, dest: Any, action: Any, page_ids: dict[Any, int]) -> int | None:
    target = resolve1(dest)
    act = resolve1(action)
    goto = isinstance(act, dict) and getattr(resolve1(act.get("S")), "name", None) == "GoTo"
    if target is None and goto:
        target = resolve1(act.get("D"))
    if isinstance(target, (str, bytes)) or hasattr(target, "name"):  # a named destination
        target = resolve1(doc.get_dest(getattr(target, "name", target)))
    if isinstance(target, dict):
        target = resolve1(target.get("D"))
    if isinstance(target, list) and target:
        first = target[0]
        if getattr(first, "objid", None) in page_ids:
            return page_ids[first.objid]
        if isinstance(first, int) and 0 <= first < len(page_ids):
            return first + 1
    return None
