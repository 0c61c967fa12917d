"""The PDF reader: reading order, running lines, hyphenation, headings, captions, references,
metadata and bad files, on PDFs written by ``pdf_samples`` and on two real ones."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pdf_samples as samples
import pdfplumber
import pytest
from pdfminer.pdftypes import resolve1

from service.documents import pdf_text
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
    ],
)
def test_join_lines(left: str, right: str, vocab: set[str], joined: str) -> None:
    assert join_lines(left, right, vocab) == joined


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
