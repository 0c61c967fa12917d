"""A real paper in the corpus: the 41-page preprint in ../shared/pdfs, beside the five MSC
articles, is answered from with its title and page cited, and the MSC questions are not
disturbed by it."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, make_settings

from service.engine import Engine

pytestmark = pytest.mark.model
PREPRINT = ROOT.parent / "shared" / "pdfs" / "explanations-molecular-prediction.pdf"
if not PREPRINT.is_file():
    pytest.skip(f"the real test PDFs are not here ({PREPRINT.parent}, see ../shared)",
                allow_module_level=True)  # fmt: skip


def test_a_real_preprint_is_answered_with_its_page(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, CORPUS, model="bundled", reader="on")
    shutil.copy(PREPRINT, settings.corpus_dir / PREPRINT.name)
    started = time.perf_counter()
    engine, _ = Engine.start(settings)
    print(f"\nbuilt the index with the preprint in {time.perf_counter() - started:.1f} s")
    answer = engine.ask("What are chemical counterfactuals used for?")
    assert answer.status == "answered", answer.text
    cited = answer.citations[0]
    assert cited.document.path == PREPRINT.name
    assert cited.document.title.startswith("A Perspective on Explanations of Molecular")
    first = cited.passages[0]
    assert first.pages is not None and 1 <= first.pages.first <= 41
    # The cited page is the PDF's own: the quoted sentence's words are on that page.
    import pdfplumber

    words = re.findall(r"[A-Za-z]{5,}", answer.sentences[0].text)[:8]
    with pdfplumber.open(PREPRINT) as pdf:
        printed = pdf.pages[first.pages.first - 1].extract_text().replace("-\n", "")
    found = [w for w in words if w in printed]
    assert len(found) >= len(words) - 1, (first.pages, words, found)
    # The MSC questions are answered from the MSC articles as before.
    msc = engine.ask("What was the reoperation rate after MSC disc injection?")
    assert msc.status == "answered" and msc.citations[0].document.id == "zhang-2023"
