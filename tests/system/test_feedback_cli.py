"""``python -m service feedback export|stats``: rated answers as evaluation questions that
:func:`load_questions` reads back, counts by day and outcome, and one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_settings, write_tiny_corpus
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.cli import main
from service.evaluation.dataset import load_questions
from service.feedback_store import SCHEMA_VERSION, FeedbackStore
from service.recent_answers import AnswerRecord

#: Two shapes of the stored citations: one entry per passage (as /api/ask gave them before) and
#: one per study with its quoted passages (as it gives them now); the export reads both.
PER_PASSAGE = [
    {"marker": 1, "chunk_id": "disc#0", "document_id": "disc", "text": "Seven percent."},
    {"marker": 2, "chunk_id": "knee#1", "document_id": "knee", "text": "Pain fell."},
    {"marker": 3, "chunk_id": "disc#2", "document_id": "disc", "text": "More."},
]
PER_STUDY = [
    {
        "marker": 1,
        "document_id": "knee",
        "passages": [{"chunk_id": "knee#0", "text": "a"}, {"chunk_id": "knee#1", "text": "b"}],
    }
]


def _record(answer_id: str, status: str, citations: object) -> AnswerRecord:
    return AnswerRecord(
        answer_id=answer_id,
        question=f"Question {answer_id}?",
        answer="An answer. [1]" if status == "answered" else "Not covered.",
        answer_status=status,
        citations_zlib=AnswerRecord.pack(json.dumps(citations)),
        resolution_json=None,
        mode="rerank",
        index_build="build-20260101T000000-abcdef",
        index_built_at="2026-01-01T00:00:00+00:00",
        reader="reader-0123456789ab",
        ranker="ranker-ba9876543210",
        answered_at="2026-01-01T09:00:00.000+00:00",
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Four ratings on two days: an answer rated up (with a comment), one in the per-study
    citation shape rated down, a not_covered rated down and a not_stated rated up."""
    path = tmp_path / "feedback.sqlite3"
    store = FeedbackStore(path)
    store.rate(_record("a1", "answered", PER_PASSAGE), "up", "clear, thanks")
    store.rate(_record("a2", "answered", PER_STUDY), "down", None)
    store.rate(_record("a3", "not_covered", []), "down", "it is in the knee study")
    store.rate(_record("a4", "not_stated", []), "up", None)
    store.close()
    conn = sqlite3.connect(path)
    with conn:
        for answer_id, day in (("a1", "01"), ("a2", "01"), ("a3", "02"), ("a4", "02")):
            at = f"2026-03-{day}T12:00:00.000+00:00"
            conn.execute(
                "UPDATE feedback SET created_at = ?, updated_at = ? WHERE answer_id = ?",
                (at, at, answer_id),
            )
    conn.close()
    return path


def test_export_reads_back_as_evaluation_questions(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "from-feedback.jsonl"
    assert main(["feedback", "export", "--db", str(db), "--out", str(out)]) == 0
    questions = load_questions(out, require_answers=False)
    assert [(q.id, q.question, q.kind, q.relevant_docs, q.answers) for q in questions] == [
        ("fb-1", "Question a1?", "in_scope", ("disc", "knee"), ()),
        ("fb-2", "Question a2?", "in_scope", ("knee",), ()),
        ("fb-3", "Question a3?", "in_scope", (), ()),  # a refusal rated down: answerable?
        ("fb-4", "Question a4?", "near_domain", (), ()),  # a refusal rated up: confirmed
    ]
    with pytest.raises(ValueError, match=":1: in-scope question needs relevant_docs and answers"):
        load_questions(out)  # not usable for evaluation until a person fills in answers

    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    test_set_keys = set(json.loads((ROOT / "eval/questions.jsonl").open().readline()))
    assert test_set_keys <= set(lines[0])  # the evaluation format's keys, and more
    assert lines[0]["candidate_chunks"] == ["disc#0", "knee#1", "disc#2"]
    assert lines[1]["candidate_chunks"] == ["knee#0", "knee#1"]
    assert lines[0]["feedback"] == {
        "feedback_id": 1,
        "answer_id": "a1",
        "rating": "up",
        "comment": "clear, thanks",
        "ratings": 1,
        "answer_status": "answered",
        "answer": "An answer. [1]",
        "resolution": None,
        "mode": "rerank",
        "answered_at": "2026-01-01T09:00:00.000+00:00",
        "rated_at": "2026-03-01T12:00:00.000+00:00",
        "index_build": "build-20260101T000000-abcdef",
        "index_built_at": "2026-01-01T00:00:00+00:00",
        "reader": "reader-0123456789ab",
        "ranker": "ranker-ba9876543210",
    }
    assert lines[2]["feedback"]["comment"] == "it is in the knee study"


def test_export_filters_by_rating_and_date(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def exported(*args: str) -> list[str]:
        capsys.readouterr()
        assert main(["feedback", "export", "--db", str(db), *args]) == 0
        return [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]

    assert exported() == ["fb-1", "fb-2", "fb-3", "fb-4"]
    assert exported("--rating", "down") == ["fb-2", "fb-3"]
    assert exported("--rating", "up", "--since", "2026-03-02") == ["fb-4"]
    assert exported("--since", "2026-03-02T12:00:00+00:00") == ["fb-3", "fb-4"]
    assert exported("--since", "2026-03-02T12:00:01") == []
    assert exported("--since", "2026-03-02T14:00:00+02:00") == ["fb-3", "fb-4"]  # 12:00 UTC


def test_stats_counts_by_day_and_outcome(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feedback", "stats", "--db", str(db)]) == 0
    assert capsys.readouterr().out == (
        f"4 rated answers in {db}\n"
        "\n"
        "day              up   down  total\n"
        "2026-03-01        1      1      2\n"
        "2026-03-02        1      1      2\n"
        "\n"
        "outcome          up   down  total\n"
        "answered          1      1      2\n"
        "not_stated        1      0      1\n"
        "not_covered       0      1      1\n"
    )


def test_stats_of_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feedback.sqlite3"
    FeedbackStore(path).close()
    assert main(["feedback", "stats", "--db", str(path)]) == 0
    assert capsys.readouterr().out == f"0 rated answers in {path}\n"


def test_the_default_database_is_in_the_index_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ratings given through the API, found by the CLI from the settings alone, with the
    citations' documents as candidate labels."""
    settings = make_settings(tmp_path)
    write_tiny_corpus(settings.corpus_dir)
    with TestClient(create_app(settings, load_in_background=False)) as client:
        answer = client.post("/api/ask", json={"question": "Did knee cartilage grow back?"})
        answer_id = answer.json()["answer_id"]
        rated = client.post("/api/feedback", json={"answer_id": answer_id, "rating": "up"})
        assert rated.status_code == 201
    capsys.readouterr()
    assert main(["feedback", "export", "--index-dir", str(settings.index_dir)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    exported = json.loads(line)
    assert exported["feedback"]["answer_id"] == answer_id
    assert exported["relevant_docs"] == ["knee"]
    cited = answer.json()["citations"]
    assert exported["candidate_chunks"] == [p["chunk_id"] for c in cited for p in c["passages"]]


def test_a_missing_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env["PYTHONPATH"] = str(ROOT)
    missing = tmp_path / "none.sqlite3"
    result = subprocess.run(
        [sys.executable, "-m", "service", "feedback", "stats"],
        cwd=tmp_path,
        env={**env, "QA_FEEDBACK_DB": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"error: no feedback database at {missing}; nothing has been rated yet, or set "
        "QA_FEEDBACK_DB to the file\n"
    )
    assert not missing.exists()


def test_a_newer_database_is_one_line_and_exit_1(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for action in ("stats", "export"):
        assert main(["feedback", action, "--db", str(db)]) == 1
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith(
            f"error: the feedback database {db} has schema version {SCHEMA_VERSION + 1}, newer"
        )


def test_bad_arguments_are_usage_errors(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--since", "last week"], ["--rating", "sideways"]):
        with pytest.raises(SystemExit) as caught:
            main(["feedback", "export", "--db", str(db), *args])
        assert caught.value.code == 2
    assert "'last week' is not a date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["feedback"])  # an action is required


def test_an_unwritable_out_file_is_one_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = db.parent / "missing-folder" / "x.jsonl"
    assert main(["feedback", "export", "--db", str(db), "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write {out} (")
