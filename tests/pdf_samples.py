"""PDFs written with fpdf2 for the tests of the PDF reader (and of the loader and the API).

Text is set word by word at computed positions, justified, with no space characters between
words (as TeX does), so a reader has to find the words from the gaps. Words may break at a line
end at a marked hyphenation point (U+00AD in the source text) or after a hyphen. Each article
writer returns what it put on the pages (:class:`Article`), so tests can compare the extracted
text exactly.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF
from PIL import Image

SHY = "\u00ad"
PAGE_W, PAGE_H = 612.0, 792.0
MARGIN, TOP, BOTTOM, GUTTER = 54.0, 66.0, PAGE_H - 60.0, 24.0
JOURNAL = "Synthetic Journal of Medicine 2024; 12: 101-109"
CREATED = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)  # the year printed on page 1 is 2024


@dataclass
class Article:
    """What a generated article holds, in reading order."""

    path: Path
    title: str
    authors: tuple[str, ...]
    headings: list[tuple[str, int]] = field(default_factory=list)  # (text, level)
    paragraphs: list[str] = field(default_factory=list)  # body text, no headings or captions
    captions: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    lines: list[tuple[int, int, str]] = field(default_factory=list)  # (page, column, text)
    hyphenated: list[str] = field(default_factory=list)  # words broken at a line end


class _Writer:
    """A tiny typesetter: full-width front matter, then one or two justified columns."""

    def __init__(
        self, article: Article, *, columns: int, footer: str, outline: bool,
        line_numbers: bool = False,
    ) -> None:  # fmt: skip
        self.article, self.columns, self.footer, self.outline = article, columns, footer, outline
        self.line_numbers = line_numbers
        self.numbered = 0
        self.pdf = FPDF(unit="pt", format="letter")
        self.pdf.set_auto_page_break(False)
        self.pdf.set_creation_date(CREATED)
        self.column, self.y, self.column_top = 0, TOP, TOP
        self.new_page()

    # -- pages and columns

    def new_page(self) -> None:
        font = (self.pdf.font_family or "Helvetica", self.pdf.font_style, self.pdf.font_size_pt)
        self.pdf.add_page()
        page = self.pdf.page_no()
        self.pdf.set_font("Helvetica", "I", 8)
        # The running header (in capitals on page 1: the same line to a reader).
        self.pdf.text(MARGIN, 40, JOURNAL if page > 1 else JOURNAL.upper())
        self.pdf.set_font(*font)
        self.column, self.y, self.column_top = 0, TOP, TOP

    @property
    def width(self) -> float:
        return (PAGE_W - 2 * MARGIN - (self.columns - 1) * GUTTER) / self.columns

    @property
    def x(self) -> float:
        return MARGIN + self.column * (self.width + GUTTER)

    def room(self, height: float) -> None:
        if self.y + height <= BOTTOM:
            return
        if self.column + 1 < self.columns:
            self.column, self.y = self.column + 1, self.column_top
        else:
            self.new_page()

    # -- text

    def _font(self, size: float, style: str = "") -> None:
        self.pdf.set_font("Helvetica", style, size)

    def _wrap(self, text: str, width: float, first_indent: float) -> list[list[str]]:
        """Greedy lines of words (spaces may shrink to 80%); a word may break at a soft
        hyphen, leaving its head with a "-" at the line end."""
        size = self.pdf.get_string_width
        lines: list[list[str]] = [[]]
        words = text.split()
        while words:
            word, line = words.pop(0), lines[-1]
            room = width - (first_indent if len(lines) == 1 else 0)
            used = sum(size(w) for w in line) + 0.8 * size(" ") * len(line)
            plain = word.replace(SHY, "")
            if not line or used + size(plain) <= room:
                line.append(plain)
                continue
            parts = re.split(f"(?<=-)|{SHY}", word)  # after a hyphen, or at a soft hyphen
            for cut in range(len(parts) - 1, 0, -1):
                head = "".join(parts[:cut]).replace(SHY, "")
                head += "" if head.endswith("-") else "-"
                if used + size(head) <= room:
                    line.append(head)
                    self.article.hyphenated.append(plain)
                    words.insert(0, SHY.join(parts[cut:]))
                    break
            else:
                words.insert(0, word)
            lines.append([])
        return [line for line in lines if line]

    def block(
        self, text: str, *, size: float = 10, style: str = "", leading: float = 12.5,
        indent: float = 0.0, justify: bool = True, full_width: bool = False, record: bool = True,
    ) -> None:  # fmt: skip
        """Set a paragraph at the cursor, column by column, page by page."""
        self._font(size, style)
        width = PAGE_W - 2 * MARGIN if full_width else self.width
        lines = self._wrap(text, width, indent)
        space = self.pdf.get_string_width(" ")
        for n, words in enumerate(lines):
            if not full_width:
                self.room(leading)
            x0 = (MARGIN if full_width else self.x) + (indent if n == 0 else 0)
            room = width - (indent if n == 0 else 0)
            widths = [self.pdf.get_string_width(w) for w in words]
            last = n == len(lines) - 1
            gap = space if last or len(words) == 1 else (room - sum(widths)) / (len(words) - 1)
            if full_width and not justify:
                x0 = (PAGE_W - sum(widths) - space * (len(words) - 1)) / 2
            x = x0
            for word, w in zip(words, widths, strict=True):
                self.pdf.text(x, self.y + size, word)
                x += w + gap
            if record:
                self.article.lines.append((self.pdf.page_no(), self.column, " ".join(words)))
            if self.line_numbers and not full_width:  # a preprint's margin line numbers
                self.numbered += 1
                self.pdf.set_font("Helvetica", "", 7)
                number = str(self.numbered)
                self.pdf.text(40 - self.pdf.get_string_width(number), self.y + size, number)
                self._font(size, style)
            self.y += leading

    def heading(self, text: str, level: int) -> None:
        self.room(60)
        self.y += 6
        if self.outline:  # bookmarks only: the heading is set like body text
            self.pdf.set_y(self.y)
            self.pdf.start_section(text, level - 2)
            self.block(text, justify=False)
        else:
            self.block(text, size=13 if level == 2 else 10, style="B", justify=False)
        self.y += 2
        self.article.headings.append((text, level))

    def paragraph(self, text: str, *, indent: float = 12.0, space: float = 0.0) -> None:
        self.y += space
        self.block(text, indent=indent)
        self.article.paragraphs.append(text.replace(SHY, ""))

    def caption(self, text: str) -> None:
        self.room(90)
        self.pdf.set_fill_color(200, 200, 200)
        self.pdf.rect(self.x + 20, self.y + 4, self.width - 40, 50, style="F")  # "the figure"
        self.y += 62
        self.block(text, size=8, leading=10)
        self.y += 8
        self.article.captions.append(text.replace(SHY, ""))

    def references(self, entries: list[str], *, heading: str | None = "References") -> None:
        if heading:
            self.heading(heading, 2)
        for entry in entries:
            self.block(entry, size=8, leading=10)
            self.y += 2
        self.article.references += entries

    def save(self) -> Article:
        total = self.pdf.page_no()
        self.pdf.set_font("Helvetica", "", 8)
        for page in range(1, total + 1):  # footers last, when the page count is known
            self.pdf.page = page
            text = self.footer.format(page=page, pages=total)
            self.pdf.text((PAGE_W - self.pdf.get_string_width(text)) / 2, PAGE_H - 36, text)
        self.pdf.output(str(self.article.path))
        return self.article


def _front(w: _Writer, title: str, authors: tuple[str, ...]) -> None:
    """Citation line, title, authors with affiliation marks, an affiliation, full width."""
    w.block(f"{JOURNAL}. doi:10.5555/synth.2024.0012. PMID: 38012345. (c) 2024 Synthetic Press",
            size=7, full_width=True, justify=False, record=False)  # fmt: skip
    w.y += 10
    w.block(title, size=18, style="B", leading=22, full_width=True, justify=False, record=False)
    w.y += 6
    seps = [", "] * (len(authors) - 2) + [" and "] if len(authors) > 1 else []
    marks = [f"{i % 2 + 1}" for i in range(len(authors))]  # affiliation marks, raised
    pieces = list(zip(authors, marks, [*seps, ""], strict=True))

    def width(text: str, size: float) -> float:
        w.pdf.set_font("Helvetica", "", size)
        return w.pdf.get_string_width(text)

    x = (PAGE_W - sum(width(a, 11) + width(m, 6) + width(s, 11) for a, m, s in pieces)) / 2
    for name, mark, sep in pieces:
        for text, size, raise_by in ((name, 11, 0), (mark, 6, 5), (sep, 11, 0)):
            width(text, size)
            w.pdf.text(x, w.y + 11 - raise_by, text)
            x += w.pdf.get_string_width(text)
    w.y += 20
    w.block("1 Department of Orthopaedics, Synthetic University, Lisbon, Portugal", size=8,
            style="I", full_width=True, justify=False, record=False)  # fmt: skip
    w.y += 10


INTRO = [
    "Knee osteo\u00adarthritis is a common cause of pain and disability in older adults. Current "
    "treatments relieve symptoms but do not restore the damaged cartilage, and many patients "
    "eventually need a joint replacement. Mesen\u00adchymal stromal cells have been proposed "
    "as a therapy that could support tissue regen\u00aderation in the injured joint.",
    "The cells secrete growth factors and immuno\u00admodulatory signals that dampen inflam"
    "\u00admation. In animal models they improve cartilage thickness, although the size of the "
    "effect varies between studies and preparations. Clinical trials are small, and their "
    "outcomes are measured in different ways, which makes comparison difficult.",
]
METHODS = [
    "We pooled randomised trials that compared intra-articular injections of stromal "
    "cells with saline or hyaluronic acid. Two reviewers extracted pain scores, function "
    "scores and cartilage volume measured by magnetic resonance imaging at twelve months.",
]
CULTURE = [
    "Cells were expanded for three to five passages in serum free medium before injection. "
    "The median dose was forty million cells, given once, under ultrasound guidance.",
]
RESULTS = [
    "Eleven trials with six hundred and twelve participants met the inclusion criteria. Pain "
    "scores fell more after cell injections than after control injections, by a mean of "
    "twelve points on a scale of one hundred, and function improved by a similar margin.",
    "Cartilage volume did not differ between the groups. Adverse events were mild and "
    "transient, mostly swelling of the joint during the first week after the injection, and "
    "no serious adverse events were attributed to the cells in any trial.",
]
DISCUSSION = [
    "Stromal cell injections relieve pain modestly for at least a year, but we found no "
    "evidence that they rebuild cartilage. Larger trials with standard outcome measures and "
    "longer follow up are needed before the therapy can be recommended outside research.",
]
REFERENCES = [
    "[1] Lima A, Okafor B. Stromal cells in cartilage repair. Synth J Med. 2020;8:1-9.",
    "[2] Wei C, Lima A. Injection therapy for knee pain: a review. Synth Rev. 2021;3:44-51.",
    "[3] Okafor B, Wei C, Lima A. Imaging cartilage volume after cell therapy. Synth Imaging. "
    "2022;5:12-20.",
    "[4] Silva D. Outcome measures in osteoarthritis trials. Synth Methods. 2019;2:100-108.",
]
ABSTRACT = (
    "Background: Intra-articular injections of mesenchymal stromal cells are offered for knee "
    "osteoarthritis. "
    "Methods: We pooled eleven randomised trials. Results: Pain improved modestly after cell "
    "injections, cartilage volume did not change, and adverse events were mild."
)
TITLE = "Mesenchymal Stromal Cells for Knee Osteoarthritis: A Synthetic Two-Column Test Article"
AUTHORS = ("Ana Lima", "Ben Okafor", "Chen Wei")
CAPTION = (
    "Figure 1. Change in pain score at twelve months after cell injections and after control "
    "injections in each trial."
)


def two_column_article(path: Path) -> Article:
    """Two columns below a full-width title and abstract; bold headings (no outline), a
    running header, page numbers, a caption and a numbered reference list. Info dictionary
    title and author are junk ("Microsoft Word - draft.docx", "admin")."""
    w = _Writer(Article(path, TITLE, AUTHORS), columns=2, footer="{page}", outline=False)
    w.pdf.set_title("Microsoft Word - draft.docx")
    w.pdf.set_author("admin")
    _front(w, TITLE, AUTHORS)
    w.block("Abstract", size=10, style="B", full_width=True, justify=False)
    w.article.headings.append(("Abstract", 2))
    w.block(ABSTRACT, full_width=True)
    w.article.paragraphs.append(ABSTRACT)
    w.y += 14
    w.column_top = w.y
    for title, level, paragraphs in (
        ("Introduction", 2, INTRO), ("Methods", 2, METHODS), ("Cell culture", 3, CULTURE),
        ("Results", 2, RESULTS), ("Discussion", 2, DISCUSSION + INTRO + RESULTS),
    ):  # fmt: skip
        w.heading(title, level)
        for i, text in enumerate(paragraphs):
            w.paragraph(text, indent=0 if i == 0 else 12)
        if title == "Results":
            w.caption(CAPTION)
    w.references(REFERENCES)
    return w.save()


TABLE_CAPTION = "Table 1. Baseline characteristics of the participants in the two groups."
TABLE = [
    ("Characteristic", "Cells", "Control"),
    ("Age, years", "61", "63"),
    ("Women, n", "40", "38"),
]


def two_column_table_page(path: Path) -> Article:
    """Two columns above and below a table set across both, with its caption above it."""
    w = _Writer(Article(path, TITLE, ()), columns=2, footer="{page}", outline=False)

    def columns(texts: list[str]) -> None:
        top, bottom = w.y, w.y
        for column, text in enumerate(texts):
            w.column, w.y = column, top
            w.paragraph(text, indent=0)
            bottom = max(bottom, w.y)
        w.column, w.y = 0, bottom + 16

    columns(INTRO)
    w.block(TABLE_CAPTION, size=9, full_width=True, justify=False)
    w.article.captions.append(TABLE_CAPTION)
    w.pdf.set_font("Helvetica", "", 9)
    for row in TABLE:
        for n, cell in enumerate(row):
            w.pdf.text(MARGIN + 10 + 200 * n, w.y + 9, cell)
        w.y += 12
    w.y += 16
    columns(RESULTS)
    return w.save()


OUTLINE_TITLE = "Walking Programmes After Knee Replacement: An Outline Test Article"
OUTLINE_SECTIONS = [
    ("Introduction", 2, INTRO[:1]),
    ("Participants", 2, METHODS),
    ("Recruitment and consent", 3, CULTURE),
    ("Outcomes", 2, RESULTS),
    ("Discussion", 2, DISCUSSION),
]
APPENDIX = "The search strategy and the full data extraction form are given in this appendix."


def outline_article(path: Path, *, repeats: int = 3, line_numbers: bool = False) -> Article:
    """One column, block paragraphs; headings in the body font, found only through the PDF
    outline (bookmarks); real info-dictionary title and authors; "Page N of M" footers; an
    appendix after the reference list; margin line numbers if asked."""
    article = Article(path, OUTLINE_TITLE, ("Dana Smith", "Eli Jones"))
    w = _Writer(article, columns=1, footer="Page {page} of {pages}", outline=True,
                line_numbers=line_numbers)  # fmt: skip
    w.pdf.set_title(OUTLINE_TITLE)
    w.pdf.set_author("Dana Smith; Eli Jones")
    w.block(OUTLINE_TITLE, size=16, style="B", leading=20, full_width=True, justify=False,
            record=False)  # fmt: skip
    w.y += 10
    for title, level, paragraphs in OUTLINE_SECTIONS:
        w.heading(title, level)
        for text in paragraphs * repeats:
            w.paragraph(text, indent=0, space=6)
    w.references([f"{n}. {e.split('] ', 1)[1]}" for n, e in enumerate(REFERENCES, 1)])
    w.heading("Appendix", 2)
    w.paragraph(APPENDIX, indent=0)
    return w.save()


def unheaded_references_pdf(path: Path) -> Article:
    """Body text, then a numbered reference list with no heading above it."""
    w = _Writer(Article(path, TITLE, ()), columns=1, footer="{page}", outline=False)
    for text in INTRO + RESULTS:
        w.paragraph(text, indent=0, space=6)
    entries = [
        *REFERENCES,
        "[5] Costa E. Long term follow up of injection trials. Synth J Med. 2023;11:5-12.",
    ]
    w.y += 12
    w.references(entries, heading=None)
    return w.save()


def simple_pdf(path: Path, *, pages: int = 1, text: str = "A short page of plain text.") -> Path:
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_font("Helvetica", size=11)
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.text(72, 100, f"{text} This is page {n}.")
    pdf.output(str(path))
    return path


def encrypted_pdf(path: Path, *, user_password: str | None = "secret") -> Path:
    """A PDF with an owner password, and a user password unless ``user_password`` is None
    (then it opens without one, as publishers' copy-protected PDFs do)."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_encryption(owner_password="owner", user_password=user_password)
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.text(72, 100, "Encrypted text about stromal cells.")
    pdf.output(str(path))
    return path


def image_only_pdf(path: Path) -> Path:
    """A page holding only a picture: what a scan without OCR looks like."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.image(Image.new("RGB", (60, 80), (120, 130, 140)), x=72, y=72, w=300)
    pdf.output(str(path))
    return path


def truncated_pdf(path: Path) -> Path:
    """The first half of a valid PDF."""
    simple_pdf(path, pages=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbled_pdf(path: Path) -> Path:
    """A PDF header and end marker around bytes that are not a PDF body."""
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\nstartxref\n123\n%%EOF\n")
    return path


def zero_page_pdf(path: Path) -> Path:
    """A well-formed PDF whose page tree is empty."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
    return path
