"""The synthetic build the scale section starts the whole service on (its parts that need no
model: the generated corpus and its BM25)."""

from __future__ import annotations

import numpy as np

from service.evaluation.bench.service_scale import (
    CHUNKS_PER_DOCUMENT,
    SENTENCES_PER_CHUNK,
    SyntheticCorpus,
    _bm25,
    _Chunks,
    _Documents,
)
from service.lexical import tokenize


def test_synthetic_chunks_point_into_their_document() -> None:
    corpus = SyntheticCorpus(25)
    documents, chunks = _Documents(corpus), _Chunks(corpus)
    assert len(documents) == 3 and len(chunks) == 25  # 10 + 10 + 5
    assert [c.ordinal for c in chunks][:12] == [*range(CHUNKS_PER_DOCUMENT), 0, 1]
    by_id = {d.id: d for d in documents}
    for chunk in chunks:
        text = by_id[chunk.document_id].text
        assert text[chunk.start : chunk.end] == chunk.text
        assert len(chunk.sentences) == SENTENCES_PER_CHUNK
        assert all(s.endswith(".") for s in chunk.sentence_texts(text))
    assert 700 < np.mean([len(c.text) for c in chunks]) < 1300  # about 1 KB a chunk
    # The same numbers give the same corpus.
    assert list(_Chunks(SyntheticCorpus(25))) == list(chunks)


def test_synthetic_bm25_scores_as_bm25s_indexes() -> None:
    import bm25s

    corpus = SyntheticCorpus(30)
    ours = _bm25(corpus)
    reference = bm25s.BM25()
    reference.index([tokenize(c.text) for c in _Chunks(corpus)], show_progress=False)
    terms = list(ours.vocab_dict)[:5]  # the commonest words come first
    for term in terms:
        scores = ours.get_scores([term])
        assert (scores > 0).sum() >= 3  # a word in several chunks
        assert np.allclose(scores, reference.get_scores([term]), atol=1e-5)
    assert np.allclose(ours.get_scores(terms), reference.get_scores(terms), atol=1e-4)
