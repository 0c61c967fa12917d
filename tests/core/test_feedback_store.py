"""The feedback store (SQLite: schema version, WAL, migrations, concurrent writers) and the
in-memory record of recent answers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_settings

from service.feedback_store import (
    SCHEMA_VERSION,
    FeedbackDbMissingError,
    FeedbackStore,
    FeedbackStoreError,
    NewerSchemaError,
    db_path,
    utc_timestamp,
)
from service.recent_answers import AnswerRecord, RecentAnswers, new_answer_id

CITATIONS = '[{"marker":1,"chunk_id":"disc#0","document_id":"disc","text":"Ré-op 7%"}]'


def record(answer_id: str = "a1", **changes: object) -> AnswerRecord:
    base = AnswerRecord(
        answer_id=answer_id,
        question="What was the reoperation rate?",
        answer="About 7%. [1]",
        answer_status="answered",
        citations_zlib=AnswerRecord.pack(CITATIONS),
        resolution_json=None,
        mode="rerank",
        index_build="build-20260101T000000-abcdef",
        index_built_at="2026-01-01T00:00:00+00:00",
        reader="reader-0123456789ab",
        ranker="ranker-ba9876543210",
        answered_at="2026-01-01T00:00:01.000+00:00",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    opened = FeedbackStore(tmp_path / "sub" / "feedback.sqlite3")
    yield opened
    opened.close()


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_a_new_file_has_the_schema_and_is_in_wal_mode(store: FeedbackStore) -> None:
    assert store.path.is_file()
    assert store.schema_version() == SCHEMA_VERSION == 1
    assert _pragma(store.path, "user_version") == SCHEMA_VERSION
    assert _pragma(store.path, "journal_mode") == "wal"  # persistent: any connection sees it
    assert store.journal_mode == "wal"


def test_rate_then_read_back(store: FeedbackStore) -> None:
    stored = store.rate(record("a1"), "up", "helpful")
    assert stored.replaced is False
    [row] = store.rows()
    assert row.id == stored.feedback_id
    assert (row.answer_id, row.rating, row.comment, row.ratings) == ("a1", "up", "helpful", 1)
    assert row.citations_json == CITATIONS  # opaque, byte for byte
    assert (row.reader, row.ranker, row.mode) == (
        "reader-0123456789ab",
        "ranker-ba9876543210",
        "rerank",
    )
    again = store.rate(record("a1"), "down", None)
    assert again == replace(stored, replaced=True)
    [row] = store.rows()
    assert (row.rating, row.comment, row.ratings) == ("down", None, 2)
    with pytest.raises(ValueError, match="rating must be one of up, down"):
        store.rate(record("a2"), "sideways", None)  # type: ignore[arg-type]


def test_filters_and_tallies(store: FeedbackStore) -> None:
    store.rate(record("a1"), "up", None)
    store.rate(record("a2", answer_status="not_covered"), "down", None)
    store.rate(record("a3", answer_status="not_stated"), "down", None)
    assert [r.answer_id for r in store.rows(rating="down")] == ["a2", "a3"]
    assert store.rows(since="9999-01-01T00:00:00.000+00:00") == []
    assert len(store.rows(since="2000-01-01T00:00:00.000+00:00")) == 3
    today = store.rows()[0].updated_at[:10]
    assert store.tally("day") == {today: {"up": 1, "down": 2}}
    assert store.tally("outcome") == {
        "answered": {"up": 1, "down": 0},
        "not_covered": {"up": 0, "down": 1},
        "not_stated": {"up": 0, "down": 1},
    }


def test_timestamps_are_utc_and_sort_as_text() -> None:
    from datetime import datetime, timedelta, timezone

    assert utc_timestamp(datetime(2026, 1, 2)) == "2026-01-02T00:00:00.000+00:00"
    east = datetime(2026, 1, 2, 3, 0, tzinfo=timezone(timedelta(hours=3)))
    assert utc_timestamp(east) == "2026-01-02T00:00:00.000+00:00"


def test_the_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    first = FeedbackStore(path)
    first.rate(record("a1"), "up", "kept")
    first.close()
    second = FeedbackStore(path, create=False)
    try:
        assert [(r.answer_id, r.comment) for r in second.rows()] == [("a1", "kept")]
    finally:
        second.close()


def test_a_missing_file_is_refused_when_it_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FeedbackDbMissingError, match=r"no feedback database at .*nothing"):
        FeedbackStore(tmp_path / "none.sqlite3", create=False)
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    FeedbackStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(NewerSchemaError) as caught:
        FeedbackStore(path)
    assert str(caught.value) == (
        f"the feedback database {path} has schema version 7, newer than this service reads "
        f"({SCHEMA_VERSION}); upgrade the service, or set QA_FEEDBACK_DB to another file"
    )
    assert _pragma(path, "user_version") == 7


def test_an_empty_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    sqlite3.connect(path).close()  # an empty SQLite file: user_version 0, no tables
    store = FeedbackStore(path, create=False)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        store.rate(record(), "up", None)
        assert store.count() == 1
    finally:
        store.close()


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "feedback.sqlite3"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(FeedbackStoreError, match=r"cannot open the feedback database .*not a"):
        FeedbackStore(path)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """16 threads on two stores of the same file (two connections, as two server processes
    would have: they take turns through the busy timeout) write 800 ratings at once."""
    path = tmp_path / "feedback.sqlite3"
    one, two = FeedbackStore(path), FeedbackStore(path)
    start = threading.Barrier(16)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        store = one if n % 2 else two
        start.wait()
        try:
            for i in range(50):
                store.rate(record(f"t{n}-{i}"), "up" if i % 2 else "down", None)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert failures == []
        assert one.count() == two.count() == 800
        assert len({r.answer_id for r in one.rows()}) == 800
        assert one.tally("outcome") == {"answered": {"up": 400, "down": 400}}
    finally:
        one.close()
        two.close()


def test_the_default_path_is_in_the_index_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert db_path(settings) == settings.index_dir / "feedback.sqlite3"
    custom = tmp_path / "data" / "ratings.sqlite3"
    assert db_path(make_settings(tmp_path, feedback_db=custom)) == custom


# -- recent answers ------------------------------------------------------------------------------


def test_answer_ids_are_random_hex() -> None:
    ids = {new_answer_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_recent_answers_are_bounded_in_count() -> None:
    recent = RecentAnswers(3, 60)
    for n in range(5):
        recent.remember(record(f"a{n}"))
    assert len(recent) == 3
    assert [recent.get(f"a{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert recent.get("a4") == record("a4")
    assert recent.get("a4").citations_json == CITATIONS  # type: ignore[union-attr]


def test_recent_answers_expire() -> None:
    now = [1000.0]
    recent = RecentAnswers(100, 60, clock=lambda: now[0])
    recent.remember(record("old"))
    now[0] += 30
    recent.remember(record("new"))
    now[0] += 29.9
    assert recent.get("old") is not None
    now[0] += 0.2  # "old" is 60.1 s old, "new" 30.1 s
    assert recent.get("old") is None
    assert recent.get("new") is not None
    now[0] += 30
    assert len(recent) == 0


def test_recent_answers_are_thread_safe() -> None:
    recent = RecentAnswers(500, 60)
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(1000):
            recent.remember(record(f"{n}-{i}"))
            recent.get(f"{n}-{i // 2}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(recent) == 500


def test_recent_answers_refuse_bad_bounds() -> None:
    with pytest.raises(ValueError):
        RecentAnswers(0, 60)
    with pytest.raises(ValueError):
        RecentAnswers(10, 0)
