"""HTML pages: headings and paragraphs, without scripts, navigation or forms."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import ClassVar

from service.documents.blocks import Block, normalize_text


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


def blocks_from_html(text: str) -> list[Block]:
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
