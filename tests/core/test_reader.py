"""The reader: its shipped weights and manifest, loading and fallback, and its training code.

Tests marked ``model`` load the bundled all-MiniLM-L6-v2 (the reader's base); the rest run on
the manifest and on hand-made inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_settings

from service.checksums import sha256_file
from service.config import SettingsError
from service.evaluation.dataset import Question, held_out, near_copies
from service.evaluation.reader_data import (
    ReadingExample,
    SyntheticFileError,
    SyntheticPassage,
    SyntheticQuestion,
    load_synthetic_file,
    synthetic_examples,
    synthetic_files,
)
from service.evaluation.reader_training import (
    TrainConfig,
    reading_metrics,
    score_examples,
    train,
)
from service.evaluation.runner import auroc
from service.reader import OnnxReader, load_reader
from service.reader_manifest import (
    DEFAULT_DIR,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ReaderError,
    ReaderManifest,
    verified_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
MAX_WEIGHTS_BYTES = 25 * 1024 * 1024
ANSWER = "The pooled reoperation rate was low, around 7%."
UNRELATED = "Low back pain is one of the most common health problems worldwide."


# -- the shipped weights -------------------------------------------------------------------------


def test_shipped_manifest_matches_the_training_inputs() -> None:
    manifest = verified_manifest(DEFAULT_DIR)  # the weights' hash matches the manifest
    assert (DEFAULT_DIR / WEIGHTS_FILE).stat().st_size <= MAX_WEIGHTS_BYTES
    training = manifest.training
    shipped = {r["path"]: r["sha256"] for r in training["synthetic_files"]}
    in_repo = {p.as_posix(): sha256_file(ROOT / p) for p in synthetic_files(ROOT / "eval/reader")}
    in_repo = {f"eval/reader/{Path(k).name}": v for k, v in in_repo.items()}
    assert shipped == in_repo, "retrain: python -m service train-reader (see README)"
    for record in training["development_files"]:
        assert sha256_file(ROOT / record["path"]) == record["sha256"], record["path"]
    assert "eval/questions.jsonl" not in json.dumps(training["development_files"])
    assert manifest.metrics["held_out_development"]["auroc_near_domain"] > 0.5
    assert training["config"]["layers"] == manifest.layers


@pytest.mark.model
def test_shipped_manifest_names_the_installed_base_model() -> None:
    from service.reader import BASE_WEIGHTS_FILE, base_model_dir

    manifest = ReaderManifest.load(DEFAULT_DIR / MANIFEST_FILE)
    assert manifest.base_sha256 == sha256_file(base_model_dir() / BASE_WEIGHTS_FILE)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> OnnxReader:
    return OnnxReader(DEFAULT_DIR, cache_dir=tmp_path_factory.mktemp("reader-onnx"))


@pytest.mark.model
def test_shipped_reader_loads_and_scores(shipped: OnnxReader) -> None:
    from service.reader import answerability

    logits = shipped.score(
        "What was the reoperation rate after disc injection?", [ANSWER, UNRELATED]
    )
    assert logits.shape == (2,) and np.all(np.isfinite(logits))
    assert logits[0] > logits[1]
    answered = answerability(logits)
    asked_elsewhere = answerability(
        shipped.score("How much does a disc injection cost?", [ANSWER, UNRELATED])
    )
    assert answered > asked_elsewhere
    assert shipped.score("anything", []).shape == (0,)


@pytest.mark.model
def test_onnx_export_gives_the_torch_scores(shipped: OnnxReader) -> None:
    from service.evaluation.reader_training import TorchScorer
    from service.reader import load_module

    module, manifest = load_module(DEFAULT_DIR)
    sentences = [ANSWER, UNRELATED, "These studies included 245 patients."]
    question = "How many patients were in the back pain studies?"
    expected = TorchScorer(module, manifest.max_length).score(question, sentences)
    got = shipped.score(question, sentences)
    np.testing.assert_allclose(got, expected, atol=1e-3)


# -- loading and fallback ------------------------------------------------------------------------


def test_reader_off_loads_nothing(tmp_path: Path) -> None:
    assert load_reader(make_settings(tmp_path, reader="off")) is None


def test_missing_weights_warn_and_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import service.reader as reader_module

    monkeypatch.setattr(reader_module, "DEFAULT_DIR", tmp_path / "no-reader")
    with caplog.at_level(logging.WARNING, logger="service.reader"):
        assert load_reader(make_settings(tmp_path, reader="on")) is None
    (record,) = [r for r in caplog.records if r.name == "service.reader"]
    assert "reader not used" in record.getMessage()
    assert "cannot read the reader manifest" in record.getMessage()


def test_mismatched_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "reader"
    shutil.copytree(DEFAULT_DIR, folder)
    with (folder / WEIGHTS_FILE).open("r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ReaderError, match="do not match their manifest"):
        verified_manifest(folder)
    with pytest.raises(SettingsError, match=r"QA_READER_PATH: .*do not match"):
        make_settings(tmp_path, reader_path=folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ReaderError, match="are missing; run python -m service train-reader"):
        verified_manifest(folder)


def test_bad_reader_settings_are_refused(tmp_path: Path) -> None:
    for bad in ({"reader": "maybe"}, {"reader_threshold": 1.5}, {"reader_max_candidates": 0}):
        with pytest.raises(SettingsError):
            make_settings(tmp_path, **bad)


# -- training data and code ----------------------------------------------------------------------


def test_synthetic_files_load(tmp_path: Path) -> None:
    files = synthetic_files(ROOT / "eval/reader")
    assert len(files) >= 6
    passages = [p for f in files for p in load_synthetic_file(f)]
    questions = [q for p in passages for q in p.questions]
    assert len(questions) >= 3000
    assert {q.kind for q in questions} == {"answerable", "unanswerable", "unrelated"}
    bad = tmp_path / "synthetic_bad.jsonl"
    line = {"id": "x", "domain": "d", "sentences": ["One two three four."], "questions": []}
    bad.write_text(json.dumps(line) + "\n" + '{"id": "y"}\n', encoding="utf-8")
    with pytest.raises(SyntheticFileError, match=r"synthetic_bad.jsonl:2: not a synthetic"):
        load_synthetic_file(bad)
    line["questions"] = [{"question": "Q?", "kind": "answerable", "answer_sentences": [5]}]
    bad.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(SyntheticFileError, match="without valid answer_sentences"):
        load_synthetic_file(bad)


def _passages() -> list[SyntheticPassage]:
    return [
        SyntheticPassage(
            f"p{n}",
            "test",
            tuple(f"Passage {n} sentence {i} says something." for i in range(5)),
            (
                SyntheticQuestion(
                    f"What does sentence 3 of passage {n} say?", "answerable", "factoid", (3,)
                ),
                SyntheticQuestion(f"How much does passage {n} cost?", "unanswerable", None, ()),
            ),
        )
        for n in range(4)
    ]


def test_synthetic_examples_mark_answers_and_add_distractors() -> None:
    examples = synthetic_examples(_passages(), max_candidates=8, seed=1)
    assert len(examples) == 8
    first = examples[0]
    assert first.kind == "answerable" and first.group == "p0"
    assert len(first.candidates) == 8
    assert [c for c, y in zip(first.candidates, first.labels, strict=True) if y] == [
        "Passage 0 sentence 3 says something."
    ]
    assert sum(c.startswith("Passage 0 ") for c in first.candidates) == 5
    assert not any(examples[1].labels)  # unanswerable: every candidate is a negative
    assert synthetic_examples(_passages(), 8, seed=1) == examples  # seeded


def test_auroc_and_reading_metrics() -> None:
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5], [0.5]) == 0.5
    assert auroc([], [0.1]) is None

    class Scorer:
        def score(self, _question: str, sentences: list[str]) -> np.ndarray:
            return np.asarray([3.0 if "yes" in s else -3.0 for s in sentences])

    examples = [
        ReadingExample("q1", ("yes", "no"), (True, False), "answerable", None, "", "g"),
        ReadingExample("q2", ("no", "yes"), (False, False), "unanswerable", None, "", "g"),
        ReadingExample("q3", ("no", "no"), (False, False), "unanswerable", None, "", "g"),
    ]
    metrics = reading_metrics(score_examples(Scorer(), examples))
    assert metrics["top1_with_answer_candidate"] == 1.0
    assert metrics["auroc_near_domain"] == 0.75  # q2 scores as high as q1


def test_near_copies_and_held_out_split() -> None:
    vectors = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.0, 1.0]}

    def embed(text: str) -> np.ndarray:
        return np.asarray(vectors[text.split()[0].lower()], dtype=np.float32)

    test = [Question("t1", "a test", "in_scope", None, ("d",), ("x",))]
    dev = [
        Question("d1", "a again", "in_scope", None, ("d",), ("x",)),  # cosine 1.0
        Question("d2", "b close", "in_scope", None, ("d",), ("x",)),  # cosine 0.8
        Question("d3", "A  TEST", "near_domain", None, (), ()),  # same words
    ]
    found = near_copies(dev, test, embed, threshold=0.85)
    assert [(c.question_id, c.copies) for c in found] == [("d1", "t1"), ("d3", "t1")]
    assert held_out(Path("eval/dev_questions_5.jsonl"), dev[1])
    share = sum(
        held_out(Path("eval/dev_questions.jsonl"), Question(f"q{n}", "", "in_scope", None, (), ()))
        for n in range(1000)
    )
    assert 150 < share < 250  # a fifth


@pytest.mark.model
def test_training_is_deterministic() -> None:
    from service.reader import trained_state

    examples = synthetic_examples(_passages(), max_candidates=6, seed=1)
    config = TrainConfig(layers=1, epochs=1, questions_per_batch=4, precision="fp32")
    first = trained_state(train(examples, config))
    second = trained_state(train(examples, config))
    assert first.keys() == second.keys() and len(first) > 4
    assert all(bool((first[k] == second[k]).all()) for k in first)
    assert not any(k.startswith("encoder.embeddings.") for k in first)  # not shipped
