"""What the PDF reader's structure and reference steps share: joining lines, line spacing,
section names and caption labels.

A line-end hyphen is removed when the next line starts with a lowercase letter ("regen-" +
"eration"), unless the document spells the hyphenated compound elsewhere and never the joined
word ("structure-" + "property"); before an uppercase letter or a digit, or after an acronym, it
stays ("COVID-19", "HIV-positive").
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence

from service.documents.pdf_layout import Line

SECTION = re.compile(
    r"^(?:\d{1,2}(?:\.\d{1,2})*\.?\s+|[IVX]{1,4}\.\s+)?(?:abstract|summary|background|"
    r"introduction|(?:materials?|patients|subjects) and methods|methods?(?: and materials)?|"
    r"methodology|results?(?: and discussion)?|discussion|conclusions?|references|"
    r"bibliography|acknowledge?ments?|limitations|funding|appendix|supplementary "
    r"(?:materials?|information|data)|author contributions|conflicts? of interest|"
    r"competing interests|data availability(?: statement)?|abbreviations|keywords)\s*:?$",
    re.I,
)
CAPTION = re.compile(
    r"^(?:Supplementary\s+|Extended Data\s+)?(?:Figure|Fig\.?|FIGURE|FIG\.?|Table|TABLE|"
    r"Scheme|Chart)\s*S?\d+[A-Za-z]?(?:\s*[.:|]|\s+[A-Z(]|$)"
)
WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def join_lines(left: str, right: str, vocab: set[str]) -> str:
    """Join two lines of one paragraph, undoing line-end hyphenation (see the module doc)."""
    if not left or not right:
        return left or right
    if left.endswith("\u00ad"):  # a soft hyphen marks hyphenation
        return left[:-1] + right
    if left[-1] in "-\u2010" and len(left) > 1 and left[-2] != " ":
        head = re.search(r"([^\W\d_]*)[-\u2010]$", left)
        tail = WORD.match(right)
        if not (head and head.group(1) and tail and right[0].islower()) or (
            len(head.group(1)) > 1 and head.group(1).isupper()
        ):
            return left + right  # "COVID-19", "K.-R.", "HIV-positive": the hyphen stays
        word = tail.group(0).split("-")[0]
        whole, compound = f"{head.group(1)}{word}".casefold(), f"{head.group(1)}-{word}".casefold()
        if compound in vocab and whole not in vocab:
            return left + right
        return left[:-1] + right
    if left[-1] in "\u2013\u2014/" and left[-2:-1] != " ":  # dashes and URL paths run on
        return left + right
    return f"{left} {right}"


def half(size: float) -> float:
    return round(size * 2) / 2


def paragraph_text(lines: Sequence[Line], vocab: set[str]) -> str:
    text = ""
    for line in lines:
        text = join_lines(text, line.text, vocab)
    return " ".join(text.split())


def ends_sentence(text: str) -> bool:
    return bool(re.search(r"[.!?:][\"'”’)\]]*$", text.rstrip()))


def pitches(lines: Sequence[Line]) -> dict[float, float]:
    """Usual distance between the tops of consecutive lines in a paragraph, per font size."""
    seen: dict[float, list[float]] = defaultdict(list)
    for prev, line in itertools.pairwise(lines):
        dy = line.top - prev.top
        same = prev.run == line.run and abs(prev.size - line.size) < 0.3
        if same and 0.9 * line.size < dy < 2.5 * line.size:
            seen[half(line.size)].append(dy)
    # The lower quartile: in articles of short paragraphs, the gaps between them are common.
    return {size: sorted(dys)[len(dys) // 4] for size, dys in seen.items()}


def gap_break(prev: Line, line: Line, pitch: dict[float, float]) -> bool:
    if prev.run != line.run:
        return False
    dy = line.top - prev.top
    return dy > 1.3 * pitch.get(half(line.size), 1.2 * line.size) + 0.3 or dy < 0.3 * line.size
