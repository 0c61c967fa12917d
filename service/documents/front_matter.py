"""Curated Markdown: YAML front matter with the citation, then the article."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.documents.blocks import normalize_text, render_markdown, slug
from service.documents.markdown_text import blocks_from_markdown
from service.documents.records import CorpusFileError, Document
from service.documents.references import is_reference, parse_reference

#: A PDF's metadata file, with the fields of :class:`FrontMatter`: paper.pdf + paper.yml.
SIDECAR_SUFFIXES = (".yml", ".yaml")


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


def curated_document(meta: dict[str, Any], body: str, path: str) -> Document:
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CorpusFileError(f"front matter field '{where}': {err['msg']}") from None
    # With a declared title the body may start straight with a paragraph: keep it.
    blocks = blocks_from_markdown(normalize_text(body), first_line_is_title=not fm.title)
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
        id=fm.id or slug(Path(path).stem, 12),
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
