"""The records a corpus load produces: documents, skipped files, and why."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field

from service.documents.names import split_name


@dataclass(frozen=True)
class PageSpan:
    """The first and last page of a passage (the same page for most)."""

    first: int
    last: int

    @property
    def label(self) -> str:
        """The page label a reference list writes: p. 4, or pp. 4-5."""
        return f"p. {self.first}" if self.first == self.last else f"pp. {self.first}-{self.last}"


def pages_label(spans: list[PageSpan]) -> str | None:
    """One label for several passages' pages, overlaps merged: "p. 4", "pp. 4-5, 7"."""
    pages = sorted({n for span in spans for n in range(span.first, span.last + 1)})
    if not pages:
        return None
    runs: list[list[int]] = []
    for n in pages:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return ("p. " if len(pages) == 1 else "pp. ") + ", ".join(parts)


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
    #: Where each page of a paged source (a PDF) starts in ``text``: page n at ``pages[n - 1]``.
    #: Empty for formats without pages.
    pages: tuple[int, ...] = ()

    @property
    def content_hash(self) -> str:
        """Hash of everything that ends up in the index for this document."""
        meta = "\x1f".join(
            str(v)
            for v in (self.id, self.title, self.authors, self.year, self.journal, self.doi,
                      self.pmid, self.pmcid, self.url, self.study_type, self.source_title,
                      self.reference, self.path)
        )  # fmt: skip
        if self.pages:  # only then, so documents without pages keep their hash
            meta += "\x1f" + ",".join(map(str, self.pages))
        return hashlib.sha256(f"{meta}\x1e{self.text}".encode()).hexdigest()

    def page_span(self, start: int, end: int) -> PageSpan | None:
        """The pages that the text ``[start, end)`` comes from; None without pages."""
        if not self.pages:
            return None
        first = max(1, bisect_right(self.pages, start))
        last = max(first, bisect_right(self.pages, max(start, end - 1)))
        return PageSpan(first, last)

    def page_range(self, page: int) -> tuple[int, int] | None:
        """Offsets of page ``page`` (1-based) in ``text``; None when there is no such page."""
        if not 1 <= page <= len(self.pages):
            return None
        end = self.pages[page] if page < len(self.pages) else len(self.text)
        return self.pages[page - 1], end

    @property
    def short_label(self) -> str:
        """How a reader names the study in passing: "Zhang et al. 2023", "Ames 2021", or the
        title when there are no authors."""
        if not self.authors:
            name = self.title if len(self.title) <= 60 else self.title[:57].rstrip() + "..."
        else:
            name = _family(self.authors[0])
            if len(self.authors) == 2:
                name += f" and {_family(self.authors[1])}"
            elif len(self.authors) > 2:
                name += " et al."
        return f"{name} {self.year}" if self.year else name

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


def _family(author: str) -> str:
    """The family name a reader cites an author by ("Zhang W" -> "Zhang"; a group: whole)."""
    person = split_name(author)
    if person is None:
        return author
    return person.literal or person.family
