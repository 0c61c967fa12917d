"""The records a corpus load produces: documents, skipped files, and why."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
