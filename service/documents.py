"""Corpus files -> :class:`Document` records.

A corpus folder holds ``.md`` (with or without YAML front matter), ``.txt`` and ``.html`` files.
Curated Markdown files carry their citation in front matter. Anything else is imported: the title
comes from the first heading or line, a trailing ``Source:`` reference is parsed for authors, year,
journal, DOI, PMID and PMCID, and paragraphs that repeat within or across imported files
(navigation, newsletter and sign-up blocks) are dropped. One exported web page may hold several
articles, each ending in its own ``Source:`` line; each becomes a document.

Bad files never stop a load: each is skipped with a :class:`LoadProblem` naming file and reason.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
MAX_FILE_BYTES = 20 * 1024 * 1024
REFERENCE_HEADING = "Reference"


@dataclass(frozen=True)
class Document:
    """One article: its citation metadata and its Markdown text (headings as ``#`` lines)."""

    id: str
    title: str
    text: str
    authors: tuple[str, ...] = ()
    year: int | None = None
    journal: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None
    url: str | None = None
    study_type: str | None = None
    source_title: str | None = None
    reference: str | None = None
    path: str = ""

    @property
    def content_hash(self) -> str:
        """Hash of everything that ends up in the index for this document."""
        meta = "\x1f".join(
            str(v)
            for v in (self.id, self.title, self.authors, self.year, self.journal, self.doi,
                      self.pmid, self.pmcid, self.url, self.study_type, self.source_title,
                      self.reference, self.path)
        )  # fmt: skip
        return hashlib.sha256(f"{meta}\x1e{self.text}".encode()).hexdigest()

    @property
    def pubmed_url(self) -> str | None:
        return f"https://pubmed.ncbi.nlm.nih.gov/{self.pmid}/" if self.pmid else None


@dataclass(frozen=True)
class LoadProblem:
    """A corpus file that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: skipped: {self.reason}"


@dataclass
class CorpusLoad:
    documents: list[Document] = field(default_factory=list)
    problems: list[LoadProblem] = field(default_factory=list)


class CorpusFileError(ValueError):
    """A corpus file that cannot be used; the message is the reason shown to the user."""


# ---------------------------------------------------------------------------------------------
# Citation references ("Source: ...")


@dataclass(frozen=True)
class Reference:
    text: str
    authors: tuple[str, ...] = ()
    year: int | None = None
    source_title: str | None = None
    journal: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None

    @property
    def url(self) -> str | None:
        return f"https://doi.org/{self.doi}" if self.doi else None


_REFERENCE_PREFIX = re.compile(r"^(?:source|reference|citation)s?\s*:\s*", re.IGNORECASE)
_DOI = re.compile(r"(?:\bdoi:\s*|https?://(?:dx\.)?doi\.org/)(10\.\d{4,9}/\S+)", re.IGNORECASE)
_PMID = re.compile(r"\bPMID:\s*(\d+)")
_PMCID = re.compile(r"\bPMCID:\s*(PMC\d+)")
# APA: "Zhang, W., Wang, D., & Li, J. (2023). Title. Journal, 11, 1155357."
_APA = re.compile(r"^(?P<authors>.+?)\s*\((?P<year>\d{4})[a-z]?\)\.\s*(?P<rest>.+)$")
_APA_AUTHOR = re.compile(r"([^\s,&][^,&]*?),\s*((?:[A-Z][a-z]?\.\s*-?\s*)+)")
# NLM/PubMed: "Li M, Huang H. Title. Journal Abbrev. 2025 Jun 4;10(1):179. doi: ..."
_NLM = re.compile(
    r"^(?P<authors>[^.]+)\.\s+(?P<title>.+?[.?!])\s+(?P<journal>[^.;]+?)\.\s+(?P<year>\d{4})\b"
)


def is_reference(paragraph: str) -> bool:
    return bool(_REFERENCE_PREFIX.match(paragraph))


def parse_reference(paragraph: str) -> Reference:
    """Parse a ``Source:`` line in APA or NLM (PubMed) style; unknown parts stay ``None``."""
    text = _REFERENCE_PREFIX.sub("", paragraph.strip(), count=1).strip()
    doi_match = _DOI.search(text)
    doi = doi_match.group(1).rstrip(".;,)") if doi_match else None
    pmid = m.group(1) if (m := _PMID.search(text)) else None
    pmcid = m.group(1) if (m := _PMCID.search(text)) else None

    authors: tuple[str, ...] = ()
    year: int | None = None
    title: str | None = None
    journal: str | None = None
    if apa := _APA.match(text):
        year = int(apa.group("year"))
        authors = tuple(
            f"{surname.strip()} {initials.replace('.', '').replace(' ', '')}"
            for surname, initials in _APA_AUTHOR.findall(apa.group("authors"))
        )
        parts = re.split(r"(?<=[.?!])\s+", apa.group("rest"), maxsplit=1)
        title = parts[0].rstrip(".")
        if len(parts) > 1:
            journal = re.split(r"[,.]", parts[1], maxsplit=1)[0].strip() or None
    elif nlm := _NLM.match(text):
        year = int(nlm.group("year"))
        authors = tuple(
            a.strip()
            for a in nlm.group("authors").split(",")
            if a.strip() and a.strip().lower() not in ("et al", "et al.")
        )
        title = nlm.group("title").rstrip(".")
        journal = nlm.group("journal").strip()
    else:
        if m := re.search(r"\b(19|20)\d{2}\b", text):
            year = int(m.group(0))
    return Reference(text, authors, year, title, journal, doi, pmid, pmcid)


def infer_study_type(source_title: str | None, text: str) -> str | None:
    """Best guess at the kind of study, from the cited title first and then the text."""
    cited = (source_title or "").lower()
    if "meta-analysis" in cited or "meta analysis" in cited:
        return (
            "systematic review and meta-analysis"
            if "systematic review" in cited
            else "meta-analysis"
        )
    for kind in ("scoping review", "systematic review", "umbrella review"):
        if kind in cited:
            return kind
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        lowered = sentence.lower()
        trial = re.search(
            r"\bphase\s+(i{1,3}v?|[1-4])(?:/(?:i{1,3}|[1-4]))?\b[^.]*\btrial\b", lowered
        )
        if trial:
            phase = trial.group(1).upper()
            randomized = "randomized " if re.search(r"\brandomi[sz]ed\b", lowered) else ""
            preclinical = re.search(r"\b(mouse|mice|rat|animal|preclinical)\b", text.lower())
            suffix = " with preclinical models" if preclinical else ""
            return f"phase {phase} {randomized}trial{suffix}"
    if "review" in cited or re.search(r"\b(this|the) review\b", text.lower()):
        return "narrative review"
    return None


# ---------------------------------------------------------------------------------------------
# Front matter


class FrontMatter(BaseModel):
    """Metadata a curated Markdown file may declare in YAML front matter."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    title: str | None = None
    authors: list[str] = Field(default_factory=list)
    year: int | None = None
    journal: str | None = None
    doi: str | None = None
    pmid: str | None = None
    pmcid: str | None = None
    url: str | None = None
    study_type: str | None = None
    source_title: str | None = None
    reference: str | None = None

    @field_validator("authors", mode="before")
    @classmethod
    def _split_authors(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [a.strip() for a in re.split(r";|\band\b", value) if a.strip()]
        return value

    @field_validator("pmid", "pmcid", "doi", "id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(?:(.*?)\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict[str, Any] | None, str]:
    """Return (front matter mapping or None, body). Raises CorpusFileError if it does not parse."""
    match = _FRONT_MATTER.match(text)
    if not match:
        if text.startswith("---\n"):
            raise CorpusFileError("front matter does not parse: no closing '---' line")
        return None, text
    try:
        data = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CorpusFileError(f"front matter does not parse: {problem}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CorpusFileError("front matter does not parse: expected 'key: value' lines")
    return data, text[match.end() :]


# ---------------------------------------------------------------------------------------------
# Text normalisation and blocks


@dataclass(frozen=True)
class Block:
    """A paragraph or heading of an imported file (``level`` 0 = paragraph)."""

    text: str
    level: int = 0


def normalize_text(text: str) -> str:
    """Unify line ends and spaces without touching words, numbers or symbols."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u200b", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    return "\n".join(line.strip() for line in text.split("\n"))


def _paragraphs(text: str) -> list[str]:
    return [re.sub(r"\s*\n\s*", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def looks_like_heading(paragraph: str) -> bool:
    """A plain-text paragraph that reads as a section heading rather than prose."""
    if "\n" in paragraph or len(paragraph) > 120 or len(paragraph.split()) > 16:
        return False
    if paragraph[-1] in ".!?:;,\"'”’)" or is_reference(paragraph):
        return False
    return paragraph[0].isupper() or paragraph[0].isdigit()


def _blocks_from_plain(text: str) -> list[Block]:
    blocks = []
    for i, para in enumerate(_paragraphs(text)):
        level = 1 if i == 0 else (2 if looks_like_heading(para) else 0)
        blocks.append(Block(para, level))
    return blocks


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _blocks_from_markdown(text: str, *, first_line_is_title: bool = True) -> list[Block]:
    """Headings and paragraphs; without a heading first, the first line is the title."""
    blocks: list[Block] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line for line in para.split("\n") if line.strip()]
        buffer: list[str] = []
        for line in lines:
            if m := _MD_HEADING.match(line):
                if buffer:
                    blocks.append(Block(" ".join(buffer)))
                    buffer = []
                blocks.append(Block(m.group(2).strip(), len(m.group(1))))
            else:
                buffer.append(line.strip())
        if buffer:
            blocks.append(Block(" ".join(buffer)))
    if first_line_is_title and blocks and blocks[0].level == 0:
        blocks[0] = Block(blocks[0].text, 1)
    return blocks


class _HTMLBlocks(HTMLParser):
    SKIP: ClassVar[frozenset[str]] = frozenset(
        [
            "script",
            "style",
            "nav",
            "header",
            "footer",
            "aside",
            "form",
            "noscript",
            "template",
            "svg",
            "button",
            "select",
            "iframe",
        ]
    )
    BLOCK: ClassVar[frozenset[str]] = frozenset(
        [
            "p",
            "div",
            "li",
            "td",
            "th",
            "blockquote",
            "section",
            "article",
            "main",
            "br",
            "tr",
            "ul",
            "ol",
            "table",
            "figcaption",
            "dd",
            "dt",
            "pre",
            "body",
        ]
    )
    HEADINGS: ClassVar[dict[str, int]] = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.title: str | None = None
        self._buffer: list[str] = []
        self._skip_depth = 0
        self._level = 0
        self._in_title = False

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._buffer)).strip()
        self._buffer = []
        if text:
            self.blocks.append(Block(text, self._level))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.HEADINGS:
            self._flush()
            self._level = self.HEADINGS[tag]
        elif tag in self.BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.HEADINGS:
            self._flush()
            self._level = 0
        elif tag in self.BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data
        elif not self._skip_depth:
            self._buffer.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def _blocks_from_html(text: str) -> list[Block]:
    parser = _HTMLBlocks()
    parser.feed(text)
    parser.close()
    blocks = [Block(normalize_text(html.unescape(b.text)).strip(), b.level) for b in parser.blocks]
    blocks = [b for b in blocks if b.text]
    if blocks and not any(b.level == 1 for b in blocks[:1]):
        title = (parser.title or "").strip()
        blocks.insert(0, Block(title, 1)) if title else None
        if not title:
            blocks[0] = Block(blocks[0].text, 1)
    # Deeper headings become level 2 so every imported section is a "##" section.
    return [Block(b.text, 2 if b.level > 1 else b.level) for b in blocks]


# ---------------------------------------------------------------------------------------------
# Articles and boilerplate


@dataclass
class _RawArticle:
    path: str
    blocks: list[Block]
    reference: Reference | None = None


def _split_articles(path: str, blocks: list[Block]) -> list[_RawArticle]:
    """Split at ``Source:`` paragraphs: each article ends with its reference.

    Text after the last reference belongs to no article (page footer) and is dropped.
    """
    if not any(b.level == 0 and is_reference(b.text) for b in blocks):
        return [_RawArticle(path, blocks)]
    articles: list[_RawArticle] = []
    current: list[Block] = []
    for block in blocks:
        if block.level == 0 and is_reference(block.text):
            if current:
                # The first line of each article is its title.
                current[0] = Block(current[0].text, 1)
                articles.append(_RawArticle(path, current, parse_reference(block.text)))
            current = []
        else:
            current.append(block)
    return articles


def _key(block: Block) -> str:
    return re.sub(r"\W+", " ", block.text.casefold()).strip()


def remove_boilerplate(articles: Sequence[_RawArticle]) -> None:
    """Drop paragraphs that repeat within or across imported articles, in place.

    An immediate repeat (a page title echoed as its first heading) collapses to one copy.
    Any other paragraph seen more than once is boilerplate. A repeated short heading is kept
    only while it introduces real content (two articles may both have a "Conclusion").
    """
    for article in articles:
        collapsed: list[Block] = []
        for block in article.blocks:
            if collapsed and _key(collapsed[-1]) == _key(block):
                if block.level and not collapsed[-1].level:
                    collapsed[-1] = block
                continue
            collapsed.append(block)
        # "Title" then the same text promoted to a heading by the importer.
        if (
            len(collapsed) > 1
            and (collapsed[0].level, collapsed[1].level) == (1, 2)
            and _key(collapsed[0]) == _key(collapsed[1])
        ):
            del collapsed[1]
        article.blocks = collapsed

    counts = Counter(_key(b) for article in articles for b in article.blocks)
    # In how many articles each paragraph occurs: a title is boilerplate only when it is shared
    # and introduces nothing of its own (a sign-up block after each "Source:" line would
    # otherwise become the next article's title).
    spread = Counter(k for article in articles for k in {_key(b) for b in article.blocks})
    for article in articles:
        kept: list[Block] = []
        blocks = article.blocks
        for i, block in enumerate(blocks):
            is_title = i == 0 and block.level == 1
            if counts[_key(block)] < 2 or (is_title and spread[_key(block)] < 2):
                kept.append(block)
                continue
            if block.level:
                following = next((b for b in blocks[i + 1 :] if counts[_key(b)] < 2), None)
                nxt = blocks[i + 1] if i + 1 < len(blocks) else None
                if nxt is not None and nxt is following and nxt.level == 0:
                    kept.append(block)
        if blocks and blocks[0].level == 1 and kept and kept[0] is not blocks[0] and kept[0].level:
            # The title was boilerplate: the first remaining heading is the article's title.
            kept[0] = Block(kept[0].text, 1)
        article.blocks = kept


def _slug(text: str, max_words: int = 6) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words[:max_words]) or "document"


def render_markdown(title: str, blocks: Iterable[Block]) -> str:
    """Canonical document text: ``# Title``, then ``## Heading`` sections and paragraphs."""
    parts = [f"# {title}"]
    for block in blocks:
        parts.append(f"{'#' * max(block.level, 2)} {block.text}" if block.level else block.text)
    return "\n\n".join(parts) + "\n"


def _article_to_document(article: _RawArticle, fallback_id: str) -> Document:
    blocks = list(article.blocks)
    if blocks and blocks[0].level == 1:
        title = blocks.pop(0).text
    elif blocks:
        title = blocks[0].text if len(blocks[0].text) <= 200 else Path(article.path).stem
    else:
        title = Path(article.path).stem
    body_blocks = [Block(b.text, 2 if b.level == 1 else b.level) for b in blocks]
    ref = article.reference
    if ref is not None:
        # The reference stays readable (and searchable: "which journal published ...").
        body_blocks += [Block(REFERENCE_HEADING, 2), Block(f"Source: {ref.text}")]
    text = render_markdown(title, body_blocks)
    if ref and ref.authors and ref.year:
        surname = ref.authors[0].rsplit(" ", 1)[0] if " " in ref.authors[0] else ref.authors[0]
        doc_id = f"{_slug(surname)}-{ref.year}"
    else:
        doc_id = fallback_id
    prose = " ".join(b.text for b in body_blocks if not b.level and not is_reference(b.text))
    return Document(
        id=doc_id,
        title=title,
        text=text,
        authors=ref.authors if ref else (),
        year=ref.year if ref else None,
        journal=ref.journal if ref else None,
        doi=ref.doi if ref else None,
        pmid=ref.pmid if ref else None,
        pmcid=ref.pmcid if ref else None,
        url=ref.url if ref else None,
        study_type=infer_study_type(ref.source_title if ref else None, prose),
        source_title=ref.source_title if ref else None,
        reference=ref.text if ref else None,
        path=article.path,
    )


def _curated_document(meta: dict[str, Any], body: str, path: str) -> Document:
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CorpusFileError(f"front matter field '{where}': {err['msg']}") from None
    # With a declared title the body may start straight with a paragraph: keep it.
    blocks = _blocks_from_markdown(normalize_text(body), first_line_is_title=not fm.title)
    ref = parse_reference(fm.reference) if fm.reference else None
    if blocks and blocks[-1].level == 0 and is_reference(blocks[-1].text):
        ref = ref or parse_reference(blocks[-1].text)
    if not blocks:
        raise CorpusFileError("no text after the front matter")
    title = fm.title or (blocks[0].text if blocks[0].level == 1 else Path(path).stem)
    if blocks[0].level == 1:
        blocks = blocks[1:]
    doi = fm.doi or (ref.doi if ref else None)
    return Document(
        id=fm.id or _slug(Path(path).stem, 12),
        title=title,
        text=render_markdown(title, blocks),
        authors=tuple(fm.authors) or (ref.authors if ref else ()),
        year=fm.year or (ref.year if ref else None),
        journal=fm.journal or (ref.journal if ref else None),
        doi=doi,
        pmid=fm.pmid or (ref.pmid if ref else None),
        pmcid=fm.pmcid or (ref.pmcid if ref else None),
        url=fm.url or (f"https://doi.org/{doi}" if doi else None),
        study_type=fm.study_type,
        source_title=fm.source_title or (ref.source_title if ref else None),
        reference=fm.reference or (ref.text if ref else None),
        path=path,
    )


def read_text_file(path: Path) -> str:
    """Read a corpus file as UTF-8 text, or raise CorpusFileError saying what is wrong."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise CorpusFileError(f"file is too large ({size:,} bytes; limit {MAX_FILE_BYTES:,})")
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


def load_corpus(corpus_dir: Path) -> CorpusLoad:
    """Load every supported file under ``corpus_dir`` (sorted by path), skipping bad ones."""
    result = CorpusLoad()
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus_dir} does not exist")
    curated: list[Document] = []
    imported: list[_RawArticle] = []
    origins: list[Path] = []
    for path in sorted(p for p in corpus_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(corpus_dir).as_posix()
        if any(part.startswith(".") for part in path.relative_to(corpus_dir).parts):
            continue
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            if path.name.lower() not in {"readme", "license"}:
                result.problems.append(
                    LoadProblem(rel, f"unsupported file type '{path.suffix or path.name}'")
                )
            continue
        try:
            text = read_text_file(path)
            if path.suffix.lower() in (".md", ".markdown"):
                meta, body = split_front_matter(normalize_text(text))
                if meta is not None:
                    curated.append(_curated_document(meta, body, rel))
                    continue
                blocks = _blocks_from_markdown(normalize_text(text))
            elif path.suffix.lower() in (".html", ".htm"):
                blocks = _blocks_from_html(text)
            else:
                blocks = _blocks_from_plain(normalize_text(text))
            if not blocks:
                raise CorpusFileError("no text found")
            imported.extend(_split_articles(rel, blocks))
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
        if not any(line.strip() and not _MD_HEADING.match(line) for line in doc.text.split("\n")):
            result.problems.append(LoadProblem(doc.path, "no text besides the title"))
            continue
        seen[doc.id] = doc
        result.documents.append(doc)
    return result


def _same_article(a: Document, b: Document) -> bool:
    if a.doi and b.doi:
        return a.doi.casefold() == b.doi.casefold()
    return _slug(a.title, 40) == _slug(b.title, 40)


def _free_id(doc_id: str, taken: Collection[str]) -> str:
    """``li-2025`` -> ``li-2025b`` (then ``c``, ...), as author-year citations do."""
    for suffix in "bcdefghijklmnopqrstuvwxyz":
        if f"{doc_id}{suffix}" not in taken:
            return f"{doc_id}{suffix}"
    n = 2
    while f"{doc_id}-{n}" in taken:
        n += 1
    return f"{doc_id}-{n}"


def import_articles(articles: list[_RawArticle]) -> list[Document]:
    """Turn raw articles (already split) into documents, removing shared boilerplate."""
    remove_boilerplate(articles)
    docs = []
    per_file: Counter[str] = Counter(a.path for a in articles)
    seen: Counter[str] = Counter()
    for article in articles:
        seen[article.path] += 1
        stem = _slug(Path(article.path).stem, 12)
        fallback = stem if per_file[article.path] == 1 else f"{stem}-{seen[article.path]}"
        docs.append(_article_to_document(article, fallback))
    return docs


def import_text(text: str, path: str = "page.txt") -> list[Document]:
    """Import one plain-text page (possibly holding several articles) into documents."""
    blocks = _blocks_from_plain(normalize_text(text))
    return import_articles(_split_articles(path, blocks))


def with_path(doc: Document, path: str) -> Document:
    return replace(doc, path=path)
