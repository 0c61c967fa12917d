"""A PDF article's citation: title, authors, year, journal, DOI and PMID.

The info dictionary and XMP come first where their values are real (not "Microsoft Word -
draft.docx", "untitled" or a file name). Otherwise the title is the largest-font line(s) near
the top of page 1 and the authors the lines just below it when they read as a list of names.
DOI and PMID are searched on page 1. The year is, in order: the XMP publication date, a year
printed on page 1 beside "©", "Published" or a citation line ("2020;11:45"), the info
dictionary's creation date; None when none is found.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from service.documents.pdf_layout import Line, body_size
from service.documents.pdf_lines import join_lines

_JUNK_TITLE = re.compile(
    r"^(?:untitled|microsoft\s|title\b|document\d*$|layout \d|slide \d|powerpoint|doi\b|pii\b)"
    r"|\.(?:docx?|pdf|tex|dvi|rtf|odt|indd|qxd|ps|eps|pptx?)\b",
    re.I,
)
_LABEL = re.compile(
    r"^(?:(?:original|research|review|brief|short|clinical|case)\s+)?(?:article|paper|report|"
    r"communication|letter|review|study)s?$|^open access$|^(?:accepted|author) manuscript$|"
    r"^preprint$",
    re.I,
)
_AFFILIATION = re.compile(
    r"\b(?:universit|department|dept\b|institut|hospital|college|school of|faculty|laborator|"
    r"centre\b|center\b|clinics?\b|inc\b|ltd\b|gmbh|e-?mail|correspond)|@|^[†‡¶§*∗#]",
    re.I,
)  # whole words where prose has longer ones ("clinical", "centered")
_NOT_NAME = re.compile(
    r"\b(?:universit|department|institut|hospital|abstract|journal|vol|doi|review|article)", re.I
)
_DEGREE = re.compile(
    r"^(?:MD|PhD|MSc|BSc|MPH|MBBS|MBChB|MRCP|FRCS|FRCP|FRCPC|FACS|FACP|DPhil|RN|BS|MS|MA|DO|DDS|"
    r"DMD|PharmD|MBA|MPhil|DrPH|ScD|Jr|Sr|Prof|Dr)\.?$"
)
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "la", "le", "du", "dos", "del", "y"}
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>]+)")
_PMID = re.compile(r"\bPMID:?\s*(\d{4,9})\b")
_DATE = r":?\s+(?:\d{1,2}(?:st|nd|rd|th)?\s+)?(?:[A-Z][a-z]+\.?\s+)?(?:\d{1,2},?\s+)?"
_PRINTED_YEAR = (
    re.compile(r"(?:©|\(c\)|copyright)\s*(?:©\s*)?((?:19|20)\d{2})\b", re.I),
    re.compile(
        r"\b(?:Published|PUBLISHED)(?: online| Online| ONLINE)?" + _DATE + r"((?:19|20)\d{2})\b"
    ),
    re.compile(r"\b((?:19|20)\d{2})\s*;\s*\d+\s*(?:\(\s*\w+\s*\))?\s*:"),  # "2020;11(2):45"
    re.compile(r"\b(?:Accepted|ACCEPTED)" + _DATE + r"((?:19|20)\d{2})\b"),
)


@dataclass(frozen=True)
class PdfMetadata:
    title: str | None = None
    authors: tuple[str, ...] = ()
    year: int | None = None
    journal: str | None = None
    doi: str | None = None
    pmid: str | None = None


@dataclass(frozen=True)
class FrontMatter:
    """What page 1 says: the title, the authors, and which lines those (and affiliations) are."""

    title: str | None
    authors: tuple[str, ...]
    drop: frozenset[int]  # indices into the document's lines: kept out of the blocks


@dataclass(frozen=True)
class _Xmp:
    title: str | None = None
    authors: tuple[str, ...] = ()
    doi: str | None = None
    journal: str | None = None
    year: int | None = None


def front_matter(lines: Sequence[Line], height: float) -> FrontMatter:
    """Title and author lines at the top of page 1 (largest font first, names just below)."""
    body = body_size(lines)
    first = [i for i, line in enumerate(lines) if line.page == 1]
    groups: list[list[int]] = []
    for i in first:
        line, prev = lines[i], lines[groups[-1][-1]] if groups else None
        if (
            prev is not None
            and groups[-1][-1] == i - 1
            and prev.run == line.run
            and abs(prev.size - line.size) < 0.3
            and line.top - prev.bottom < line.size
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    candidates = [
        g
        for g in groups
        if lines[g[0]].top < 0.6 * height
        and lines[g[0]].size >= max(1.15 * body, body + 1)
        and len(g) <= 4
        and _title_like(" ".join(lines[i].text for i in g))
    ]
    if not candidates:
        return FrontMatter(None, (), frozenset())
    title_group = max(candidates, key=lambda g: (lines[g[0]].size, -g[0]))
    title = _text([lines[i] for i in title_group])
    drop = set(title_group)
    after = [i for i in first if i > title_group[-1]]
    author_lines: list[int] = []
    for i in after[:4]:
        line = lines[i]
        if author_lines and abs(line.size - lines[author_lines[0]].size) >= 0.3:
            break
        if _AFFILIATION.search(line.main_text) or _SECTION_START.match(line.text):
            break
        author_lines.append(i)
    # The most lines that read as names ("..., and Andrew" alone does not; with "D. White" it does).
    authors, author_lines = max(
        ((_names(" ".join(lines[i].main_text for i in author_lines[:k])), author_lines[:k])
         for k in range(1, len(author_lines) + 1)),
        key=lambda found: (bool(found[0]), len(found[1])),
        default=((), []),
    )  # fmt: skip
    if authors:
        drop.update(author_lines)
        misses = 0  # affiliations follow the names, maybe with a line that does not say so
        for i in [i for i in after if i > author_lines[-1]][:15]:
            if _SECTION_START.match(lines[i].text) or misses == 2:
                break
            if _AFFILIATION.search(lines[i].text):
                drop.add(i)
                misses = 0
            else:
                misses += 1
    return FrontMatter(title, authors, frozenset(drop))


_SECTION_START = re.compile(r"^(?:abstract|summary|background|introduction|keywords)\b", re.I)


def read_metadata(
    info: dict[str, str], xmp: bytes | None, front: FrontMatter, first_page: str
) -> PdfMetadata:
    """The citation from the info dictionary, XMP and page 1 (see the module docstring)."""
    meta = _parse_xmp(xmp)
    title = next((t for t in (info.get("Title"), meta.title) if t and _real_title(t)), front.title)
    info_authors = _names(info.get("Author", ""), info=True)
    authors = info_authors or meta.authors or front.authors
    subject = info.get("Subject", "")
    doi = meta.doi or _doi(info.get("doi", "") or info.get("DOI", "")) or _doi(subject)
    doi = doi or _doi(first_page)
    pmid = m.group(1) if (m := _PMID.search(first_page)) else None
    journal = meta.journal
    if journal is None and (m := re.match(r"^\s*([^,;\d][^,;]{2,100}?)\s*,\s*(?:doi|\d)", subject)):
        journal = m.group(1).strip()
    year = meta.year or _printed_year(first_page) or _pdf_date_year(info.get("CreationDate", ""))
    return PdfMetadata(title, authors, year, journal, doi, pmid)


def _real_title(text: str) -> bool:
    words = [w for w in text.split() if any(ch.isalpha() for ch in w)]
    return len(words) >= 2 and len(text) >= 8 and not _JUNK_TITLE.search(text.strip())


def _title_like(text: str) -> bool:
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 10 and len(text.split()) >= 2 and not _LABEL.match(text.strip())


def _text(lines: Sequence[Line]) -> str:
    text = ""
    for line in lines:
        text = join_lines(text, line.main_text, set())
    return " ".join(text.split())


def _names(text: str, *, info: bool = False) -> tuple[str, ...]:
    """A list of personal names ("A. B. Smith, C. Jones and D. Lee"), or () if it is not one.
    Degrees ("MD", "PhD") are left out."""
    text = re.sub(r"[\d*†‡§¶#∗⁎✉]+", " ", text)
    parts = text.split(";") if info and ";" in text else re.split(r",|;|&|\band\b", text)
    names = [" ".join(t for t in p.split() if not _DEGREE.match(t)) for p in parts]
    names = [n for n in names if n]
    if not names or any(not _name_like(n) for n in names):
        return ()
    return tuple(names)


def _name_like(name: str) -> bool:
    tokens = name.split()
    if not 2 <= len(tokens) <= 6 or _NOT_NAME.search(name) or any(c.isdigit() for c in name):
        return False
    if not any(sum(ch.isalpha() for ch in t) >= 2 for t in tokens):
        return False
    return all(t[0].isupper() or t.casefold() in _PARTICLES for t in tokens)


def _doi(text: str) -> str | None:
    m = _DOI.search(text)
    return m.group(1).rstrip(".,;:)]}>'\"") if m else None


def _year(value: str) -> int | None:
    m = re.search(r"\b((?:19|20)\d{2})\b", value)
    if m and 1900 <= int(m.group(1)) <= dt.date.today().year + 1:
        return int(m.group(1))
    return None


def _printed_year(page: str) -> int | None:
    for pattern in _PRINTED_YEAR:
        if (m := pattern.search(page)) and (year := _year(m.group(1))):
            return year
    return None


def _pdf_date_year(value: str) -> int | None:
    """``D:20230201212829Z`` -> 2023."""
    m = re.match(r"^(?:D:)?((?:19|20)\d{2})", value.strip())
    return _year(m.group(1)) if m else None


def _parse_xmp(data: bytes | None) -> _Xmp:
    """The Dublin Core and PRISM fields of an XMP packet (namespace versions ignored)."""
    if not data:
        return _Xmp()
    try:
        root = ET.fromstring(data.strip(b"\x00 \t\r\n"))
    except Exception:  # whatever the file holds: XMP is optional
        return _Xmp()
    values: dict[str, list[str]] = {}
    for el in root.iter():
        name = _local(el.tag)
        items = [" ".join((li.text or "").split()) for li in el.iter() if _local(li.tag) == "li"]
        text = " ".join((el.text or "").split())
        values.setdefault(name, []).extend(v for v in (items or [text]) if v)
        for key, value in el.attrib.items():
            values.setdefault(_local(key), []).append(" ".join(value.split()))

    def first(*names: str) -> str | None:
        return next((v for n in names for v in values.get(n, []) if v), None)

    title = first("title")
    creators = tuple(n for v in values.get("creator", []) for n in _names(v, info=True))
    ident = first("doi", "DOI") or next(
        (v for v in values.get("identifier", []) if _DOI.search(v)), None
    )
    date = first("coverDate", "publicationDate", "coverDisplayDate")
    return _Xmp(
        title=title if title and _real_title(title) else None,
        authors=creators,
        doi=_doi(ident) if ident else None,
        journal=first("publicationName"),
        year=_year(date) if date else None,
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
