"""The query micro-batcher (service/batching.py), its wiring into the engine, the encoder
settings, and the ONNX Runtime encoder backend (service/embedding.py).

Tests marked ``model`` use the real bundled all-MiniLM-L6-v2; the ONNX tests are skipped when
onnxruntime is not installed.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from service.batching import BatchingEmbedder, QueryBatcher, with_query_batching
from service.config import SettingsError, load_settings
from service.embedding import EmbedderError, HashEmbedder, Vectors

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")


class CountingEncoder:
    """The hashing embedder, recording every batch it is asked to encode."""

    def __init__(self, delay: float = 0.0) -> None:
        self.inner = HashEmbedder()
        self.calls: list[list[str]] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Vectors:
        with self._lock:
            self.calls.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        return self.inner.embed(texts)


def _burst(batcher: QueryBatcher, texts: Sequence[str]) -> list[np.ndarray]:
    """Call ``batcher.embed`` from one thread per text, all released at once."""
    results: list[np.ndarray | None] = [None] * len(texts)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(texts))

    def worker(i: int) -> None:
        gate.wait()
        try:
            results[i] = batcher.embed(texts[i], timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


# -- the batcher ---------------------------------------------------------------------------------


def test_burst_is_one_encoder_call_with_the_right_vectors() -> None:
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, max_wait_ms=1000, adaptive=False)
    texts = [f"question number {i} about knee cartilage" for i in range(8)]
    vectors = _burst(batcher, texts)
    assert len(encoder.calls) == 1
    assert sorted(encoder.calls[0]) == sorted(texts)
    assert batcher.stats.encoder_calls == 1
    assert batcher.stats.largest_batch == 8
    expected = HashEmbedder().embed(texts)
    for got, want in zip(vectors, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_lone_caller_does_not_wait_for_the_window() -> None:
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, max_wait_ms=2000)  # adaptive: no load, no wait
    started = time.perf_counter()
    for i in range(3):
        vector = batcher.embed(f"alone {i}", timeout=30)
        np.testing.assert_allclose(vector, HashEmbedder().embed([f"alone {i}"])[0], atol=1e-6)
    assert time.perf_counter() - started < 1.5
    assert [len(c) for c in encoder.calls] == [1, 1, 1]


def test_requests_queued_while_encoding_share_the_next_call() -> None:
    encoder = CountingEncoder(delay=0.3)  # a slow model: the rest queue up meanwhile
    batcher = QueryBatcher(encoder, max_wait_ms=0)
    texts = [f"q{i}" for i in range(6)]
    vectors = _burst(batcher, texts)
    assert len(encoder.calls) < len(texts)
    assert sum(len(c) for c in encoder.calls) == len(texts)
    expected = HashEmbedder().embed(texts)
    for got, want in zip(vectors, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_repeated_question_is_encoded_once_per_batch() -> None:
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, max_wait_ms=1000, adaptive=False)
    texts = ["same question", "same question", "other question"]
    vectors = _burst(batcher, texts)
    assert sorted(encoder.calls[0]) == ["other question", "same question"]
    np.testing.assert_allclose(vectors[0], vectors[1])
    assert batcher.stats.questions == 3


def test_max_batch_is_respected() -> None:
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, max_batch=3, max_wait_ms=300, adaptive=False)
    _burst(batcher, [f"t{i}" for i in range(7)])
    assert all(len(call) <= 3 for call in encoder.calls)
    assert sum(len(c) for c in encoder.calls) == 7


def test_encoder_error_reaches_every_caller_and_the_batcher_recovers() -> None:
    fail = True

    def encode(texts: list[str]) -> Vectors:
        if fail:
            raise ValueError("model exploded")
        return HashEmbedder().embed(texts)

    batcher = QueryBatcher(encode, max_wait_ms=300, adaptive=False)
    with pytest.raises(ValueError, match="model exploded"):
        _burst(batcher, ["a", "b", "c"])
    fail = False
    assert batcher.embed("d", timeout=30).shape == (256,)


def test_wrong_number_of_vectors_is_an_error() -> None:
    batcher = QueryBatcher(lambda texts: np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match="0 vectors for 1 texts"):
        batcher.embed("x", timeout=30)


def test_worker_exits_when_idle_and_restarts() -> None:
    encoder = CountingEncoder()
    batcher = QueryBatcher(encoder, idle_exit_s=0.05)
    batcher.embed("first", timeout=30)
    deadline = time.time() + 5
    while batcher.running and time.time() < deadline:
        time.sleep(0.02)
    assert not batcher.running
    batcher.embed("second", timeout=30)
    assert len(encoder.calls) == 2


def test_two_workers_encode_two_batches_at_once() -> None:
    active = 0
    most = 0
    lock = threading.Lock()

    def slow(texts: list[str]) -> Vectors:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return HashEmbedder().embed(texts)

    batcher = QueryBatcher(slow, max_batch=2, max_wait_ms=0, workers=2)
    texts = [f"w{i}" for i in range(8)]
    vectors = _burst(batcher, texts)
    assert most == 2
    assert batcher.running <= 2
    for got, want in zip(vectors, HashEmbedder().embed(texts), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_bad_batcher_arguments() -> None:
    with pytest.raises(ValueError):
        QueryBatcher(CountingEncoder(), max_batch=0)
    with pytest.raises(ValueError):
        QueryBatcher(CountingEncoder(), max_wait_ms=-1)
    with pytest.raises(ValueError):
        QueryBatcher(CountingEncoder(), workers=0)


# -- the embedder wrapper and the engine -------------------------------------------------------


class RecordingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str], **kwargs: object) -> Vectors:  # type: ignore[override]
        self.calls.append(len(texts))
        return super().embed(texts)


def test_batching_embedder_routes_single_texts_through_the_batcher() -> None:
    inner = RecordingEmbedder()
    wrapped = BatchingEmbedder(inner)
    assert (wrapped.name, wrapped.dimension) == (inner.name, inner.dimension)
    one = wrapped.embed(["knee pain"])
    many = wrapped.embed(["knee pain", "disc surgery", "lung"])
    assert one.shape == (1, inner.dimension)
    np.testing.assert_allclose(one[0], many[0], atol=1e-6)
    assert wrapped.batcher.stats.encoder_calls == 1
    assert wrapped.count_tokens("two words") == inner.count_tokens("two words")


def test_with_query_batching_follows_the_setting(tmp_path: Path) -> None:
    inner = HashEmbedder()
    on = load_settings(index_dir=tmp_path, model="hash")
    off = load_settings(index_dir=tmp_path, model="hash", query_batching=False)
    wrapped = with_query_batching(inner, on)
    assert isinstance(wrapped, BatchingEmbedder)
    assert with_query_batching(wrapped, on) is wrapped  # not wrapped twice
    assert with_query_batching(inner, off) is inner


def test_engine_batches_concurrent_searches_with_unchanged_results(tiny_settings: object) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from service.engine import Engine

    settings = tiny_settings
    batched, _ = Engine.start(settings)  # type: ignore[arg-type]
    plain, _ = Engine.start(settings.model_copy(update={"query_batching": False}))  # type: ignore[attr-defined]
    assert isinstance(batched.embedder, BatchingEmbedder)
    assert not isinstance(plain.embedder, BatchingEmbedder)
    questions = [f"knee cartilage injection number {i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: batched.search(q, 3, "hybrid"), questions))
    for q, outcome in zip(questions, got, strict=True):
        want = plain.search(q, 3, "hybrid")
        assert [h.chunk.id for h in outcome.hits] == [h.chunk.id for h in want.hits]
    assert isinstance(batched.embedder, BatchingEmbedder)
    assert batched.embedder.batcher.stats.questions == len(questions)


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("encoder_backend", "tensorflow"),
        ("encoder_threads", -1),
        ("query_batch_wait_ms", -0.5),
        ("query_batch_wait_ms", 500),
        ("query_batch_max", 0),
        ("query_batch_workers", 0),
    ],
)
def test_bad_encoder_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(SettingsError, match=f"QA_{field.upper()}"):
        load_settings(**{field: value})


def test_encoder_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_ENCODER_BACKEND", "onnx-int8")
    monkeypatch.setenv("QA_QUERY_BATCHING", "false")
    monkeypatch.setenv("QA_QUERY_BATCH_WAIT_MS", "2.5")
    settings = load_settings()
    assert settings.encoder_backend == "onnx-int8"
    assert settings.query_batching is False
    assert settings.query_batch_wait_ms == 2.5


def test_hash_model_ignores_the_backend(tmp_path: Path) -> None:
    from service.embedding import load_embedder

    settings = load_settings(model="hash", encoder_backend="onnx-int8", index_dir=tmp_path)
    assert isinstance(load_embedder(settings), HashEmbedder)


# -- the ONNX backend -------------------------------------------------------------------------


@needs_ort
def test_onnx_backend_needs_a_local_folder() -> None:
    from service.embedding import OnnxEmbedder

    with pytest.raises(EmbedderError, match="QA_ENCODER_BACKEND=torch"):
        OnnxEmbedder("some-org/not-a-local-model")


@needs_ort
def test_onnx_backend_refuses_other_pooling(tmp_path: Path) -> None:
    from service.embedding import OnnxEmbedder

    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    with pytest.raises(EmbedderError, match="mean pooling"):
        OnnxEmbedder(str(tmp_path), cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def torch_embedder() -> object:
    from service.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("bundled")


SAMPLES = [
    "What was the reoperation rate after MSC disc injection?",
    "short",
    "Nebulized extracellular vesicles from umbilical cord MSCs improved lung function. " * 12,
    "How many patients received bone marrow-derived cells, and at what dose (10^6 cells/kg)?",
]


@needs_ort
@pytest.mark.model
def test_onnx_matches_torch(torch_embedder: object) -> None:
    from service.embedding import OnnxEmbedder

    onnx = OnnxEmbedder("bundled")
    assert onnx.name == "bundled"  # an index built with torch stays valid
    assert onnx.dimension == 384
    want = torch_embedder.embed(SAMPLES)  # type: ignore[attr-defined]
    got = onnx.embed(SAMPLES)
    assert got.shape == want.shape
    assert float((got * want).sum(axis=1).min()) > 0.9999
    singles = np.stack([onnx.embed([s])[0] for s in SAMPLES])  # padding does not matter
    assert float((singles * want).sum(axis=1).min()) > 0.9999
    for text in SAMPLES:
        assert onnx.count_tokens(text) == torch_embedder.count_tokens(text)  # type: ignore[attr-defined]


@needs_ort
@pytest.mark.model
def test_onnx_int8_is_close_to_torch(torch_embedder: object) -> None:
    from service.embedding import OnnxEmbedder

    int8 = OnnxEmbedder("bundled", int8=True)
    assert int8.path.name == "model-int8.onnx"
    want = torch_embedder.embed(SAMPLES)  # type: ignore[attr-defined]
    cosines = (int8.embed(SAMPLES) * want).sum(axis=1)
    assert float(cosines.min()) > 0.95
    assert float(cosines.mean()) > 0.98


@needs_ort
@pytest.mark.model
def test_onnx_export_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.embedding as embedding

    first = embedding.OnnxEmbedder("bundled")
    stamp = first.path.stat().st_mtime_ns

    def no_export(*_args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(embedding, "export_onnx", no_export)
    again = embedding.OnnxEmbedder("bundled")
    assert again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp


@needs_ort
@pytest.mark.model
def test_onnx_embedder_is_thread_safe() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from service.embedding import OnnxEmbedder

    onnx = OnnxEmbedder("bundled")
    texts = [f"stem cells for knee pain, question {i}" for i in range(16)]
    want = onnx.embed(texts)
    with ThreadPoolExecutor(4) as pool:
        got = np.stack(list(pool.map(lambda t: onnx.embed([t])[0], texts)))
    assert float((got * want).sum(axis=1).min()) > 0.9999
