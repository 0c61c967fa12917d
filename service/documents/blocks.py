"""Text as blocks (headings and paragraphs): normalising, headings, canonical Markdown."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from service.documents.references import is_reference


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


def paragraphs(text: str) -> list[str]:
    return [re.sub(r"\s*\n\s*", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def looks_like_heading(paragraph: str) -> bool:
    """A plain-text paragraph that reads as a section heading rather than prose."""
    if "\n" in paragraph or len(paragraph) > 120 or len(paragraph.split()) > 16:
        return False
    if paragraph[-1] in ".!?:;,\"'”’)" or is_reference(paragraph):
        return False
    return paragraph[0].isupper() or paragraph[0].isdigit()


def slug(text: str, max_words: int = 6) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words[:max_words]) or "document"


def render_markdown(title: str, blocks: Iterable[Block]) -> str:
    """Canonical document text: ``# Title``, then ``## Heading`` sections and paragraphs."""
    parts = [f"# {title}"]
    for block in blocks:
        parts.append(f"{'#' * max(block.level, 2)} {block.text}" if block.level else block.text)
    return "\n\n".join(parts) + "\n"
