"""The answers a process gave recently, by answer id, so that feedback can refer to one.

What is stored with a rating comes from here (the server's own record of the answer), never
from what a client sends back. The record is bounded in count and in age: the oldest answers
are forgotten beyond ``max_answers``, and an answer older than ``max_age_s`` is gone even if
there is room. One lock guards it; every operation is a dictionary step, so requests on the
event loop and in the threadpool can share it.
"""

from __future__ import annotations

import secrets
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


def new_answer_id() -> str:
    """An opaque, unguessable id (128 random bits as 32 hex digits)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class AnswerRecord:
    """One answer as the service gave it, and what produced it."""

    answer_id: str
    question: str
    answer: str
    answer_status: str
    #: the response's ``citations`` as JSON text, kept opaquely (its shape is the API's) and
    #: zlib-compressed: a third to a half of the size, for about 50 µs
    citations_zlib: bytes
    #: the response's ``resolution`` (how a follow-up in a conversation was read) as JSON;
    #: None for a question asked on its own
    resolution_json: str | None
    mode: str  # the retrieval mode used
    index_build: str  # the build folder's name (``build-<time>-<id>``)
    index_built_at: str  # the manifest's ``built_at``
    reader: str | None  # the reader's name (``reader-<weights hash>``); None: no reader
    ranker: str | None  # ``ranker-<weights hash>``; None: no learned ranker
    answered_at: str  # UTC, ISO 8601

    @property
    def citations_json(self) -> str:
        return zlib.decompress(self.citations_zlib).decode("utf-8")

    @staticmethod
    def pack(citations_json: str) -> bytes:
        return zlib.compress(citations_json.encode("utf-8"), 6)


class RecentAnswers:
    """Bounded, expiring map of answer id -> :class:`AnswerRecord`; thread-safe."""

    def __init__(
        self,
        max_answers: int,
        max_age_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_answers < 1 or max_age_s <= 0:
            raise ValueError("max_answers and max_age_s must be positive")
        self.max_answers = max_answers
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, AnswerRecord]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        with self._lock:
            self._expire(self.clock())
            return len(self._answers)

    def remember(self, record: AnswerRecord) -> None:
        now = self.clock()
        with self._lock:
            self._answers[record.answer_id] = (now, record)
            self._answers.move_to_end(record.answer_id)
            while len(self._answers) > self.max_answers:
                self._answers.popitem(last=False)
            self._expire(now)

    def get(self, answer_id: str) -> AnswerRecord | None:
        """The answer, or None when it is unknown, expired or was pushed out."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            found = self._answers.get(answer_id)
        return found[1] if found else None

    def _expire(self, now: float) -> None:
        while self._answers:
            answered, _ = next(iter(self._answers.values()))
            if now - answered < self.max_age_s:
                break
            self._answers.popitem(last=False)
