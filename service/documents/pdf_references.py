"""The reference list: where it starts and ends, and its entries.

It starts at a "References" ("Bibliography", "Literature cited") line, or, with no such
heading, at entry 1 of a run of numbered entries that mostly carry a year. It ends at a heading
that is clearly something else ("Appendix", "Supplementary material", "Figure legends") or at
a caption; what follows goes back to the text. Entries split at their numbers ([1], (1), 1.)
counted up one by one, else at hanging indents or line gaps.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Collection, Sequence

from service.documents.pdf_layout import Line
from service.documents.pdf_lines import SECTION, ends_sentence, gap_break, paragraph_text, pitches

_REFERENCES = re.compile(
    r"^(?:\d{1,2}\.?\s*)?(?:references?(?: and notes)?|bibliography|literature cited|"
    r"works cited|cited literature|reference list)\s*:?$",
    re.I,
)
_AFTER_REFERENCES = re.compile(
    r"^(?:[A-Z\d]{1,2}(?:\.\d+)*\.?\s+)?(?:appendi(?:x|ces)|supplement|supporting information|"
    r"acknowledge?ments?|funding|authors?['’]? contributions|conflicts? of interest|"
    r"competing interests|declarations?|data availability|abbreviations|figure legends|"
    r"figures|tables|about the authors|publisher['’]s note|additional information|ethics)\b",
    re.I,
)
_CAPTION_STRICT = re.compile(
    r"^(?:Supplementary\s+)?(?:Figure|Fig\.|FIGURE|Table|TABLE)\s*S?\d+[A-Za-z]?\s*[.:|]\s+\S"
)
_MARKER = re.compile(r"^\s*(?:\[(\d{1,4})\]|\((\d{1,4})\)|(\d{1,4})\.(?=\s)|(\d{1,4})(?=\s+[A-Z]))")


def reference_span(lines: list[Line]) -> tuple[int, int, int] | None:
    """(first line left out, first entry line, end) of the reference list, or None."""
    start = next(
        (i for i in reversed(range(len(lines))) if _REFERENCES.match(lines[i].text.strip())), None
    )
    first = start + 1 if start is not None else _numbered_run(lines)
    if first is None:
        return None
    begin = start if start is not None else first
    end = next(
        (j for j in range(first, len(lines)) if _ends_references(lines[j])),
        len(lines),
    )
    return begin, first, end


def _ends_references(line: Line) -> bool:
    """A heading such as "Appendix" or "Figure legends", or a caption: no more references."""
    text = line.text.strip()
    if _CAPTION_STRICT.match(text):
        return True
    if not _AFTER_REFERENCES.match(text) or len(text.split()) > 8 or _MARKER.match(text):
        return False
    return line.bold or bool(SECTION.match(text)) or text.isupper()


def _marker(text: str) -> tuple[int, int] | None:
    """(style, number) of an entry's leading number: [1], (1), 1. or a bare 1."""
    m = _MARKER.match(text)
    if m is None:
        return None
    style, number = next((k, g) for k, g in enumerate(m.groups()) if g)
    return style, int(number)


def _numbered_starts(lines: Sequence[Line]) -> list[int] | None:
    """Where each entry of a list numbered 1, 2, 3, ... starts, or None if not numbered."""
    first = next(((i, m) for i, line in enumerate(lines[:3]) if (m := _marker(line.text))), None)
    if first is None:
        return None
    index, (style, number) = first
    starts: list[int] = []
    for i in range(index, len(lines)):
        m = _marker(lines[i].text)
        if m is not None and m[0] == style and (m[1] == number or not starts):
            starts.append(i)
            number = m[1] + 1
    return starts


def _numbered_run(lines: list[Line]) -> int | None:
    """Entry 1 of a numbered reference list that has no heading (the last such run)."""
    for i in reversed(range(len(lines) // 3, len(lines))):
        m = _marker(lines[i].text)
        if m is None or m[1] != 1:
            continue
        starts = _numbered_starts(lines[i:]) or []
        ends = [*starts[1:], len(lines) - i]
        entries = [
            " ".join(line.text for line in lines[i + a : i + b])
            for a, b in zip(starts, ends, strict=True)
        ]
        dated = sum(bool(re.search(r"\b(?:19|20)\d{2}\b", e)) for e in entries)
        if len(entries) >= 5 and dated >= 0.6 * len(entries) and _short(entries):
            return i
    return None


def _short(entries: list[str]) -> bool:
    """Reference-sized: a list item that runs on to the end of the text is not."""
    return statistics.mean(len(e) for e in entries) <= 600 and max(len(e) for e in entries) <= 1500


def entries(lines: Sequence[Line], vocab: Collection[str]) -> list[str]:
    if not lines:
        return []
    starts = _numbered_starts(lines) or _unnumbered_starts(lines)
    starts[0] = 0
    ends = [*starts[1:], len(lines)]
    return [paragraph_text(lines[a:b], vocab) for a, b in zip(starts, ends, strict=True)]


def _unnumbered_starts(lines: Sequence[Line]) -> list[int]:
    """Entry starts of an author-year list: by hanging indent, else by line gaps."""
    indented = [line.x0 - line.left > 0.5 * line.size for line in lines]
    hanging = sum(indented) >= 0.25 * len(lines)
    pitch = pitches(lines)
    starts = [0]
    for i in range(1, len(lines)):
        prev, line = lines[i - 1], lines[i]
        if hanging:
            new = not indented[i] and (indented[i - 1] or ends_sentence(prev.text))
        else:
            new = gap_break(prev, line, pitch) or (indented[i] and not indented[i - 1])
        if new:
            starts.append(i)
    return starts
