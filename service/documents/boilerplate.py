"""Imported pages: split into articles at their ``Source:`` lines, drop paragraphs that
repeat within or across files (navigation, newsletter, sign-up blocks), make documents."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.documents.blocks import Block, render_markdown, slug
from service.documents.records import Document
from service.documents.references import Reference, infer_study_type, is_reference, parse_reference

REFERENCE_HEADING = "Reference"


@dataclass
class RawArticle:
    path: str
    blocks: list[Block]
    reference: Reference | None = None


def split_articles(path: str, blocks: list[Block]) -> list[RawArticle]:
    """Split at ``Source:`` paragraphs: each article ends with its reference.

    Text after the last reference belongs to no article (page footer) and is dropped.
    """
    if not any(b.level == 0 and is_reference(b.text) for b in blocks):
        return [RawArticle(path, blocks)]
    articles: list[RawArticle] = []
    current: list[Block] = []
    for block in blocks:
        if block.level == 0 and is_reference(block.text):
            if current:
                # The first line of each article is its title.
                current[0] = Block(current[0].text, 1)
                articles.append(RawArticle(path, current, parse_reference(block.text)))
            current = []
        else:
            current.append(block)
    return articles


def _key(block: Block) -> str:
    return re.sub(r"\W+", " ", block.text.casefold()).strip()


def remove_boilerplate(articles: Sequence[RawArticle]) -> None:
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


def _article_to_document(article: RawArticle, fallback_id: str) -> Document:
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
        doc_id = f"{slug(surname)}-{ref.year}"
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


def import_articles(articles: list[RawArticle]) -> list[Document]:
    """Turn raw articles (already split) into documents, removing shared boilerplate."""
    remove_boilerplate(articles)
    docs = []
    per_file: Counter[str] = Counter(a.path for a in articles)
    seen: Counter[str] = Counter()
    for article in articles:
        seen[article.path] += 1
        stem = slug(Path(article.path).stem, 12)
        fallback = stem if per_file[article.path] == 1 else f"{stem}-{seen[article.path]}"
        docs.append(_article_to_document(article, fallback))
    return docs
