"""Lines in reading order -> headings, paragraphs and captions, and the reference list.

Headings come from the PDF outline when most of its entries are found on their pages, else
from fonts: a short line standing alone in a larger font, or bold at about the body size, or a
well-known section name ("Methods"). Larger fonts rank higher (level 2, 3, ...), numbering
("2.1") decides where present. Paragraphs break at a wider line gap, a first-line indent, a
font size change, a bullet, or after a short line ending a sentence in justified text; a
paragraph cut by a caption or footnote resumes after it. The reference list is found and split
by ``pdf_references``; line joining (hyphenation) is in ``pdf_lines``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from service.documents.pdf_layout import Line, body_size
from service.documents.pdf_lines import (
    CAPTION,
    SECTION,
    ends_sentence,
    gap_break,
    half,
    paragraph_text,
    pitches,
    words_of,
)
from service.documents.pdf_references import entries, reference_span

_BULLET = re.compile(r"^[•◦▪●○■□►▸‣∙·–-]\s")
_NUMBERED = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+\S")


@dataclass(frozen=True)
class PdfBlock:
    text: str  # one paragraph, heading or caption, whitespace-normalised, hyphenation joined
    level: int  # 0 = paragraph or caption; 2, 3, ... = section heading depth (2 = top level)
    page: int  # 1-based page the block starts on
    caption: bool = False  # a figure or table caption (kept as text)


@dataclass(frozen=True)
class OutlineEntry:
    title: str
    level: int  # 1 = top level, as pdfminer counts
    page: int


@dataclass
class _Block:
    lines: list[Line]
    level: int = 0
    group: int = -1
    caption: bool = False


def structure(lines: list[Line], outline: list[OutlineEntry]) -> tuple[list[PdfBlock], list[str]]:
    """Blocks in reading order, and the reference list's entries."""
    if not lines:
        return [], []
    body = body_size(lines)
    vocab = words_of(line.text for line in lines)
    headings = _outline_headings(lines, outline) or _font_headings(lines, body)
    references: list[str] = []
    start = end = len(lines)
    if (span := reference_span(lines)) is not None:
        start, first_entry, end = span
        references = entries(lines[first_entry:end], vocab)
    kept = [(line, headings.get(i)) for i, line in enumerate(lines) if not start <= i < end]
    return _paragraphs(kept, vocab), references


def _norm(text: str) -> str:
    text = re.sub(r"^\s*(?:\d+(?:\.\d+)*\.?|[IVX]+\.|[A-Z]\.)\s+", "", text)
    return re.sub(r"[\W_]+", "", text.casefold())


def _outline_headings(lines: list[Line], outline: list[OutlineEntry]) -> dict[int, tuple[int, int]]:
    """Lines matching the outline's entries on their page (or the next): index -> (level, id)."""
    by_page: dict[int, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        by_page[line.page].append(i)
    marks: dict[int, tuple[int, int]] = {}
    for number, entry in enumerate(outline):
        want = _norm(entry.title)
        found = _find_title(lines, by_page[entry.page], want, marks) or _find_title(
            lines, by_page[entry.page + 1], want, marks
        )
        marks.update({i: (entry.level, number) for i in found})
    matched = {group: level for level, group in marks.values()}
    if not matched or len(matched) < len(outline) / 2:
        return {}
    base = min(matched.values())
    return {i: (min(6, 2 + level - base), group) for i, (level, group) in marks.items()}


def _find_title(
    lines: list[Line], indices: list[int], want: str, taken: dict[int, tuple[int, int]]
) -> list[int]:
    if not want:
        return []
    for k, i in enumerate(indices):
        if i in taken:
            continue
        text = ""
        for n, j in enumerate(indices[k : k + 3], 1):
            text += _norm(lines[j].text)
            if text == want:
                return indices[k : k + n]
            if not want.startswith(text):
                break
    return []


def _heading_kind(line: Line, body: float) -> str | None:
    """What makes a line a heading line; a heading's first line must not start in lowercase
    nor its last end with "," (a line inside one may: "Routes, Dosage," | "and Frequency")."""
    text = line.text.strip()
    if sum(ch.isalpha() for ch in text) < 3 or len(text) > 200 or line.cells:
        return None
    if CAPTION.match(text):
        return None
    if SECTION.match(text):
        return "named"
    if _large(line, body):
        return "large"
    return "bold" if line.bold and line.size >= body - 1.5 else None


def _large(line: Line, body: float) -> bool:
    return line.size >= 1.12 * body and line.size >= body + 1


def _font_headings(lines: list[Line], body: float) -> dict[int, tuple[int, int]]:
    """Heading lines by font: index -> (level, id); one id per heading of up to three lines."""
    kinds = [_heading_kind(line, body) for line in lines]
    groups: list[list[int]] = []
    for i, kind in enumerate(kinds):
        if kind is None:
            continue
        prev = lines[i - 1] if i else None
        if (
            groups
            and groups[-1][-1] == i - 1
            and kinds[groups[-1][0]] in ("large", "bold")
            and (kind == kinds[i - 1] or kind == "named")  # "... Disability Index" | "Results"
            and prev is not None
            and prev.run == lines[i].run
            and prev.bold == lines[i].bold
            and abs(prev.size - lines[i].size) < 0.3
            and lines[i].top - prev.bottom < lines[i].size
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    accepted = []
    for group in groups:
        kind, first, last = kinds[group[0]], lines[group[0]], lines[group[-1]]
        words = sum(len(lines[i].text.split()) for i in group)
        nxt = lines[group[-1] + 1] if group[-1] + 1 < len(lines) else None
        if first.text.lstrip()[:1].islower() or last.text.rstrip()[-1:] in (",", ";"):
            continue
        if len(group) > 3 or words > (25 if kind == "large" else 15):
            continue
        if words > 12 and last.text.rstrip().endswith("."):
            continue  # a sentence in a larger or bold font, not a title
        if kind == "bold" and nxt is not None and nxt.run == last.run and nxt.text[:1].islower():
            continue  # a bold first line running on into its paragraph
        accepted.append(group)
    large = {half(lines[g[0]].size) for g in accepted if _large(lines[g[0]], body)}
    sizes = sorted(large, reverse=True)
    marks = {}
    for number, group in enumerate(accepted):
        first, kind = lines[group[0]], kinds[group[0]]
        if numbered := _NUMBERED.match(first.text):
            level = 2 + numbered.group(1).count(".")
        elif _large(first, body):
            level = 2 + sizes.index(half(first.size))
        elif kind == "named":
            level = 2
        else:
            level = 2 + len(sizes)
        marks.update({i: (min(level, 6), number) for i in group})
    return marks


def _starts_block(prev: Line, line: Line, block: _Block, pitch: dict[float, float]) -> bool:
    size = line.size
    if abs(line.size - prev.size) > max(0.6, 0.07 * prev.size) or _BULLET.match(line.text):
        return True
    if prev.run != line.run and (block.caption or CAPTION.match(line.text)):
        return True  # captions (floats) neither run on into nor out of another column
    if CAPTION.match(line.text) and ends_sentence(prev.text):
        return True
    if gap_break(prev, line, pitch):
        return True
    indent, prev_indent = line.x0 - line.left, prev.x0 - prev.left
    # A first-line indent after a line at the margin or a centred one (a display equation);
    # not after a line indented about as much (a list item's hanging lines, a quote).
    apart = prev.run != line.run or prev_indent < 0.5 * prev.size or prev_indent > 5 * size
    if 0.8 * size <= indent <= 5 * size and apart:
        return True
    if prev.run == line.run and len(block.lines) > 1 and line.x0 < prev.x0 - 0.8 * size:
        return True  # back out to the margin after an indented stretch (a list, a quote)
    short = prev.x1 < prev.right - max(1.5 * size, 0.05 * (prev.right - prev.left))
    return prev.justified and short and ends_sentence(prev.text)


def _resumes(block: _Block, line: Line) -> bool:
    """A line that carries on a body paragraph interrupted by a caption or footnote."""
    last = block.lines[-1]
    return (
        not CAPTION.match(line.text)
        and abs(line.size - last.size) < 0.3
        and line.x0 - line.left < 0.8 * line.size
        and not ends_sentence(last.text)
        and (line.text[:1].islower() or last.text.endswith("-"))
    )


def _aligned(a: Line, b: Line) -> bool:
    """Two table rows: wide gaps on both lines, one above the other (between two columns).
    A loosely justified line of prose, margin to margin, is not a table row."""
    if _loose_prose(a) or _loose_prose(b):
        return False
    return any(max(p, r) < min(q, s) for p, q in a.cells for r, s in b.cells)


def _loose_prose(line: Line) -> bool:
    return line.justified and line.x0 - line.left < 1 and line.right - line.x1 < 1.5


def _paragraphs(
    items: list[tuple[Line, tuple[int, int] | None]], vocab: Collection[str]
) -> list[PdfBlock]:
    pitch = pitches([line for line, _ in items])
    body = body_size([line for line, _ in items]) if items else 10.0
    blocks: list[_Block] = []
    current: _Block | None = None
    unfinished: _Block | None = None  # a body paragraph cut off by a caption or footnote
    prev: Line | None = None
    lines = [line for line, _ in items]
    table = [
        any(_aligned(line, lines[j]) for j in (i - 1, i + 1) if 0 <= j < len(lines))
        for i, line in enumerate(lines)
    ]
    for n, (line, mark) in enumerate(items):
        if mark is not None:
            if current is None or current.group != mark[1]:
                current = _Block([], level=mark[0], group=mark[1])
                blocks.append(current)
            current.lines.append(line)
            unfinished = None
        elif (
            current is None
            or prev is None
            or current.level
            or table[n] != table[n - 1]
            or _starts_block(prev, line, current, pitch)
        ):
            aside = (
                current is not None
                and not current.level
                and (current.caption or abs(current.lines[0].size - body) >= 0.6)
            )
            if aside and unfinished is not None and _resumes(unfinished, line):
                current, unfinished = unfinished, None
                current.lines.append(line)
            else:
                if current is not None and not current.level and not aside:
                    unfinished = current
                current = _Block([line], caption=bool(CAPTION.match(line.text)))
                blocks.append(current)
        else:
            current.lines.append(line)
        prev = line
    out = []
    for block in blocks:
        text = paragraph_text(block.lines, vocab)
        if any(ch.isalpha() for ch in text):
            out.append(PdfBlock(text, block.level, block.lines[0].page, block.caption))
    return out
