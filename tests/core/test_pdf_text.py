"""The PDF reader: reading order, running lines, hyphenation, headings, captions, references,
metadata and bad files, on PDFs written by ``pdf_samples`` and on two real ones."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pdf_samples as samples
import pdfplumber
import pytest
from fpdf import FPDF
from pdfminer.pdftypes import resolve1

from service.documents import pdf_lines, pdf_text
from service.documents.pdf_lines import join_lines
from service.documents.pdf_text import PdfContent, read_pdf
from service.documents.records import CorpusFileError

REAL_PDFS = Path(__file__).resolve().parents[2] / ".." / "shared" / "pdfs"
PREPRINT = REAL_PDFS / "explanations-molecular-prediction.pdf"
MIXED = REAL_PDFS / "mixed-media.pdf"
real = pytest.mark.skipif(
    not PREPRINT.is_file() or not MIXED.is_file(),
    reason=f"the real test PDFs are not in {REAL_PDFS.resolve()} (see its README.md)",
)


def body(content: PdfContent) -> list[str]:
    return [b.text for b in content.blocks if not b.level and not b.caption]


def words(text: str) -> set[str]:
    return {w.strip(".,;:()") for w in text.split()} - {""}


# -- a two-column article ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_column(tmp_path_factory: pytest.TempPathFactory) -> tuple[samples.Article, PdfContent]:
    article = samples.two_column_article(tmp_path_factory.mktemp("pdf") / "two-column.pdf")
    return article, read_pdf(article.path)


def test_two_columns_read_column_by_column(
    two_column: tuple[samples.Article, PdfContent],
) -> None:
    article, content = two_column
    # The page-1 citation line comes first; then the full-width abstract and every paragraph,
    # whole and in order: one runs from the foot of the left column to the top of the right.
    assert body(content)[0].startswith(samples.JOURNAL + ". doi:10.5555")
    assert body(content)[1:] == article.paragraphs
    page, column, last_left = next(
        (p, c, text)
        for (p, c, text), (_, c2, _) in zip(article.lines, article.lines[1:], strict=False)
        if (c, c2) == (0, 1)
    )
    first_right = next(text for p, c, text in article.lines if (p, c) == (page, 1))
    assert column == 0 and f"{last_left} {first_right}" in "\n".join(body(content))


def test_a_table_across_both_columns_cuts_them_into_bands(tmp_path: Path) -> None:
    article = samples.two_column_table_page(tmp_path / "table.pdf")
    content = read_pdf(article.path)
    # Above the table: left column, then right; the caption and the table; then below it.
    table = " ".join(cell for row in samples.TABLE for cell in row)
    intro, results = article.paragraphs[:2], article.paragraphs[2:]
    assert [b.text for b in content.blocks[1:]] == [*intro, samples.TABLE_CAPTION, table, *results]
    assert [b.caption for b in content.blocks[1:]] == [False, False, True, False, False, False]


def test_words_are_not_glued(two_column: tuple[samples.Article, PdfContent]) -> None:
    article, content = two_column
    with pdfplumber.open(article.path) as pdf:  # the trap: default spacing glues words
        naive = words(pdf.pages[0].extract_text())
    headings = [text for text, _ in article.headings]
    source = words(" ".join([*article.paragraphs, *article.captions, *headings, article.title]))
    assert naive - source, "the sample should be tight enough to glue words by default"
    extracted = words(" ".join(b.text for b in content.blocks[1:]))
    assert extracted - source == set()


def test_line_end_hyphenation_is_undone(two_column: tuple[samples.Article, PdfContent]) -> None:
    article, content = two_column
    text = " ".join(body(content))
    assert {"regeneration", "immunomodulatory", "intra-articular"} <= set(article.hyphenated)
    assert "tissue regeneration in the injured joint" in text
    assert "immunomodulatory signals" in text
    assert "compared intra-articular injections" in text  # a compound keeps its hyphen
    assert "regen-" not in text and "immuno-" not in text


def test_headings_from_fonts_without_an_outline(
    two_column: tuple[samples.Article, PdfContent],
) -> None:
    article, content = two_column
    assert article.headings[-1] == ("References", 2)  # that one goes with the list
    assert [(b.text, b.level) for b in content.blocks if b.level] == article.headings[:-1]
    assert ("Cell culture", 3) in article.headings  # 10 pt bold under 13 pt bold sections


def test_running_header_page_numbers_title_and_authors_are_left_out(
    two_column: tuple[samples.Article, PdfContent],
) -> None:
    _, content = two_column
    texts = [b.text for b in content.blocks]
    assert content.page_count == 2
    assert not any(t.casefold() == samples.JOURNAL.casefold() for t in texts)
    assert not any(re.fullmatch(r"\d+", t) for t in texts)
    assert not any("Ana Lima" in t or "Synthetic Two-Column" in t for t in texts)
    assert not any("Department of Orthopaedics" in t for t in texts)  # the affiliation


def test_caption_is_a_block_of_its_own(two_column: tuple[samples.Article, PdfContent]) -> None:
    article, content = two_column
    captions = [b for b in content.blocks if b.caption]
    assert [b.text for b in captions] == article.captions == [samples.CAPTION]
    assert captions[0].level == 0 and captions[0].page == 1


def test_reference_list_is_kept_out_of_the_blocks(
    two_column: tuple[samples.Article, PdfContent],
) -> None:
    article, content = two_column
    assert content.references == article.references == samples.REFERENCES
    assert not any("Stromal cells in cartilage repair" in b.text for b in content.blocks)
    assert not any(b.text == "References" for b in content.blocks)


def test_metadata_from_page_one_when_the_info_dictionary_is_junk(
    two_column: tuple[samples.Article, PdfContent],
) -> None:
    article, content = two_column
    meta = content.metadata
    assert meta.title == article.title  # not "Microsoft Word - draft.docx"
    assert meta.authors == ("Ana Lima", "Ben Okafor", "Chen Wei")  # not "admin"
    assert meta.year == 2024  # printed on page 1; the file was created in 2026
    assert (meta.doi, meta.pmid) == ("10.5555/synth.2024.0012", "38012345")


# -- two loosely justified columns, as a browser prints them ----------------------------------

LOOSE_TITLE = ("Stromal Cell Injections for Disc Pain: A Loosely Set", "Two-Column Article")
LOOSE_AUTHORS = ("Ana Lima, Ben Okafor, Chen Wei, Dana Smith, Eli Jones, Farah Khan,",
                 "Goran Petrov")  # fmt: skip
# Per page: the left column, then the right; per item: kind ("p" or "h"), lines, and whether
# it ends there (else it goes on in the next column, and its last line is justified too).
LOOSE_PAGES = [
    (
        [("p", ["Low back pain is one of the most", "common clinical problems in the world,",
                "and a key driver of this pain is the", "degeneration of lumbar discs, a",
                "source of pain that is often difficult", "to treat."], True),
         ("h", ["Why Disc Degeneration Causes", "Low Back Pain"], True),
         ("p", ["The discs act as shock absorbers", "between the vertebrae. Over time",
                "they lose water and develop small", "tears that let the nerves grow in."],
          True)],
        [("p", ["When this happens in the lumbar", "spine it can trigger a deep pain that",
                "may worsen with sitting or bending."], True),
         ("p", ["Initial treatment typically involves non-",
                "surgical approaches and other pain-", "modulating medications, and many",
                "patients improve with them, while", "cells may support tissue regen-",
                "eration in the damaged disc where"], False)],
    ),
    (
        [("p", ["the other treatments have failed to", "relieve the pain of the patients."], True),
         ("p", ["Eleven trials were pooled in this", "review, with the number of studies",
                "and the total number of patients", "remaining small: two hundred and"], False)],
        [("p", ["forty five patients took part and", "over 100 of them had injections of",
                "marrow cells under imaging guidance."], True)],
    ),
    (  # balanced columns: too short to show they are justified
        [("p", ["the findings support the idea that", "cell injections into the disc are safe."],
          True)],
        [("p", ["Patients should discuss the latest", "evidence, risks, and benefits with",
                "experienced clinicians before they", "decide on a treatment."], True)],
    ),
]  # fmt: skip


def loose_paragraphs() -> list[str]:
    """The paragraphs of ``LOOSE_PAGES``: compounds broken at their hyphen keep it."""
    texts, lines = [], []
    for columns in LOOSE_PAGES:
        for items in columns:
            for kind, item_lines, ends in items:
                lines += item_lines if kind == "p" else []
                if kind == "p" and ends:
                    text = " ".join(lines).replace("- ", "-")
                    texts.append(text.replace("regen-eration", "regeneration"))
                    lines = []
    return texts


def loose_two_columns(path: Path) -> Path:
    """Justified columns with inter-word gaps of one to three ems, so that every word is a
    fragment of its own (Chromium's print of the corpus); a title and an author list whose
    last lines stay left of the gutter; a heading over two lines; pages starting with "the"
    at the same place, a running header, page numbers."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    margin, gutter, width = 54.0, 24.0, 240.0

    def line(x: float, y: float, text: str, size: float, style: str, stretch: bool) -> None:
        pdf.set_font("Helvetica", style, size)
        words = text.split()
        widths = [pdf.get_string_width(w) for w in words]
        gap = (width - sum(widths)) / (len(words) - 1) if stretch else 0.28 * size
        assert not stretch or 0.9 * size < gap < 3.5 * size, (text, gap / size)
        for word, w in zip(words, widths, strict=True):
            pdf.text(x, y, word)
            x += w + gap

    for number, columns in enumerate(LOOSE_PAGES, 1):
        pdf.add_page()
        pdf.set_font("Helvetica", "", 8)
        pdf.text(margin, 40, "Loose Journal of Spine Care · 2024")
        pdf.text(306 - pdf.get_string_width(str(number)) / 2, 760, str(number))
        top = 72.0
        if number == 1:
            pdf.set_font("Helvetica", "B", 17)
            for n, text in enumerate(LOOSE_TITLE):
                pdf.text(margin, 84 + 21 * n, text)
            pdf.set_font("Helvetica", "", 10.5)
            for n, text in enumerate(LOOSE_AUTHORS):
                pdf.text(margin, 140 + 13 * n, text)
            top = 175.0
        for column, items in enumerate(columns):
            x, y = margin + column * (width + gutter), top
            for kind, lines, ends in items:
                for n, text in enumerate(lines):
                    if kind == "h":
                        line(x, y + 2, text, 12, "B", False)
                        y += 15
                    else:
                        line(x, y, text, 10, "", not (ends and n == len(lines) - 1))
                        y += 13.5
                y += 6
    pdf.output(str(path))
    return path


def test_loosely_justified_columns_are_read_whole_and_in_order(tmp_path: Path) -> None:
    content = read_pdf(loose_two_columns(tmp_path / "loose.pdf"))
    # Rows of one word a fragment on both sides are not a table across the gutter (the columns
    # were interleaved); "the" starting pages 2 and 3 and "100" in a last row are not running
    # lines; compounds broken at their hyphen keep it; the balanced last page ends a paragraph.
    assert body(content) == loose_paragraphs()
    assert "support tissue regeneration in" in body(content)[3]  # TeX's kind of break
    assert [(b.text, b.level) for b in content.blocks if b.level] == [
        ("Why Disc Degeneration Causes Low Back Pain", 2)
    ]
    # The title's and the authors' last lines, left of the gutter, belong to them.
    assert content.metadata.title == " ".join(LOOSE_TITLE)
    assert content.metadata.authors == tuple(
        name.strip() for name in " ".join(LOOSE_AUTHORS).split(",")
    )


# -- one column, headings only in the outline --------------------------------------------------


@pytest.fixture(scope="module")
def outlined(tmp_path_factory: pytest.TempPathFactory) -> tuple[samples.Article, PdfContent]:
    article = samples.outline_article(tmp_path_factory.mktemp("pdf") / "outline.pdf")
    return article, read_pdf(article.path)


def test_headings_from_the_outline(outlined: tuple[samples.Article, PdfContent]) -> None:
    article, content = outlined
    # Set in the body font: only the bookmarks say these are headings, and at which level.
    assert [(b.text, b.level) for b in content.blocks if b.level] == [
        *article.headings[:-2],
        ("Appendix", 2),
    ]
    assert ("Recruitment and consent", 3) in article.headings
    assert article.headings[-2] == ("References", 2)


def test_one_column_paragraphs_pages_and_appendix(
    outlined: tuple[samples.Article, PdfContent],
) -> None:
    article, content = outlined
    assert content.page_count == 2
    assert body(content) == article.paragraphs  # block paragraphs, one across the page break
    assert body(content)[-1] == samples.APPENDIX  # after the reference list: back in blocks
    assert [b.page for b in content.blocks if b.text == "Discussion"] == [2]
    assert content.references == [
        f"{n}. {e.split('] ')[1]}" for n, e in enumerate(samples.REFERENCES, 1)
    ]
    assert not any(re.fullmatch(r"page \d+ of \d+", b.text, re.I) for b in content.blocks)


def test_margin_line_numbers_are_dropped(tmp_path: Path) -> None:
    article = samples.outline_article(tmp_path / "numbered.pdf", line_numbers=True)
    with pdfplumber.open(article.path) as pdf:
        assert re.search(r"^1 Introduction$", pdf.pages[0].extract_text(), re.M)  # drawn
    content = read_pdf(article.path)
    assert body(content) == article.paragraphs
    assert [b.text for b in content.blocks if b.level][:2] == ["Introduction", "Participants"]


def test_metadata_from_the_info_dictionary(outlined: tuple[samples.Article, PdfContent]) -> None:
    _, content = outlined
    assert content.metadata.title == samples.OUTLINE_TITLE
    assert content.metadata.authors == ("Dana Smith", "Eli Jones")
    assert not any(b.text == samples.OUTLINE_TITLE for b in content.blocks)


def test_numbered_reference_list_without_a_heading(tmp_path: Path) -> None:
    article = samples.unheaded_references_pdf(tmp_path / "unheaded.pdf")
    content = read_pdf(article.path)
    assert content.references == article.references and len(article.references) == 5
    # One page cannot show that its header repeats: that line stays.
    assert body(content) == [samples.JOURNAL.upper(), *article.paragraphs]


@pytest.mark.parametrize(
    ("left", "right", "vocab", "joined"),
    [
        ("tissue regen-", "eration in", set(), "tissue regeneration in"),
        ("the COVID-", "19 cohort", set(), "the COVID-19 cohort"),
        ("anti-", "TNF therapy", set(), "anti-TNF therapy"),
        ("HIV-", "positive adults", set(), "HIV-positive adults"),
        ("Müller, K.-", "R.; Smith", set(), "Müller, K.-R.; Smith"),
        ("structure-", "property links", {"structure-property"}, "structure-property links"),
        ("pre-", "dictions", {"predictions", "pre-dictions"}, "predictions"),
        ("soft\u00ad", "ware", set(), "software"),
        ("and/", "or", set(), "and/or"),
        ("a dash -", "then", set(), "a dash - then"),
        ("end of line", "next", set(), "end of line next"),
        ("potency assays", "—such as", set(), "potency assays—such as"),  # a closed dash
        ("a list:", "– first", set(), "a list: – first"),
        # Compounds broken at their own hyphen (browsers, Word) keep it: both parts are words,
        # the joined form is none; TeX's breaks inside a word are joined.
        ("involves non-", "surgical approaches", set(), "involves non-surgical approaches"),
        ("While longer-", "term data", set(), "While longer-term data"),
        ("other pain-", "modulating drugs", set(), "other pain-modulating drugs"),
        ("for spine-", "related conditions", set(), "for spine-related conditions"),
        ("Adipose-", "derived MSCs", {"adipose"}, "Adipose-derived MSCs"),  # "adipose tissue"
        ("tissue regen-", "eration", set(), "tissue regeneration"),
        ("predicting solubil-", "ity,", set(), "predicting solubility,"),
        ("immuno-", "modulatory signals", set(), "immunomodulatory signals"),
        ("Scaffold-", "ing Tree", {"scaffold"}, "Scaffolding Tree"),  # "ing" is no compound's half
        # What the document spells elsewhere wins, the more common spelling where it has both.
        ("pain-", "modulating", {"painmodulating"}, "painmodulating"),
        ("black-", "box models", Counter({"black-box": 14, "blackbox": 1}), "black-box models"),
    ],
)
def test_join_lines(left: str, right: str, vocab: set[str], joined: str) -> None:
    assert join_lines(left, right, vocab) == joined


def test_without_the_word_list_line_end_hyphens_are_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pdf_lines, "english_words", frozenset)
    assert join_lines("involves non-", "surgical", set()) == "involves nonsurgical"
    assert join_lines("involves non-", "surgical", {"non-surgical"}) == "involves non-surgical"


def test_the_pieces_of_broken_words_are_not_words_of_the_document() -> None:
    found = pdf_lines.words_of(["tissue regen-", "eration and spine-", "related pain", "spine"])
    assert "regen" not in found and "eration" not in found and "related" not in found
    assert found["spine"] == 1 and found["tissue"] == 1


# -- files that cannot be used -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (samples.encrypted_pdf, "encrypted; remove the password and add it again"),
        (samples.image_only_pdf, "no extractable text (a scanned image?); OCR is not supported"),
        (samples.truncated_pdf, "not a readable PDF (corrupt or truncated: no %%EOF end marker)"),
        (samples.garbled_pdf, "not a readable PDF (corrupt or truncated: "),
        (samples.zero_page_pdf, "the PDF has no pages"),
        (lambda p: p.write_bytes(b"") and p, "empty file"),
        (lambda p: p.write_text("Title\n\nSome text.\n") and p, "not a PDF file (no %PDF- header)"),
    ],
    ids=["encrypted", "image-only", "truncated", "garbled", "zero-pages", "empty", "not-pdf"],
)
def test_bad_files_are_refused_with_a_reason(write: object, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "paper.pdf"
    write(path)  # type: ignore[operator]
    started = time.monotonic()
    with pytest.raises(CorpusFileError) as caught:
        read_pdf(path)
    assert str(caught.value).startswith(reason) and "\n" not in str(caught.value)
    assert time.monotonic() - started < 5


def test_too_many_pages_names_the_limit_and_the_setting(tmp_path: Path) -> None:
    path = samples.simple_pdf(tmp_path / "long.pdf", pages=5)
    with pytest.raises(
        CorpusFileError, match=r"too many pages \(5; the limit is 3, set by QA_MAX_PDF_PAGES\)"
    ):
        read_pdf(path, max_pages=3)
    assert read_pdf(path, max_pages=5).page_count == 5


def test_a_pdf_that_needs_no_password_to_open_is_read(tmp_path: Path) -> None:
    path = samples.encrypted_pdf(tmp_path / "protected.pdf", user_password=None)
    assert body(read_pdf(path)) == ["Encrypted text about stromal cells."]


def test_reading_is_bounded_in_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_text, "TIME_LIMIT_S", -1.0)
    with pytest.raises(CorpusFileError, match=r"reading took over .* stopped at page 1 of 2"):
        read_pdf(samples.simple_pdf(tmp_path / "slow.pdf", pages=2))


# -- real PDFs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preprint() -> PdfContent:
    if not PREPRINT.is_file():
        pytest.skip(f"the real test PDFs are not in {REAL_PDFS.resolve()} (see its README.md)")
    started = time.perf_counter()
    content = read_pdf(PREPRINT)
    seconds = time.perf_counter() - started
    print(f"\n{PREPRINT.name}: {content.page_count} pages read in {seconds:.2f} s")
    assert seconds < 20  # about 3 s here; a figure page alone took 5 s before forms were skipped
    return content


@real
def test_preprint_title_authors_and_headings(preprint: PdfContent) -> None:
    meta = preprint.metadata
    assert meta.title == "A Perspective on Explanations of Molecular Prediction Models"
    assert meta.authors == ("Geemi P. Wellawatte", "Heta A. Gandhi", "Aditi Seshadri",
                            "Andrew D. White")  # fmt: skip
    headings = [(b.text, b.level, b.page) for b in preprint.blocks if b.level]
    assert headings[:4] == [("Abstract", 2, 1), ("Introduction", 2, 2), ("Theory", 2, 4),
                            ("Self-explaining models", 3, 6)]  # fmt: skip
    names = [text for text, _, _ in headings]
    for name in ("Counterfactual explanations", "Applications", "Solubility prediction",
                 "Discussion", "Conclusion and outlook", "Acknowledgements"):  # fmt: skip
        assert name in names
    assert ("Similarity to adjacent fields", 4) in [(t, lv) for t, lv, _ in headings]
    assert not any("Wellawatte" in b.text or "University of Rochester, Rochester" in b.text
                   for b in preprint.blocks[:3])  # fmt: skip


@real
def test_preprint_has_no_running_lines(preprint: PdfContent) -> None:
    assert preprint.page_count == 41
    assert not any(re.fullmatch(r"\d+", b.text) for b in preprint.blocks)
    assert {b.page for b in preprint.blocks} == set(range(1, 25))  # references from page 24


@real
def test_preprint_reference_list(preprint: PdfContent) -> None:
    refs = preprint.references
    assert len(refs) == 149
    assert refs[0].startswith("(1) Choudhary, K.; DeCost, B.;")
    assert refs[1].endswith("Chemical Reviews 2021, 121, 9816–9872, PMID: 34232033.")
    # TeX accents drawn over the letter ("u¨", "´ı") come out composed.
    assert "Müller, K.-R.;" in refs[1] and "Csányi, G." in refs[3]
    assert refs[13].startswith("(14) Arrieta, A. B.; Díaz-Rodríguez, N.;")
    assert refs[-1] == ("(149) Stumpfe, D.; Bajorath, J. Exploring Activity Cliffs in Medicinal "
                        "Chemistry. Journal of Medicinal Chemistry 2012, 55, 2932–2942, PMID: "
                        "22236250.")  # fmt: skip
    assert not any("Choudhary, K." in b.text or b.text == "References" for b in preprint.blocks)
    # The last section before the list is whole.
    assert preprint.blocks[-2].text == "Acknowledgements"
    assert preprint.blocks[-1].text.endswith(
        "the University of Rochester for providing computational resources."
    )


@real
def test_preprint_text(preprint: PdfContent) -> None:
    text = "\n".join(b.text for b in preprint.blocks)
    assert "chemical counterfactuals" in text
    # "solubil-|ity" and "pre-|dictions" end lines of the abstract in the PDF.
    assert "their applications in predicting solubility, blood-brain barrier permeability" in text
    assert "can explain DL predictions while giving insight into structure-property" in text
    # A paragraph interrupted by a full-page figure goes on after its caption.
    assert "contributing to the prediction. For example, we see that adding acidic" in text
    assert "attainable through experiments" in text  # glued as one word by pdfminer's spacing
    assert "(cid:" not in text
    captions = [b.text for b in preprint.blocks if b.caption]
    assert [c.split(":")[0] for c in captions] == [f"Figure {n}" for n in range(1, 6)]


@real
def test_vector_figures_without_text_are_not_parsed() -> None:
    with pdfplumber.open(PREPRINT) as pdf:
        figure, nested = pdf.pages[17], pdf.pages[15]
        verdicts = [
            {name: pdf_text._may_show_text(ref) for name, ref in resolve1(xobjects).items()}
            for xobjects in (resolve1(p.page_obj.resources)["XObject"] for p in (figure, nested))
        ]
        # Page 18's figure: 2.3 MB of path operators and no text; page 16's nests other forms.
        assert verdicts == [{"Im4": False}, {"Im2": True}]
        started = time.perf_counter()
        chars = pdf_text._page_chars(figure, 18, {}).chars
        assert time.perf_counter() - started < 2  # 5 s when pdfminer reads the figure
    assert len(chars) == 1183 and "".join(c.text for c in chars[:11]) == "diction.For"


@real
def test_mixed_media_pdf() -> None:
    content = read_pdf(MIXED)
    assert content.metadata.title == "SF Districts in the style of Andy Warhol"  # not the file name
    texts = [b.text for b in content.blocks]
    assert [t for t in texts if t.startswith("Text under image")] == [
        f"Text under image {n}." for n in range(1, 6)
    ]
    assert texts.count("Col1 Col2 Val11 Val12 Val21 Val11") == 5  # each table, a block of its own
    assert texts.count("Inline LaTeX: E = mc2") == 5  # the formula inline, on its line
    formulas = [t for t in texts if t.startswith("x + n + a =")]
    assert len(formulas) == 5 and all(len(f) < 80 for f in formulas)
