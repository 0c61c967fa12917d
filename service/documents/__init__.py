"""Corpus files -> :class:`Document` records.

A corpus folder holds ``.md`` (with or without YAML front matter), ``.txt`` and ``.html`` files.
Curated Markdown files carry their citation in front matter. Anything else is imported: the title
comes from the first heading or line, a trailing ``Source:`` reference is parsed for authors, year,
journal, DOI, PMID and PMCID, and paragraphs that repeat within or across imported files
(navigation, newsletter and sign-up blocks) are dropped. One exported web page may hold several
articles, each ending in its own ``Source:`` line; each becomes a document.

Bad files never stop a load: each is skipped with a :class:`LoadProblem` naming file and reason.

One module per part: ``records`` (what a load produces), ``references`` (``Source:`` lines and
the study type), ``blocks`` (headings and paragraphs), one per format (``plain_text``,
``markdown_text``, ``html_text``; a PDF reader goes beside them), ``front_matter`` (curated
files), ``boilerplate`` (splitting imported pages into articles, dropping repeated blocks) and
``loader`` (the folder).
"""

from service.documents.front_matter import split_front_matter
from service.documents.loader import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, load_corpus, read_text_file
from service.documents.records import (
    CorpusFileError,
    CorpusLoad,
    Document,
    LoadProblem,
    PageSpan,
    pages_label,
)
from service.documents.references import Reference, infer_study_type, parse_reference

__all__ = [
    "MAX_FILE_BYTES",
    "SUPPORTED_SUFFIXES",
    "CorpusFileError",
    "CorpusLoad",
    "Document",
    "LoadProblem",
    "PageSpan",
    "Reference",
    "infer_study_type",
    "load_corpus",
    "pages_label",
    "parse_reference",
    "read_text_file",
    "split_front_matter",
]
