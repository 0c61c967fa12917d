"""A document's reference as BibTeX, RIS or CSL-JSON, for reference managers.

The reference is the cited study's, not the summary's: its title is ``source_title`` (the
article's own title) where the document has one, else ``title``; authors, year, journal, DOI,
PMID, PMCID and URL come from the front matter, and volume, issue and pages from the
document's ``Source:`` reference where it gives them (PubMed's ``2024 Sep 20;14(3):97233``
or APA's ``Journal, 11(2), 45-52``).

- Entry type: a study in a journal is ``@article`` / ``TY - JOUR`` / ``article-journal``; a
  preprint (the study type says so, the journal is a preprint server, or the DOI is one of a
  server's) is ``@misc`` with ``note = {Preprint}`` / ``TY - UNPB`` / ``article`` (CSL 1.0.2's
  type for preprints), the server as ``howpublished`` / ``PB`` / ``publisher``; anything else
  is ``@misc`` / ``TY - GEN`` / ``document``. The study type goes in the keywords.
- Citation key: first author's family name, year and first title word that is not an
  article or preposition, ASCII-folded and lower case (``zhang2023mesenchymal``), ``anon``
  without authors; a key already used in the same file gets ``b``, ``c``, ... appended.
- Names: ``Zhang W`` and ``Liu DD`` (PubMed's family name and initials), ``Zhang, W.``,
  ``Jane A. Smith`` and ``Maria de la Cruz`` become family and given parts (initials with
  periods: ``D. D.``); family names of several words (``El Assaad N``, ``Bou Atme N``) stay
  whole; group authors (``... Study Group``, ``... Consortium``) are kept as one literal name.
- BibTeX: non-ASCII is LaTeX-encoded (``{\\textendash}``, ``{\\"u}``,
  ``\\ensuremath{\\beta}``, ``{\\texttimes}``), and title words whose capitals must survive a
  style's sentence case are braced (``{MSC-derived}``, ``{Alzheimer{\\textquoteright}s}``);
  DOI and URL are written as they are. PMID and PMCID as ``pmid`` and ``pmcid`` fields (as
  Zotero's BibTeX export writes them). RIS and CSL-JSON keep UTF-8.
- RIS: one ``AU  - Family, Given`` line per author; the journal in ``T2``; the PMID as the
  accession number ``AN`` with ``DB  - PubMed`` (EndNote's convention for PubMed records;
  Zotero files them as archive location and archive) and, for a journal article, the PMCID in
  ``C2`` (EndNote's PMCID field).

Libraries (chosen over writing the syntax by hand, which gets escaping wrong):
`bibtexparser` 2 (MIT; actively maintained, configurable layout) holds the entries and writes
the file, and the tests parse the output back with it; its LaTeX encoding is `pylatexenc`
(MIT), used here directly so that the title's case protection is added after encoding and DOI
and URL are not encoded. `pybtex` with `latexcodec` would also do; bibtexparser is the better
kept of the two. Neither reads PubMed's "Zhang W" (BibTeX's rules make W the family name), so
names are split here. `rispy` (MIT) writes RIS, and reads it back in the tests. CSL-JSON is
plain JSON, written with the standard library; the tests render it with `citeproc-py` (BSD).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import rispy
from bibtexparser.entrypoint import write_string
from bibtexparser.library import Library
from bibtexparser.model import Entry, Field
from bibtexparser.writer import BibtexFormat
from pylatexenc.latexencode import UnicodeToLatexEncoder

from service.documents import Document
from service.documents.names import PersonName, split_name

CitationFormat = Literal["bibtex", "ris", "csl-json"]
FORMATS: tuple[CitationFormat, ...] = get_args(CitationFormat)
#: The most documents one export may name.
MAX_EXPORT_DOCUMENTS = 100

Kind = Literal["article", "preprint", "generic"]


@dataclass(frozen=True)
class FormatInfo:
    media_type: str
    extension: str


FORMAT_INFO: dict[CitationFormat, FormatInfo] = {
    "bibtex": FormatInfo("application/x-bibtex; charset=utf-8", "bib"),
    "ris": FormatInfo("application/x-research-info-systems; charset=utf-8", "ris"),
    "csl-json": FormatInfo("application/vnd.citationstyles.csl+json", "json"),
}


@dataclass(frozen=True)
class CitationRecord:
    """What every format writes for one document."""

    key: str
    kind: Kind
    title: str
    authors: tuple[PersonName, ...]
    year: int | None
    journal: str | None
    volume: str | None
    issue: str | None
    pages: str | None
    doi: str | None
    pmid: str | None
    pmcid: str | None
    url: str | None
    study_type: str | None
    server: str | None  # a preprint's server


# -- the record --------------------------------------------------------------------------------

_STOPWORDS = {"a", "an", "the", "on", "of", "in", "for", "and", "to", "with", "at", "by",
              "from", "is", "are", "do", "does", "how", "what", "why", "when"}  # fmt: skip
_FOLD = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d",
                       "þ": "th", "ð": "d", "ı": "i"})  # fmt: skip

#: Preprint servers, by name (lower case) and by DOI prefix.
_SERVERS = {"biorxiv": "bioRxiv", "medrxiv": "medRxiv", "arxiv": "arXiv",
            "research square": "Research Square", "ssrn": "SSRN", "preprints": "Preprints",
            "chemrxiv": "ChemRxiv", "osf preprints": "OSF Preprints"}  # fmt: skip
_SERVER_DOIS = (
    (re.compile(r"^10\.1101/(?:19|20)\d{2}\.\d{2}\.\d{2}\."), "bioRxiv"),  # and medRxiv
    (re.compile(r"^10\.48550/"), "arXiv"),
    (re.compile(r"^10\.21203/rs\."), "Research Square"),
    (re.compile(r"^10\.2139/ssrn\."), "SSRN"),
    (re.compile(r"^10\.20944/preprints"), "Preprints"),
    (re.compile(r"^10\.26434/chemrxiv"), "ChemRxiv"),
)

# After the journal in a Source: reference. PubMed: ". 2024 Sep 20;14(3):97233".
_NLM_LOCATION = re.compile(
    r"^\.\s*(?:19|20)\d{2}(?:\s+[A-Z][a-z]{2}(?:-[A-Z][a-z]{2})?(?:\s+\d{1,2})?)?\s*;\s*"
    r"(?P<volume>[^\s(:;.]+)?(?:\s*\((?P<issue>[^)]+)\))?(?:\s*:\s*(?P<pages>[^\s;,]+?))?"
    r"\.?(?:\s|$)"
)
# APA: ", 11(2), 45-52."
_APA_LOCATION = re.compile(
    r"^,\s*(?P<volume>\d+)(?:\s*\((?P<issue>[^)]+)\))?"
    r"(?:,\s*(?P<pages>[A-Za-z]?\d+(?:\s*[-–]\s*[A-Za-z]?\d+)?))?[.,]?(?:\s|$)"
)


def fold(text: str) -> str:
    """Lower-case ASCII letters and digits only: ``Müller`` -> ``muller``."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_FOLD))
    return re.sub(r"[^a-z0-9]", "", decomposed.encode("ascii", "ignore").decode())


def _key(authors: Sequence[PersonName], year: int | None, title: str) -> str:
    first = authors[0] if authors else None
    name = fold(first.family or first.literal.split(" ")[0]) if first else ""
    word = next((w for raw in title.split() if (w := fold(raw)) and w not in _STOPWORDS), "")
    return f"{name or 'anon'}{year or ''}{word}"


def _server(doc: Document) -> str | None:
    if doc.journal and (name := _SERVERS.get(doc.journal.strip().lower())):
        return name
    if doc.doi:
        for pattern, name in _SERVER_DOIS:
            if pattern.match(doc.doi):
                return name
    return None


def _locator(doc: Document) -> tuple[str | None, str | None, str | None]:
    """Volume, issue and pages from the ``Source:`` reference, where it gives them."""
    ref, journal = doc.reference, doc.journal
    if not ref or not journal:
        return None, None, None
    at = ref.find(journal)
    while at >= 0:
        rest = ref[at + len(journal) :]
        if m := _NLM_LOCATION.match(rest) or _APA_LOCATION.match(rest):
            pages = m.group("pages")
            pages = re.sub(r"\s*[-–]\s*", "-", pages) if pages else None
            return m.group("volume"), m.group("issue"), pages
        at = ref.find(journal, at + 1)
    return None, None, None


def _clean(text: str | None) -> str | None:
    """One line: runs of white space (newlines included) as one space; None when empty."""
    return (" ".join(text.split()) or None) if text else None


def citation_record(doc: Document) -> CitationRecord:
    """The reference of ``doc`` (its key unique only on its own: see :func:`citation_records`)."""
    title = _clean(doc.source_title) or _clean(doc.title) or ""
    authors = tuple(p for a in doc.authors if (p := split_name(a)) is not None)
    server = _server(doc)
    preprint = server is not None or "preprint" in (doc.study_type or "").lower()
    kind: Kind = "preprint" if preprint else "article" if doc.journal else "generic"
    volume, issue, pages = _locator(doc) if kind == "article" else (None, None, None)
    return CitationRecord(
        key=_key(authors, doc.year, title),
        kind=kind,
        title=title,
        authors=authors,
        year=doc.year,
        journal=_clean(doc.journal) if kind == "article" else None,
        volume=volume,
        issue=issue,
        pages=pages,
        doi=_clean(doc.doi),
        pmid=_clean(doc.pmid),
        pmcid=_clean(doc.pmcid),
        url=_clean(doc.url or doc.pubmed_url),
        study_type=_clean(doc.study_type),
        server=server or (_clean(doc.journal) if preprint else None),
    )


def citation_records(docs: Sequence[Document]) -> list[CitationRecord]:
    """The records of ``docs`` in order, each with a citation key unique among them."""
    used: set[str] = set()
    records = []
    for doc in docs:
        base = citation_record(doc)
        key = base.key
        n = 1
        while key in used:
            n += 1
            key = f"{base.key}{_suffix(n)}"
        used.add(key)
        records.append(replace(base, key=key))
    return records


def _suffix(n: int) -> str:
    """2 -> b, 3 -> c, ... 26 -> z, then 27, 28, ..."""
    return chr(ord("a") + n - 1) if n <= 26 else str(n)


# -- BibTeX ------------------------------------------------------------------------------------

_LATEX = UnicodeToLatexEncoder(replacement_latex_protection="braces-all")
_PLAIN = re.compile(r'^[^"#$%&<>\\^_{}~]*$')  # ASCII the encoder leaves alone
# A title word: punctuation around it stays outside the braces (BibTeX finds ": " only there).
_WORD = re.compile(r"^(?P<lead>[(\[\"“‘']*)(?P<core>.*?)(?P<trail>[)\]\"”’'.,;:?!]*)$")


def _tex(text: str) -> str:
    if text.isascii() and _PLAIN.match(text):
        return text  # most words: no need for the (slow) encoder
    return str(_LATEX.unicode_to_latex(text))


def _tex_url(text: str) -> str:
    """A DOI or URL: written as it is, but braces and backslashes would break the entry."""
    return text.replace("\\", "%5C").replace("{", "%7B").replace("}", "%7D")


def _tex_title(title: str) -> str:
    """The title encoded, braces around words whose capitals a style must not lower: any
    capital after a word's first letter (MSC, MSCs, Disc-Related), and a capital first letter
    except at the start of the title or after a colon (BibTeX's ``change.case$`` keeps those)."""
    out = []
    starts = True
    for word in title.split(" "):
        m = _WORD.match(word)
        lead, core, trail = (m["lead"], m["core"], m["trail"]) if m else ("", word, "")
        letters = [c for c in core if c.isalpha()]
        protect = bool(letters) and (
            any(c.isupper() for c in letters[1:]) or (letters[0].isupper() and not starts)
        )
        encoded = _tex(core)
        out.append(_tex(lead) + (f"{{{encoded}}}" if protect else encoded) + _tex(trail))
        starts = trail.endswith(":")
    return " ".join(out)


def _tex_part(text: str) -> str:
    encoded = _tex(text)
    # A bare "and" inside a name would split it into two authors.
    return f"{{{encoded}}}" if re.search(r"\band\b", text, re.IGNORECASE) else encoded


def _tex_name(person: PersonName) -> str:
    if person.literal:
        return f"{{{_tex(person.literal)}}}"
    family = _tex_part(person.family)
    if not person.given and not person.suffix:
        return f"{{{family}}}" if " " in person.family else family
    parts = [family, *([_tex_part(person.suffix)] if person.suffix else [])]
    if person.given:
        parts.append(_tex_part(person.given))
    return ", ".join(parts)


def _bibtex_entry(record: CitationRecord) -> Entry:
    fields: list[tuple[str, str | None]] = [
        ("author", " and ".join(_tex_name(a) for a in record.authors) or None),
        ("title", _tex_title(record.title) if record.title else None),
        ("journal", _tex(record.journal) if record.journal else None),
        ("howpublished", _tex(record.server) if record.server else None),
        ("year", str(record.year) if record.year else None),
        ("volume", _tex(record.volume) if record.volume else None),
        ("number", _tex(record.issue) if record.issue else None),
        ("pages", _tex(record.pages.replace("-", "--")) if record.pages else None),
        ("note", "Preprint" if record.kind == "preprint" else None),
        ("doi", _tex_url(record.doi) if record.doi else None),
        ("url", _tex_url(record.url) if record.url else None),
        ("pmid", _tex(record.pmid) if record.pmid else None),
        ("pmcid", _tex(record.pmcid) if record.pmcid else None),
        ("keywords", _tex(record.study_type) if record.study_type else None),
    ]
    entry_type = "article" if record.kind == "article" else "misc"
    return Entry(entry_type, record.key, [Field(k, v) for k, v in fields if v])


def to_bibtex(docs: Sequence[Document]) -> str:
    """A ``.bib`` file: one entry per document, in order."""
    library = Library([_bibtex_entry(r) for r in citation_records(docs)])
    layout = BibtexFormat()  # type: ignore[no-untyped-call]
    layout.indent = "  "
    layout.value_column = "auto"
    layout.trailing_comma = True
    layout.block_separator = "\n"
    return str(write_string(library, bibtex_format=layout))


# -- RIS ---------------------------------------------------------------------------------------

_RIS_TYPES: dict[Kind, str] = {"article": "JOUR", "preprint": "UNPB", "generic": "GEN"}


class _RisWriter(rispy.RisWriter):  # type: ignore[misc]
    """rispy's writer without the ``1.``, ``2.`` line it puts before each reference."""

    def set_header(self, count: int) -> str:
        return ""


def _ris_name(person: PersonName) -> str:
    if person.literal:
        return person.literal
    return ", ".join(p for p in (person.family, person.given, person.suffix) if p)


def _ris_entry(record: CitationRecord) -> dict[str, Any]:
    first, _, last = (record.pages or "").partition("-")
    values: list[tuple[str, Any]] = [
        ("type_of_reference", _RIS_TYPES[record.kind]),
        ("authors", [_ris_name(a) for a in record.authors]),
        ("title", record.title),
        ("secondary_title", record.journal),
        ("year", str(record.year) if record.year else None),
        ("volume", record.volume),
        ("number", record.issue),
        ("start_page", first or None),
        ("end_page", last or None),
        ("publisher", record.server),
        ("doi", record.doi),
        ("urls", [record.url] if record.url else []),
        ("accession_number", record.pmid),
        ("name_of_database", "PubMed" if record.pmid else None),
        ("custom2", record.pmcid if record.kind == "article" else None),
        ("keywords", [record.study_type] if record.study_type else []),
    ]
    return {k: v for k, v in values if v}


def to_ris(docs: Sequence[Document]) -> str:
    """An ``.ris`` file: one reference per document, in order, UTF-8."""
    entries = [_ris_entry(r) for r in citation_records(docs)]
    return str(rispy.dumps(entries, implementation=_RisWriter))


# -- CSL-JSON ----------------------------------------------------------------------------------

_CSL_TYPES: dict[Kind, str] = {
    "article": "article-journal",
    "preprint": "article",
    "generic": "document",
}


def _csl_name(person: PersonName) -> dict[str, str]:
    if person.literal:
        return {"literal": person.literal}
    parts = {"family": person.family, "given": person.given, "suffix": person.suffix}
    return {k: v for k, v in parts.items() if v}


def csl_item(record: CitationRecord) -> dict[str, Any]:
    """One CSL-JSON item (https://citeproc-js.readthedocs.io/en/latest/csl-json/markup.html)."""
    values: list[tuple[str, Any]] = [
        ("id", record.key),
        ("type", _CSL_TYPES[record.kind]),
        ("title", record.title),
        ("author", [_csl_name(a) for a in record.authors]),
        ("issued", {"date-parts": [[record.year]]} if record.year else None),
        ("container-title", record.journal),
        ("publisher", record.server),
        ("volume", record.volume),
        ("issue", record.issue),
        ("page", record.pages),
        ("DOI", record.doi),
        ("PMID", record.pmid),
        ("PMCID", record.pmcid),
        ("URL", record.url),
        ("keyword", record.study_type),
    ]
    return {k: v for k, v in values if v}


def to_csl_json(docs: Sequence[Document]) -> str:
    """A CSL-JSON file: an array with one item per document, in order, UTF-8."""
    items = [csl_item(r) for r in citation_records(docs)]
    return json.dumps(items, ensure_ascii=False, indent=2) + "\n"


# -- one entry point ---------------------------------------------------------------------------


def export(docs: Sequence[Document], fmt: CitationFormat) -> str:
    """The references of ``docs``, in order, as one file in ``fmt``."""
    if fmt == "bibtex":
        return to_bibtex(docs)
    if fmt == "ris":
        return to_ris(docs)
    if fmt == "csl-json":
        return to_csl_json(docs)
    raise ValueError(f"unknown citation format '{fmt}'; use one of: {', '.join(FORMATS)}")
