"""Plain-text files: paragraphs, with heading-like lines as headings."""

from __future__ import annotations

from service.documents.blocks import Block, looks_like_heading, paragraphs


def blocks_from_plain(text: str) -> list[Block]:
    blocks = []
    for i, para in enumerate(paragraphs(text)):
        level = 1 if i == 0 else (2 if looks_like_heading(para) else 0)
        blocks.append(Block(para, level))
    return blocks
