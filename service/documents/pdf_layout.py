"""Line fragments -> text lines in reading order, for the PDF reader.

A page is split at a vertical gutter free of text when both sides hold enough text,
recursively, so two and three columns read column by column; lines that cross the gutter (a
title, an abstract, a wide caption, a table set across both columns) cut the columns into
bands read top to bottom, with their short last lines that stay on one side (a title's second
line). Loosely justified text (a browser's print) breaks into a fragment a word: a row of such
words on both sides is a line of each column, not a table row. Running headers, footers and
page numbers are dropped by position and repetition before the columns are ordered, and margin
line numbers by their column of rising numbers.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from service.documents.pdf_fragments import SPACE_GAP, Fragment, PageText

EDGE_ZONE = 0.1  # share of the page height at its top and bottom searched for headers
_PAGE_NUMBER = re.compile(
    r"^(?:page\s*)?[-–—]?\s*(?:\d{1,4}|[ivxlc]{1,7})\s*[-–—]?(?:\s*(?:of|/)\s*\d{1,4})?$", re.I
)


@dataclass(frozen=True)
class Line:
    """One text line in reading order, with what paragraph and heading rules need."""

    text: str
    main_text: str  # without smaller raised or lowered characters (footnote marks)
    page: int
    x0: float
    x1: float
    top: float
    bottom: float
    size: float  # the font size of most of its characters
    bold: bool  # most characters are bold
    cells: tuple[tuple[float, float], ...]  # wide gaps between pieces (table cells): (x0, x1)
    run: int  # which stretch of one column it belongs to (unique within the document)
    left: float  # that stretch's left and right text edges
    right: float
    justified: bool  # most full lines of that stretch end at its right edge


def _rows(frags: list[Fragment]) -> list[list[Fragment]]:
    """Fragments of one column grouped into rows (top to bottom), each sorted left to right."""
    rows: list[list[Fragment]] = []
    anchor: Fragment | None = None  # each row's largest fragment
    for f in sorted(frags, key=lambda f: f.mid):
        if rows and anchor is not None and (f.same_row(anchor) or f.same_row(rows[-1][-1])):
            rows[-1].append(f)
            anchor = f if f.size > anchor.size else anchor
        else:
            rows.append([f])
            anchor = f
    return [sorted(row, key=lambda f: f.x0) for row in rows]


def _gutter(frags: list[Fragment]) -> float | None:
    """The x of a text-free gutter with enough text either side, or None (one column)."""
    if len(frags) < 8:
        return None
    lo, hi = min(f.x0 for f in frags), max(f.x1 for f in frags)
    if hi - lo < 250:
        return None
    a, b = math.ceil(lo + 0.3 * (hi - lo)), math.floor(lo + 0.7 * (hi - lo))
    cover = [0] * (b - a + 2)
    for f in frags:
        start, end = max(a, math.ceil(f.x0)), min(b, math.floor(f.x1))
        if start <= end:
            cover[start - a] += 1
            cover[end - a + 1] -= 1
    counts = list(itertools.accumulate(cover[:-1]))  # fragments over each x in [a, b]
    best = min(counts)
    widest = (0, -1)
    for is_best, group in itertools.groupby(enumerate(counts), key=lambda p: p[1] == best):
        xs = [x for x, _ in group]
        if is_best and xs[-1] - xs[0] > widest[1] - widest[0]:
            widest = (xs[0], xs[-1])
    split = a + (widest[0] + widest[1]) / 2
    left = [f for f in frags if f.x1 <= split]
    right = [f for f in frags if f.x0 >= split]
    if len(left) < 3 or len(right) < 3:
        return None
    total = sum(f.ink for f in frags)
    if min(sum(f.ink for f in left), sum(f.ink for f in right)) < 0.1 * total:
        return None
    (l_top, l_bottom), (r_top, r_bottom) = (
        (min(f.top for f in side), max(f.bottom for f in side)) for side in (left, right)
    )
    overlap = min(l_bottom, r_bottom) - max(l_top, r_top)
    return split if overlap >= 0.3 * min(l_bottom - l_top, r_bottom - r_top) else None


def _table_rows(frags: list[Fragment], split: float, narrow: float) -> list[Fragment]:
    """Fragments of a table set across the gutter: two or more rows in a row of three or more
    narrow cells on both sides (column text fills its column). A row that reads as a line of
    each column is not one: justified lines set loosely break into a fragment a word."""
    rows = _rows(frags)
    left, right = (
        _side_edges([f for f in frags if f.x1 <= split]),
        _side_edges([f for f in frags if f.x0 >= split]),
    )

    def prose(row: list[Fragment]) -> bool:
        return _column_line([f for f in row if f.x1 <= split], *left) and _column_line(
            [f for f in row if f.x0 >= split], *right
        )

    cells = [
        len(row) >= 3
        and all(f.x1 - f.x0 < narrow for f in row)
        and row[0].x1 <= split <= row[-1].x0
        and not prose(row)
        for row in rows
    ]
    return [
        f
        for i, row in enumerate(rows)
        if cells[i] and ((i > 0 and cells[i - 1]) or (i + 1 < len(rows) and cells[i + 1]))
        for f in row
    ]


def _side_edges(side: list[Fragment]) -> tuple[float, float]:
    """Where most fragments of one side of a gutter start and end (its text edges)."""
    if not side:
        return math.nan, math.nan
    start = Counter(round(f.x0) for f in side).most_common(1)[0][0]
    end = Counter(round(f.x1) for f in side).most_common(1)[0][0]
    return float(start), float(end)


def _column_line(pieces: list[Fragment], left: float, right: float) -> bool:
    """Pieces of one row on one side that read as a line of its column: from its left edge
    (or a first-line indent) to its right edge, or with no gap wider than word spaces."""
    if not pieces:
        return False
    size = max(f.size for f in pieces)
    if not -1.5 <= pieces[0].x0 - left <= 3 * size:
        return False
    flush = abs(max(f.x1 for f in pieces) - right) <= 1.5
    gaps = [b.x0 - a.x1 for a, b in itertools.pairwise(pieces)]
    return flush or max(gaps, default=0.0) <= 3 * size


def _reading_order(frags: list[Fragment], depth: int = 0) -> list[list[list[Fragment]]]:
    """Stretches of one column each (lists of rows), in reading order."""
    split = _gutter(frags) if depth < 3 else None
    if split is None:
        return [_rows(frags)] if frags else []
    # Wide lines across the gutter cut the columns into bands; a narrow one (a figure label,
    # a caption's short last line) goes with the side holding its centre.
    lo, hi = min(f.x0 for f in frags), max(f.x1 for f in frags)
    spanning = [f for f in frags if f.x0 < split < f.x1 and f.x1 - f.x0 >= 0.45 * (hi - lo)]
    spanning += _table_rows(frags, split, 0.6 * min(split - lo, hi - split))
    spanning.sort(key=lambda f: f.mid)
    ids = {id(f) for f in spanning}
    rest = [f for f in frags if id(f) not in ids]
    sides = [[f for f in rest if f.x0 + f.x1 < 2 * split],
             [f for f in rest if f.x0 + f.x1 >= 2 * split]]  # fmt: skip
    column_mids = sorted(f.mid for f in rest)
    bands: list[list[Fragment]] = []
    for f in spanning:
        if bands:  # no column text between the band's last line and this one: same band
            after = bisect.bisect_right(column_mids, bands[-1][-1].mid)
            if after == len(column_mids) or column_mids[after] >= f.mid:
                bands[-1].append(f)
                continue
        bands.append([f])
    starts = [band[0].mid for band in bands]
    moved = {id(f) for k, band in enumerate(bands) for f in _band_tail(band, sides, starts, k)}
    sides = [[f for f in side if id(f) not in moved] for side in sides]
    runs: list[list[list[Fragment]]] = []
    for slot in range(len(bands) + 1):
        for side in sides:
            part = [f for f in side if bisect.bisect_right(starts, f.mid) == slot]
            runs += _reading_order(part, depth + 1)
        if slot < len(bands):
            runs.append(_rows(bands[slot]))
    return runs


def _band_tail(
    band: list[Fragment], sides: list[list[Fragment]], starts: list[float], k: int
) -> list[Fragment]:
    """Rows just below a band on one side of the gutter only, in its font, aligned with it and
    at its line spacing: the band's own short lines (a title's or an author list's last line),
    moved into it (appended to ``band``)."""
    parts = [[f for f in side if bisect.bisect_right(starts, f.mid) == k + 1] for side in sides]
    moved: list[Fragment] = []
    for n, part in enumerate(parts):
        other_top = min((f.top for f in parts[1 - n]), default=math.inf)
        last = max(band, key=lambda f: f.bottom)
        for row in _rows(part):
            x0, x1 = row[0].x0, max(f.x1 for f in row)
            if not (
                all(abs(f.size - last.size) < 0.3 for f in row)
                and max(f.bottom for f in row) < other_top
                and 0 <= min(f.top for f in row) - last.bottom < 0.6 * last.size
                and (abs(x0 - last.x0) <= 1.5 or abs(x0 + x1 - last.x0 - last.x1) <= 3)
            ):
                break
            band += row
            moved += row
            last = row[-1]
    return moved


def _line(row: list[Fragment], page: int, run: int, edges: tuple[float, float, bool]) -> Line:
    weights: Counter[float] = Counter()
    for f in row:
        weights[f.size] += f.ink
    size = weights.most_common(1)[0][0]
    text, main = row[0].text, row[0].main if row[0].size >= 0.8 * size else ""
    for a, b in itertools.pairwise(row):
        sep = " " if b.x0 - a.x1 > SPACE_GAP * min(a.size, b.size) else ""
        text += sep + b.text
        if b.size >= 0.8 * size:
            main += (sep if main else "") + b.main
    pieces = row[1:] if len(row) > 1 and re.fullmatch(r"[\dIVX.]+", row[0].text) else row
    band = [f for f in row if f.size >= 0.8 * size] or row
    ink = sum(f.ink for f in row)
    return Line(
        text=text,
        main_text=main,
        page=page,
        x0=row[0].x0,
        x1=max(f.x1 for f in row),
        top=min(f.top for f in band),
        bottom=max(f.bottom for f in band),
        size=size,
        bold=sum(f.bold for f in row) >= 0.8 * ink,
        cells=tuple((a.x1, b.x0) for a, b in itertools.pairwise(pieces)),  # "2.1" is not one
        run=run,
        left=edges[0],
        right=edges[1],
        justified=edges[2],
    )


def _edges(rows: list[list[Fragment]]) -> tuple[float, float, bool | None]:
    """Left and right text edges of a column stretch (where most lines start and end, else the
    outermost), and whether it is justified (None: too few full lines to tell)."""
    starts = [round(row[0].x0) for row in rows]
    ends = [round(max(f.x1 for f in row)) for row in rows]
    edges = []
    for values, outer in ((starts, min), (ends, max)):
        value, count = Counter(values).most_common(1)[0]
        edges.append(float(value) if count >= 0.3 * len(rows) and count > 1 else outer(values))
    left, right = edges
    full = [x1 for x0, x1 in zip(starts, ends, strict=True) if x1 - x0 > 0.6 * (right - left)]
    flush = sum(1 for x1 in full if abs(x1 - right) <= 1.5)
    return left, right, flush >= 0.6 * len(full) if len(full) >= 3 else None


def _edge_rows(frags: list[Fragment], height: float) -> dict[int, tuple[Fragment, bool]]:
    """Fragments of the first two and last two rows, where they lie near the page's edges (by
    id), each with whether it stands apart: nothing else in its row within 4 ems."""
    found: dict[int, tuple[Fragment, bool]] = {}
    for top in (True, False):
        rest = sorted(frags, key=lambda f: f.mid if top else -f.mid)
        for _ in range(2):
            row = [f for f in rest if f.same_row(rest[0])] if rest else []
            edge = [f for f in row if (f.bottom <= EDGE_ZONE * height if top
                                       else f.top >= (1 - EDGE_ZONE) * height)]  # fmt: skip
            if not edge:
                break
            for f in edge:
                near = (max(f.x0, g.x0) - min(f.x1, g.x1) < 4 * max(f.size, g.size)
                        for g in row if g is not f)  # fmt: skip
                found[id(f)] = (f, not any(near))
            ids = {id(f) for f in row}
            rest = [f for f in rest if id(f) not in ids]
    return found


def _drop_running_lines(pages: list[PageText]) -> None:
    """Remove page numbers and lines repeated at the top or bottom of many pages, in place.

    A line of a few words repeats wherever it sits (headers swap sides on facing pages); a word
    or two, and a page number, must stand apart (see :func:`_edge_rows`) and the word or two
    repeat at the same place: a loosely justified first or last line of the body breaks into a
    fragment a word ("the", "100"), and "the" starts or ends one on many pages."""
    edges = [_edge_rows(page.fragments, page.height) for page in pages]
    keys = [
        {fid: re.sub(r"\d+", "#", " ".join(f.text.casefold().split())) for fid, (f, _) in e.items()}
        for e in edges
    ]  # fmt: skip
    places: dict[str, list[tuple[int, Fragment]]] = {}
    for number, (page_edges, page_keys) in enumerate(zip(edges, keys, strict=True)):
        for fid, (f, _) in page_edges.items():
            places.setdefault(page_keys[fid], []).append((number, f))
    needed = max(2, math.ceil(0.3 * len(pages)))

    def repeated(f: Fragment, key: str, apart: bool) -> bool:
        seen = places[key]
        if len(key.split()) < 3:
            if not apart:
                return False
            tol = max(2.0, 0.5 * f.size)
            seen = [(n, g) for n, g in seen
                    if min(abs(f.x0 - g.x0), abs(f.x1 - g.x1),
                           abs(f.x0 + f.x1 - g.x0 - g.x1) / 2) <= tol]  # fmt: skip
        return len({n for n, _ in seen}) >= needed

    for page, page_edges, page_keys in zip(pages, edges, keys, strict=True):
        drop = {
            fid
            for fid, (f, apart) in page_edges.items()
            if (apart and _PAGE_NUMBER.match(page_keys[fid].replace("#", "1")))
            or repeated(f, page_keys[fid], apart)
        }
        page.fragments[:] = [f for f in page.fragments if id(f) not in drop]


def _drop_line_numbers(page: PageText) -> None:
    """Remove margin line numbers (preprints): a column of bare, increasing numbers."""
    numbers = [f for f in page.fragments if f.text.isdigit() and len(f.text) <= 4]
    columns: dict[int, list[Fragment]] = {}
    for f in numbers:
        columns.setdefault(round(f.x1 / 4), []).append(f)
    drop: set[int] = set()
    for column in columns.values():
        values = [int(f.text) for f in sorted(column, key=lambda f: f.top)]
        rising = sum(b > a for a, b in itertools.pairwise(values))
        if len(column) >= 8 and rising >= 0.8 * (len(values) - 1):
            drop.update(id(f) for f in column)
    page.fragments[:] = [f for f in page.fragments if id(f) not in drop]


def layout_pages(pages: list[PageText]) -> tuple[list[Line], str]:
    """All pages' lines in reading order (headers, footers, page numbers dropped), and the
    first page's complete text (running lines included) for DOI and year searches."""
    first = ""
    if pages:
        first = "\n".join(f.text for f in sorted(pages[0].fragments, key=lambda f: f.top))
    _drop_running_lines(pages)
    for page in pages:
        _drop_line_numbers(page)
    runs = [(page.number, rows) for page in pages for rows in _reading_order(page.fragments)]
    edges = [_edges(rows) for _, rows in runs]
    votes: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # by width: [justified, ragged]
    for left, right, justified in edges:
        if justified is not None:
            votes[round(right - left)][0 if justified else 1] += 1
    lines: list[Line] = []
    for run, ((number, rows), (left, right, justified)) in enumerate(zip(runs, edges, strict=True)):
        if justified is None:  # a short stretch (a balanced last page): as most of its width
            width = round(right - left)
            yes, no = (sum(votes[w][k] for w in range(width - 2, width + 3) if w in votes)
                       for k in (0, 1))  # fmt: skip
            justified = yes > no
        lines += [_line(row, number, run, (left, right, justified)) for row in rows]
    return lines, first


def body_size(lines: Sequence[Line]) -> float:
    """The font size of most of the text (to half a point)."""
    sizes: Counter[float] = Counter()
    for line in lines:
        sizes[round(line.size * 2) / 2] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 10.0
