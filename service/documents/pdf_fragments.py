"""Characters -> line fragments for the PDF reader.

A character joins a fragment while it sits on the fragment's baseline band and follows it
closely (content-stream order first; pieces the stream drew out of order are merged after). A
space goes where the gap between two characters is wider than ``SPACE_GAP`` of the font size:
pdfminer's own word spacing glues words on tightly set pages. Ligatures are spelled out and
TeX's spacing accents ("u¨") composed with their letter ("ü").
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

SPACE_GAP = 0.15  # ems: inter-word gaps in justified text are >= 0.17 em, kerns <= 0.11 em
FRAGMENT_GAP = 0.8  # ems: a wider gap ends a line fragment (column gutters, table cells)
_LIGATURES = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
_ACCENTS = {"¨": "\u0308", "´": "\u0301", "`": "\u0300", "ˆ": "\u0302", "˜": "\u0303",
            "¸": "\u0327", "ˇ": "\u030c", "˘": "\u0306", "˙": "\u0307", "˚": "\u030a",
            "˝": "\u030b", "¯": "\u0304"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Char:
    """One glyph as pdfplumber reports it (top-down coordinates, points)."""

    text: str
    x0: float
    x1: float
    top: float
    bottom: float
    size: float
    bold: bool


@dataclass(frozen=True)
class PageChars:
    number: int  # 1-based
    width: float
    height: float
    chars: list[Char]


class Fragment:
    """Characters on one baseline band, close together. While built it holds its characters;
    :meth:`finish` turns them into text and lets them go (300 pages hold a million)."""

    __slots__ = ("bold", "bottom", "chars", "ink", "main", "size", "text", "top", "x0", "x1")

    def __init__(self, c: Char) -> None:
        self.chars = [c]
        self.x0, self.x1, self.top, self.bottom, self.size = c.x0, c.x1, c.top, c.bottom, c.size
        self.text = self.main = ""
        self.ink = self.bold = 0

    @property
    def mid(self) -> float:
        return (self.top + self.bottom) / 2

    def same_row(self, other: Fragment) -> bool:
        return self.top <= other.mid <= self.bottom or other.top <= self.mid <= other.bottom

    def near(self, other: Fragment) -> bool:
        gap = max(self.x0, other.x0) - min(self.x1, other.x1)
        return gap <= FRAGMENT_GAP * max(self.size, other.size)

    def accepts(self, c: Char) -> bool:
        mid = (c.top + c.bottom) / 2
        slack = 0.1 * self.size
        if not self.top - slack <= mid <= self.bottom + slack:
            return False
        return -0.5 * self.size <= c.x0 - self.x1 <= FRAGMENT_GAP * max(self.size, c.size)

    def add(self, c: Char) -> None:
        self.chars.append(c)
        if not c.text.isspace():
            self._widen(c.x0, c.x1, c.top, c.bottom, c.size)

    def absorb(self, other: Fragment) -> None:
        self.chars.extend(other.chars)
        self._widen(other.x0, other.x1, other.top, other.bottom, other.size)

    def _widen(self, x0: float, x1: float, top: float, bottom: float, size: float) -> None:
        self.x0, self.x1 = min(self.x0, x0), max(self.x1, x1)
        if size > 1.25 * self.size:  # the band follows the main text, not footnote marks
            self.top, self.bottom, self.size = top, bottom, size
        elif size >= 0.8 * self.size:
            self.top, self.bottom = min(self.top, top), max(self.bottom, bottom)
            self.size = max(self.size, size)

    def finish(self) -> None:
        chars = _compose(sorted(self.chars, key=lambda c: c.x0))
        ink = [c for c in chars if not c.text.isspace()]
        self.size = Counter(round(c.size, 1) for c in ink).most_common(1)[0][0]
        self.text = _spaced(chars)
        self.main = _spaced([c for c in chars if c.size >= 0.8 * self.size or c.text.isspace()])
        self.ink, self.bold = len(ink), sum(c.bold for c in ink)
        self.chars = []


@dataclass(frozen=True)
class PageText:
    number: int
    width: float
    height: float
    fragments: list[Fragment]


def page_text(page: PageChars) -> PageText:
    """A page's characters as finished fragments: built in content-stream order, then merged
    where the stream jumped about."""
    frags: list[Fragment] = []
    seen: set[tuple[str, int, int]] = set()
    current: Fragment | None = None
    for c in page.chars:
        key = (c.text, round(c.x0), round(c.top))
        if key in seen:  # drawn twice (fake bold, shadows)
            continue
        seen.add(key)
        if current is not None and current.accepts(c):
            current.add(c)
        elif not c.text.isspace():
            current = Fragment(c)
            frags.append(current)
    frags.sort(key=lambda f: f.top)
    parent = list(range(len(frags)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(frags):
        for j in range(i + 1, min(len(frags), i + 200)):  # bounded on pathological pages
            b = frags[j]
            if b.top > a.bottom:
                break
            if a.same_row(b) and a.near(b):
                parent[root(j)] = root(i)
    merged = {i: f for i, f in enumerate(frags) if root(i) == i}
    for i, f in enumerate(frags):
        if root(i) != i:
            merged[root(i)].absorb(f)
    for f in merged.values():
        f.finish()
    return PageText(page.number, page.width, page.height, list(merged.values()))


def _compose(chars: list[Char]) -> list[Char]:
    """Ligatures spelled out; a spacing accent over a letter merged into it (``a¨`` -> ``ä``)."""
    out: list[Char] = []
    pending: Char | None = None  # an accent drawn before the letter it sits on
    for c in chars:
        if c.text in _ACCENTS:
            if pending is not None:
                out.append(pending)
            centre = (c.x0 + c.x1) / 2
            if out and out[-1].x0 <= centre <= out[-1].x1 and out[-1].text.isalpha():
                base = out[-1]
                out[-1] = Char(_accented(base.text, c.text), base.x0, base.x1, base.top,
                               base.bottom, base.size, base.bold)  # fmt: skip
                pending = None
            else:
                pending = c
            continue
        text = _LIGATURES.get(c.text, c.text)
        if pending is not None:
            if c.x0 <= (pending.x0 + pending.x1) / 2 <= c.x1 and text.isalpha():
                text = _accented(text, pending.text)
            else:
                out.append(pending)
            pending = None
        out.append(c if text == c.text else Char(text, c.x0, c.x1, c.top, c.bottom, c.size, c.bold))
    return [*out, pending] if pending is not None else out


def _accented(base: str, accent: str) -> str:
    base = {"ı": "i", "ȷ": "j"}.get(base, base)
    return unicodedata.normalize("NFC", base + _ACCENTS[accent])


def _spaced(chars: list[Char]) -> str:
    """Text of x-sorted characters, with a space at each wide gap."""
    parts: list[str] = []
    prev: Char | None = None
    space = False
    for c in chars:
        if c.text.isspace():
            space = prev is not None
            continue
        if prev is not None and (space or c.x0 - prev.x1 > SPACE_GAP * min(c.size, prev.size)):
            parts.append(" ")
        parts.append(c.text)
        prev, space = c, False
    return "".join(parts)
