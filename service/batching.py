"""Micro-batching of query embeddings: questions that arrive together share one encoder call.

Under concurrent load every request needs one short question embedded. Encoding sixteen
questions in one call costs much less than sixteen calls (one pass of the model, one round of
Python and framework overhead), so :class:`QueryBatcher` lets callers (request threads) hand
their question to a worker thread, which encodes whatever has queued up in one call and hands
each caller its own row back. With ``workers=2`` two batches can be encoded at once (on two
cores, for an encoder that runs each call on one thread, like the ONNX backend).

A lone caller does not wait: the worker encodes at once when it is idle and only one question
is waiting. Once it has seen load (more than one question queued, now or in the previous
batch) it waits up to ``max_wait_ms`` after the first question for more to arrive. The worker
thread starts on first use and exits after ``idle_exit_s`` without work.

:class:`BatchingEmbedder` puts a batcher in front of any :class:`~service.embedding.Embedder`:
single-text calls (queries) go through the batcher, multi-text calls (ingest) go straight to
the model. :func:`with_query_batching` applies it when ``QA_QUERY_BATCHING`` is on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.config import Settings
from service.embedding import Embedder, Progress, Vectors

Encode = Callable[[list[str]], Vectors]


@dataclass
class BatcherStats:
    """Counters since the batcher was made (read them for tests and the benchmark)."""

    encoder_calls: int = 0
    questions: int = 0
    largest_batch: int = 0


@dataclass
class _Request:
    text: str
    future: Future[npt.NDArray[np.float32]]
    arrived: float


class QueryBatcher:
    """Embed single texts from many threads, batching those that arrive together.

    ``encode`` receives a list of distinct texts and returns one unit vector per text, in
    order. It is only called from the batcher's worker threads (so at most ``workers`` calls
    at a time: with more than one worker it must be thread-safe).
    """

    def __init__(
        self,
        encode: Encode,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 1.0,
        adaptive: bool = True,
        idle_exit_s: float = 10.0,
        workers: int = 1,
        name: str = "query-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.adaptive = adaptive
        self.idle_exit_s = idle_exit_s
        self.workers = workers
        self.name = name
        self.stats = BatcherStats()
        # queue.Queue, not SimpleQueue: with several consumers, SimpleQueue.get(timeout=...)
        # can block forever in CPython 3.11 (woken for an item another worker took, it retries
        # with a negative timeout, which means "no timeout"), stranding the batch it holds.
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._last_batch = 0

    def embed(self, text: str, timeout: float | None = None) -> npt.NDArray[np.float32]:
        """The unit vector of ``text`` (blocks until its batch is encoded)."""
        request = _Request(text, Future(), time.perf_counter())
        with self._lock:
            self._queue.put(request)
            if len(self._threads) < self.workers:
                name = f"{self.name}-{len(self._threads) + 1}"
                thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._threads.add(thread)
                thread.start()
        return request.future.result(timeout)

    @property
    def running(self) -> int:
        """Worker threads alive now (they stop after ``idle_exit_s`` without work)."""
        with self._lock:
            return len(self._threads)

    # -- worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self.idle_exit_s)
                except queue.Empty:
                    with self._lock:  # embed() enqueues under this lock: nothing is missed
                        if self._queue.empty():
                            self._threads.discard(threading.current_thread())
                            return
                    continue
                self._process(self._collect(first))
        finally:  # also when the encoder raised SystemExit or the like: a new worker starts
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _collect(self, first: _Request) -> list[_Request]:
        batch = [first]
        self._drain(batch)
        if self.max_wait > 0 and (not self.adaptive or len(batch) > 1 or self._last_batch > 1):
            deadline = first.arrived + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
                self._drain(batch)
        self._last_batch = len(batch)
        return batch

    def _drain(self, batch: list[_Request]) -> None:
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _process(self, batch: list[_Request]) -> None:
        texts = list(dict.fromkeys(r.text for r in batch))  # a repeated question once
        try:
            vectors = np.asarray(self._encode(texts), dtype=np.float32)
            if vectors.shape[0] != len(texts):
                raise RuntimeError(
                    f"encoder returned {vectors.shape[0]} vectors for {len(texts)} texts"
                )
        except BaseException as exc:  # every waiting caller gets the error
            for request in batch:
                request.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            with self._lock:
                self.stats.encoder_calls += 1
                self.stats.questions += len(batch)
                self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        row = {text: i for i, text in enumerate(texts)}
        for request in batch:
            request.future.set_result(vectors[row[request.text]].copy())


class BatchingEmbedder:
    """An :class:`Embedder` whose single-text calls are micro-batched (see the module doc)."""

    def __init__(
        self,
        inner: Embedder,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 1.0,
        adaptive: bool = True,
        workers: int = 1,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.batcher = QueryBatcher(
            lambda texts: inner.embed(texts, batch_size=max(1, len(texts))),
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            adaptive=adaptive,
            workers=workers,
        )

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, progress: Progress | None = None
    ) -> Vectors:
        if len(texts) != 1:
            return self.inner.embed(texts, batch_size=batch_size, progress=progress)
        vector = self.batcher.embed(texts[0])
        if progress:
            progress(1, 1)
        return vector.reshape(1, -1)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def with_query_batching(embedder: Embedder, settings: Settings) -> Embedder:
    """``embedder`` behind a query batcher when ``QA_QUERY_BATCHING`` is on (idempotent)."""
    if not settings.query_batching or isinstance(embedder, BatchingEmbedder):
        return embedder
    return BatchingEmbedder(
        embedder,
        max_batch=settings.query_batch_max,
        max_wait_ms=settings.query_batch_wait_ms,
        workers=settings.query_batch_workers,
    )
