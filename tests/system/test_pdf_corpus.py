"""The corpus as PDFs: the five articles printed by Chromium (one and two columns), ingested
from the PDFs with their metadata files, answer the evaluation set about as well as the
Markdown originals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHROMIUM, CORPUS, ROOT, make_settings
from corpus_pdfs import print_corpus

from service.engine import Engine
from service.evaluation.dataset import TEST_QUESTIONS, load_questions
from service.evaluation.runner import EngineBackend, run_evaluation

pytestmark = [pytest.mark.model, pytest.mark.browser]
if not CHROMIUM.exists():
    pytest.skip("printing the corpus needs Debian's Chromium at /usr/bin/chromium",
                allow_module_level=True)  # fmt: skip
pytest.importorskip("playwright.sync_api", reason="install the test extras")

#: How far the PDF versions may fall behind the Markdown originals (rerank mode, test set).
TOLERANCE = {"hit@1": 0.03, "recall@5": 0.05, "mrr@10": 0.04, "answer_contains": 0.05}


def figures(engine: object) -> dict[str, float]:
    questions = load_questions(ROOT / TEST_QUESTIONS)
    result = run_evaluation(EngineBackend(engine), questions, modes=("rerank",))
    mode = result.modes["rerank"]
    return {**mode.retrieval, **mode.answer, **mode.abstention}


@pytest.fixture(scope="module")
def markdown_figures(real_engine: object) -> dict[str, float]:
    return figures(real_engine)


def pdf_engine(tmp: Path, columns: int) -> Engine:
    corpus = tmp / "corpus"
    print_corpus(CORPUS, corpus, columns)
    settings = make_settings(tmp, model="bundled", reader="on")
    engine, _ = Engine.start(settings)
    return engine


@pytest.mark.parametrize("columns", [1, 2])
def test_the_pdf_corpus_scores_like_the_markdown_one(
    tmp_path: Path, markdown_figures: dict[str, float], columns: int
) -> None:
    engine = pdf_engine(tmp_path, columns)
    data = engine.data
    assert sorted(data.documents) == sorted(p.stem for p in CORPUS.glob("*.md"))
    assert all(len(doc.pages) >= 2 for doc in data.documents.values())
    got = figures(engine)
    print(f"\n{columns} column(s): " + ", ".join(
        f"{k} {got[k]:.3f} (markdown {markdown_figures[k]:.3f})" for k in TOLERANCE
    ))  # fmt: skip
    for metric, slack in TOLERANCE.items():
        assert got[metric] >= markdown_figures[metric] - slack, metric
    assert got["unrelated_abstained"] == 1.0
    assert got["in_scope_abstained"] <= markdown_figures["in_scope_abstained"] + 0.02
