"""The evaluation figures of the embedded and the Qdrant backend (local mode) on the test set
agree within 0.01 on every metric of every mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from service.config import Settings, load_settings
from service.evaluation.dataset import load_questions
from service.evaluation.runner import EngineBackend, run_evaluation

QUESTIONS = ROOT / "eval" / "questions.jsonl"


@pytest.mark.model
def test_evaluation_figures_agree(
    real_settings: Settings, real_engine: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from service.engine import Engine
    from service.qdrant_index import close_clients

    folder: Path = tmp_path_factory.mktemp("qdrant")
    settings = load_settings(
        **{**real_settings.model_dump(), "backend": "qdrant", "qdrant_path": str(folder)}
    )
    questions = load_questions(QUESTIONS)
    try:
        # The same local build (its embeddings reused), published to Qdrant and served there.
        qdrant, _ = Engine.start(settings, embedder=real_engine.embedder, reader=real_engine.reader)
        assert type(qdrant.data).__name__ == "QdrantIndex"
        left = run_evaluation(EngineBackend(real_engine), questions)
        right = run_evaluation(EngineBackend(qdrant), questions)
    finally:
        close_clients()
    assert set(left.modes) == set(right.modes)
    for mode, a in left.modes.items():
        b = right.modes[mode]
        for group in ("retrieval", "answer", "abstention"):
            x, y = getattr(a, group), getattr(b, group)
            assert set(x) == set(y)
            for metric, value in x.items():
                if isinstance(value, int | float) and isinstance(y[metric], int | float):
                    assert abs(value - y[metric]) <= 0.01, (
                        f"{mode} {metric}: {value} vs {y[metric]}"
                    )
