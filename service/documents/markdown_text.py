"""Markdown files: ``#`` headings and paragraphs."""

from __future__ import annotations

import re

from service.documents.blocks import Block

MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def blocks_from_markdown(text: str, *, first_line_is_title: bool = True) -> list[Block]:
    """Headings and paragraphs; without a heading first, the first line is the title."""
    blocks: list[Block] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line for line in para.split("\n") if line.strip()]
        buffer: list[str] = []
        for line in lines:
            if m := MD_HEADING.match(line):
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
