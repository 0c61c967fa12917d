"""Ratings of answers, kept in SQLite: the store behind ``POST /api/feedback`` and
``python -m service feedback``.

One table, ``feedback``: one row per rated answer (a second rating of the same answer replaces
the first and counts ``ratings``), holding what the server recorded about the answer
(:class:`~service.recent_answers.AnswerRecord`: question, answer text, outcome, citations and
how a follow-up was read as JSON, index build, reader and ranker versions) and what the user
gave: the rating and an optional comment. Nothing else about the user (no address, no user agent).

The file is in WAL mode (readers never block the writer), with a busy timeout so writers from
several processes take turns instead of failing; the threads of one process share one
connection under a lock (a write takes about 0.1 ms).
``PRAGMA user_version`` holds the schema version; opening an older file runs the migrations up
to :data:`SCHEMA_VERSION`, and a newer one is refused with a message saying so. Timestamps
are UTC ISO 8601 with milliseconds (``2026-01-02T03:04:05.678+00:00``), so they sort as text.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from service.config import Settings
from service.recent_answers import AnswerRecord

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")
SCHEMA_VERSION = 1
DEFAULT_NAME = "feedback.sqlite3"
BUSY_TIMEOUT_MS = 10_000

#: ``MIGRATIONS[n]`` takes a database from version n - 1 to n.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            answer_id TEXT NOT NULL UNIQUE,
            rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
            comment TEXT,
            ratings INTEGER NOT NULL DEFAULT 1,
            question TEXT NOT NULL,
            answer TEXT NOT NULL,
            answer_status TEXT NOT NULL,
            citations TEXT NOT NULL,
            resolution TEXT,
            mode TEXT NOT NULL,
            index_build TEXT NOT NULL,
            index_built_at TEXT NOT NULL,
            reader TEXT,
            ranker TEXT,
            answered_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX feedback_updated_at ON feedback (updated_at)",
    ),
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

_COLUMNS = (
    "id, answer_id, rating, comment, ratings, question, answer, answer_status, citations, "
    "resolution, mode, "
    "index_build, index_built_at, reader, ranker, answered_at, created_at, updated_at"
)


class FeedbackStoreError(RuntimeError):
    """The feedback database cannot be used; the message is one line and says why."""


class FeedbackDbMissingError(FeedbackStoreError):
    pass


class NewerSchemaError(FeedbackStoreError):
    pass


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def utc_timestamp(value: datetime) -> str:
    """``value`` in the store's timestamp format (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def db_path(settings: Settings) -> Path:
    """``QA_FEEDBACK_DB``, else ``feedback.sqlite3`` in the index folder."""
    return settings.feedback_db or settings.index_dir / DEFAULT_NAME


@dataclass(frozen=True)
class Stored:
    """What a write did: the row's id, and whether it replaced an earlier rating."""

    feedback_id: int
    replaced: bool


@dataclass(frozen=True)
class FeedbackRow:
    id: int
    answer_id: str
    rating: Rating
    comment: str | None
    ratings: int  # how many times this answer was rated (the last one counts)
    question: str
    answer: str
    answer_status: str
    citations_json: str
    resolution_json: str | None
    mode: str
    index_build: str
    index_built_at: str
    reader: str | None
    ranker: str | None
    answered_at: str
    created_at: str  # the first rating
    updated_at: str  # the rating in force

    @classmethod
    def of(cls, row: tuple[object, ...]) -> FeedbackRow:
        return cls(*row)  # type: ignore[arg-type]  # the columns of _COLUMNS, in order


class FeedbackStore:
    """The feedback database at ``path``; ``create=False`` refuses a file that is not there."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not path.is_file():
            if not create:
                raise FeedbackDbMissingError(
                    f"no feedback database at {path}; nothing has been rated yet, or set "
                    "QA_FEEDBACK_DB to the file"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FeedbackStoreError(
                    f"cannot create the feedback database {path} ({exc.strerror or exc}); "
                    "set QA_FEEDBACK_DB to a writable file, or QA_FEEDBACK=off"
                ) from None
        self._lock = threading.Lock()  # one connection, shared by the threads in turn
        self._conn: sqlite3.Connection | None = None
        self.journal_mode = ""
        try:
            with self._errors("open"):
                self._conn = self._connect()
                self._migrate(self._conn)
        except BaseException:
            self.close()
            raise

    # -- the connection -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): every write below is one statement or an explicit
        # BEGIN IMMEDIATE, so a writer takes the write lock before it reads and the busy
        # timeout applies while another process writes. check_same_thread=False: the
        # threadpool's threads use it in turn, under self._lock.
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.journal_mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            # In WAL mode NORMAL keeps every commit through a crash of the process; a power
            # cut may lose the last few.
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _use(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors(action):
            if self._conn is None:
                raise FeedbackStoreError(f"the feedback database {self.path} is closed")
            yield self._conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise FeedbackStoreError(
                f"cannot {action} the feedback database {self.path} ({exc}); set "
                "QA_FEEDBACK_DB to another file, or QA_FEEDBACK=off"
            ) from None

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._use("read") as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file: one migrates
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                self._refuse_newer(version)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _refuse_newer(self, version: int) -> None:
        raise NewerSchemaError(
            f"the feedback database {self.path} has schema version {version}, newer than this "
            f"service reads ({SCHEMA_VERSION}); upgrade the service, or set QA_FEEDBACK_DB to "
            "another file"
        )

    # -- writing and reading --------------------------------------------------------------

    def rate(self, answer: AnswerRecord, rating: Rating, comment: str | None) -> Stored:
        """Store ``rating`` of ``answer``; a later rating of the same answer replaces it."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {', '.join(RATINGS)}")
        now = utc_now()
        with self._use("write") as conn:
            [row] = conn.execute(
                """
                INSERT INTO feedback (answer_id, rating, comment, question, answer,
                    answer_status, citations, resolution, mode, index_build, index_built_at,
                    reader, ranker, answered_at, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (answer_id) DO UPDATE SET
                    rating = excluded.rating,
                    comment = excluded.comment,
                    ratings = feedback.ratings + 1,
                    updated_at = excluded.updated_at
                RETURNING id, ratings
                """,
                (
                    answer.answer_id,
                    rating,
                    comment,
                    answer.question,
                    answer.answer,
                    answer.answer_status,
                    answer.citations_json,
                    answer.resolution_json,
                    answer.mode,
                    answer.index_build,
                    answer.index_built_at,
                    answer.reader,
                    answer.ranker,
                    answer.answered_at,
                    now,
                    now,
                ),
            ).fetchall()  # stepped to the end: the statement (and its commit) is complete
        return Stored(feedback_id=int(row[0]), replaced=int(row[1]) > 1)

    def rows(self, *, rating: Rating | None = None, since: str | None = None) -> list[FeedbackRow]:
        """The ratings in force, oldest first; ``since``: rated at or after this timestamp
        (the store's format, see :func:`utc_timestamp`)."""
        where: list[str] = []
        params: list[str] = []
        if rating is not None:
            where.append("rating = ?")
            params.append(rating)
        if since is not None:
            where.append("updated_at >= ?")
            params.append(since)
        sql = f"SELECT {_COLUMNS} FROM feedback"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._use("read") as conn:
            found = conn.execute(sql + " ORDER BY updated_at, id", params)
            return [FeedbackRow.of(tuple(r)) for r in found.fetchall()]

    def tally(self, by: Literal["day", "outcome"]) -> dict[str, dict[Rating, int]]:
        """Ratings in force counted by the day they were given (UTC, ``YYYY-MM-DD``) or by
        the answer's outcome (``answered``, ``not_stated``, ``not_covered``), then by rating."""
        group = "substr(updated_at, 1, 10)" if by == "day" else "answer_status"
        sql = f"SELECT {group} AS g, rating, count(*) FROM feedback GROUP BY g, rating ORDER BY g"
        counts: dict[str, dict[Rating, int]] = {}
        with self._use("read") as conn:
            for key, rating, n in conn.execute(sql).fetchall():
                counts.setdefault(str(key), dict.fromkeys(RATINGS, 0))[rating] = int(n)
        return counts

    def count(self) -> int:
        with self._use("read") as conn:
            return int(conn.execute("SELECT count(*) FROM feedback").fetchone()[0])
