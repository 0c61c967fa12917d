"""Chunk boundaries, offsets, token budget and id stability (service/chunking.py)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from conftest import CORPUS

from service.chunking import Chunk, chunk_document, sections, split_sentences
from service.documents import Document, load_corpus
from service.embedding import HashEmbedder

COUNT = HashEmbedder().count_tokens
HEADING_LINE = re.compile(r"^#{1,6}[ \t]", re.MULTILINE)


@pytest.fixture(scope="module")
def corpus_docs() -> list[Document]:
    docs = load_corpus(CORPUS).documents
    assert len(docs) == 5
    return docs


def texts(text: str) -> list[str]:
    return [text[s.start : s.end] for s in split_sentences(text)]


# -- sentences ---------------------------------------------------------------------------------


def test_split_sentences_keeps_abbreviations_initials_and_decimals_together() -> None:
    text = (
        "Zhang W. et al. reported a 3.5 mm gain (Fig. 2) in the U.S. trial. "
        "Doses, e.g. 10 million cells, varied. Pain fell! Did it last? Yes."
    )
    assert texts(text) == [
        "Zhang W. et al. reported a 3.5 mm gain (Fig. 2) in the U.S. trial.",
        "Doses, e.g. 10 million cells, varied.",
        "Pain fell!",
        "Did it last?",
        "Yes.",
    ]


def test_split_sentences_keeps_closing_quotes_and_brackets() -> None:
    # The closing quote or bracket after the full stop belongs to the sentence; it used to be
    # dropped from both neighbours.
    text = 'Patients said "it helped." The trial ended. (Two withdrew.) Follow-up was short.'
    assert texts(text) == [
        'Patients said "it helped."',
        "The trial ended.",
        "(Two withdrew.)",
        "Follow-up was short.",
    ]


def test_split_sentences_offsets_and_reference_line() -> None:
    spans = split_sentences("One two. Three four.", offset=100)
    assert [(s.start, s.end) for s in spans] == [(100, 108), (109, 120)]
    ref = "Source: Zhang, W., & Li, J. (2023). A title. A Journal, 11, 1. https://doi.org/10.1/x"
    assert texts(ref) == [ref]  # a reference is one sentence despite its full stops


# -- boundaries on the real corpus -------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "context"),
    [(160, 1, True), (64, 0, True), (48, 2, False), (512, 1, True), (32, 1, True)],
)
def test_chunks_never_cut_sentences_nor_cross_sections(
    corpus_docs: list[Document], max_tokens: int, overlap: int, context: bool
) -> None:
    for doc in corpus_docs:
        chunks = chunk_document(
            doc,
            max_tokens=max_tokens,
            overlap_sentences=overlap,
            count_tokens=COUNT,
            with_context=context,
        )
        assert chunks
        secs = sections(doc)
        # Every sentence of every paragraph, as the splitter sees it.
        all_sentences = {
            (s.start, s.end): sec.heading
            for sec in secs
            for p in sec.paragraphs
            for s in split_sentences(doc.text[p.start : p.end], p.start)
        }
        covered: set[tuple[int, int]] = set()
        for i, chunk in enumerate(chunks):
            assert chunk.ordinal == i
            assert chunk.document_id == doc.id
            assert doc.text[chunk.start : chunk.end] == chunk.text
            assert not HEADING_LINE.search(chunk.text), "a chunk crosses a heading"
            spans = [(s.start, s.end) for s in chunk.sentences]
            assert spans == sorted(spans)
            assert spans[0][0] == chunk.start and spans[-1][1] == chunk.end
            for span in spans:
                # A whole sentence of this chunk's section: never cut, never from elsewhere.
                assert all_sentences.get(span) == chunk.section
                assert chunk.start <= span[0] < span[1] <= chunk.end
            covered.update(spans)
            sentences = chunk.sentence_texts(doc.text)
            assert sentences == [doc.text[a:b] for a, b in spans]
            assert all(s == s.strip() and s for s in sentences)
        assert covered == set(all_sentences), "some sentence is in no chunk"


@pytest.mark.parametrize("max_tokens", [48, 96, 160])
def test_chunks_respect_the_budget_unless_one_sentence_is_longer(
    corpus_docs: list[Document], max_tokens: int
) -> None:
    for doc in corpus_docs:
        for chunk in chunk_document(doc, max_tokens=max_tokens, count_tokens=COUNT):
            size = COUNT(chunk.embedding_text(doc.title))
            if len(chunk.sentences) > 1:
                assert size <= max_tokens, (doc.id, chunk.ordinal, size)


def test_sections_follow_the_headings(corpus_docs: list[Document]) -> None:
    zhang = next(d for d in corpus_docs if d.id == "zhang-2023")
    headings = [s.heading for s in sections(zhang)]
    assert headings[0] == zhang.title  # the introduction sits under the title
    assert "Safety and Reoperation Rates: A Reassuring Profile" in headings
    assert headings[-1] == "Reference"
    chunk = next(c for c in chunk_document(zhang) if "around 7%" in c.text)
    assert chunk.section == "Safety and Reoperation Rates: A Reassuring Profile"


# -- small synthetic documents -----------------------------------------------------------------


def make_doc(body: str, doc_id: str = "doc", title: str = "Title") -> Document:
    return Document(id=doc_id, title=title, text=f"# {title}\n\n{body}\n")


def test_overlong_sentence_is_its_own_uncut_chunk() -> None:
    long_sentence = "Cells " + " ".join(f"word{i}" for i in range(80)) + " grew."
    doc = make_doc(f"Short one. {long_sentence} Short two.")
    chunks = chunk_document(doc, max_tokens=40, overlap_sentences=0, count_tokens=COUNT)
    assert [c.text for c in chunks] == ["Short one.", long_sentence, "Short two."]


def test_overlap_repeats_the_last_sentence() -> None:
    sentences = [f"Sentence number {i} has a few words." for i in range(6)]
    doc = make_doc(" ".join(sentences))
    # Prefix "Title. Title.\n" is 5 tokens; each sentence 8: a 30 budget holds three sentences.
    chunks = chunk_document(doc, max_tokens=30, overlap_sentences=1, count_tokens=COUNT)
    assert [c.sentence_texts(doc.text) for c in chunks] == [
        sentences[0:3],
        sentences[2:5],
        sentences[4:6],
    ]
    no_overlap = chunk_document(doc, max_tokens=30, overlap_sentences=0, count_tokens=COUNT)
    assert [c.sentence_texts(doc.text) for c in no_overlap] == [sentences[0:3], sentences[3:6]]


def test_section_of_each_chunk_and_embedding_text() -> None:
    doc = make_doc("Intro sentence here.\n\n## Results\n\nPain fell.\n\n### Detail\n\nBy half.")
    chunks = chunk_document(doc, count_tokens=COUNT)
    assert [(c.section, c.text) for c in chunks] == [
        ("Title", "Intro sentence here."),
        ("Results", "Pain fell."),
        ("Detail", "By half."),
    ]
    assert chunks[0].embedding_text("Title") == "Title.\nIntro sentence here."
    assert chunks[1].embedding_text("Title") == "Title. Results.\nPain fell."
    assert chunks[1].embedding_text("Title", with_context=False) == "Pain fell."


def test_chunk_ids_are_stable_and_depend_on_settings(corpus_docs: list[Document]) -> None:
    doc = corpus_docs[0]
    ids = [c.id for c in chunk_document(doc)]
    assert all(i.startswith(f"{doc.id}:") for i in ids)
    assert len(set(ids)) == len(ids)
    # Same text and settings: same ids, even for a fresh Document object with another path.
    assert [c.id for c in chunk_document(replace(doc, path="elsewhere.md"))] == ids
    assert [c.id for c in chunk_document(doc)] == ids
    # Any chunking setting changes every id.
    for kwargs in ({"max_tokens": 150}, {"overlap_sentences": 0}, {"with_context": False}):
        other = [c.id for c in chunk_document(doc, **kwargs)]  # type: ignore[arg-type]
        assert not set(other) & set(ids), kwargs


def test_editing_one_section_keeps_the_other_ids() -> None:
    before = make_doc("Intro stays.\n\n## A\n\nAlpha text.\n\n## B\n\nBeta text.")
    after = make_doc("Intro stays.\n\n## A\n\nAlpha text changed.\n\n## B\n\nBeta text.")
    a = {c.section: c.id for c in chunk_document(before)}
    b = {c.section: c.id for c in chunk_document(after)}
    assert a["Title"] == b["Title"] and a["B"] == b["B"]
    assert a["A"] != b["A"]


def test_repeated_paragraph_gets_distinct_ids() -> None:
    para = "Same sentence with quite a few words in it. Another long sentence follows it here."
    doc = make_doc("\n\n".join([para, para, para]))
    chunks = chunk_document(doc, max_tokens=30, overlap_sentences=0, count_tokens=COUNT)
    assert [c.text for c in chunks] == [para, para, para]
    assert len({c.id for c in chunks}) == 3  # they used to collide
    again = chunk_document(doc, max_tokens=30, overlap_sentences=0, count_tokens=COUNT)
    assert [c.id for c in again] == [c.id for c in chunks]


def test_chunk_json_roundtrip(corpus_docs: list[Document]) -> None:
    for chunk in chunk_document(corpus_docs[1]):
        assert Chunk.from_json(chunk.to_json()) == chunk
