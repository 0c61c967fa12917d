"""Shared fixtures, and the test servers: ``serving`` (a thread) and ``server_process``, thin
wrappers over the one server harness (service/evaluation/bench/harness.py).

Most tests use the deterministic hashing embedder (``QA_MODEL=hash``) on small corpora in a
temporary folder. Tests marked ``model`` use the real bundled all-MiniLM-L6-v2 on the real
corpus; its index is built once per test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from service.config import Settings, load_settings
from service.evaluation.bench.harness import ServerError, ServerProcess, thread_server

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
#: Debian's Chromium, driven by Playwright (never ``playwright install``), and its flags.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEED_PAGE = FIXTURES / "seed_page.txt"


class ScriptedReader:
    """Logit +8 for a sentence ``answers`` says answers, else -8; records each call."""

    name = "scripted"

    def __init__(self, answers: Callable[[str, str], bool]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, question: str, sentences: Sequence[str]) -> np.ndarray:
        self.calls.append((question, list(sentences)))
        return np.asarray([8.0 if self.answers(question, s) else -8.0 for s in sentences])


def never(_question: str, _sentence: str) -> bool:
    return False


def make_settings(tmp: Path, corpus: Path | None = None, **overrides: object) -> Settings:
    corpus_dir = tmp / "corpus"
    if corpus is not None and not corpus_dir.exists():
        shutil.copytree(corpus, corpus_dir)
    corpus_dir.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "corpus_dir": corpus_dir,
        "index_dir": tmp / "index",
        "model": "hash",
        "reader": "off",  # the real reader only where a test asks for it (real_settings)
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def hash_settings(tmp_path: Path) -> Settings:
    """Settings for the real corpus (copied) with the hashing embedder."""
    return make_settings(tmp_path, CORPUS)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The real corpus indexed with the hashing embedder, once per module (copy it with
    :func:`copy_of_build` before damaging it)."""
    from service.embedding import HashEmbedder
    from service.ingest import build_index

    settings = make_settings(tmp_path_factory.mktemp("template"), CORPUS)
    build_index(settings, HashEmbedder())
    return settings


def copy_of_build(template: Settings, folder: Path, **overrides: object) -> Settings:
    """A fresh copy of ``template``'s corpus and index in ``folder``, with its settings."""
    shutil.copytree(template.corpus_dir, folder / "corpus")
    shutil.copytree(template.index_dir, folder / "index")
    return make_settings(folder, **overrides)


@pytest.fixture
def built(template: Settings, tmp_path: Path) -> Settings:
    """The real corpus indexed with the hashing embedder (a fresh copy for each test)."""
    return copy_of_build(template, tmp_path)


@pytest.fixture(scope="session")
def real_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Real corpus, real bundled model, an index built once for the session."""
    tmp = tmp_path_factory.mktemp("real")
    return make_settings(tmp, CORPUS, model="bundled", reader="on")


@pytest.fixture(scope="session")
def real_engine(real_settings: Settings) -> Iterator[object]:
    from service.engine import Engine

    engine, _ = Engine.start(real_settings)
    yield engine


# -- a tiny corpus with hand-checkable rankings (tests/core/test_retrieval.py, tests/system/) --

TINY_DOCS: dict[str, str] = {
    "knee.md": (
        "---\nid: knee\ntitle: Knee Cartilage\nyear: 2021\njournal: Knee Journal\n"
        "authors: [Ames K]\ndoi: 10.1000/knee.1\n---\n\n# Knee Cartilage\n\n"
        "Injected stem cells rebuilt knee cartilage in older patients.\n\n"
        "## Pain\n\nKnee pain fell after one injection.\n"
    ),
    "disc.md": (
        "---\nid: disc\ntitle: Spinal Discs\nyear: 2023\n---\n\n# Spinal Discs\n\n"
        "Disc injections of stem cells lowered the reoperation rate to seven percent.\n"
    ),
    "lung.md": (
        "---\nid: lung\ntitle: Lung Fibrosis\nyear: 2025\n---\n\n# Lung Fibrosis\n\n"
        "Nebulized vesicles improved lung function in fibrosis patients.\n"
    ),
    "skin.md": (
        "---\nid: skin\ntitle: Skin Aging\nyear: 2024\n---\n\n# Skin Aging\n\n"
        "Exosomes restored skin elasticity in aging mice.\n"
    ),
}


def write_tiny_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TINY_DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    """Four short curated documents (five chunks) and the hashing embedder."""
    settings = make_settings(tmp_path)
    write_tiny_corpus(settings.corpus_dir)
    return settings


@contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Start ``server`` (the test fails with its log tail if it does not get ready); stop it
    afterwards."""
    try:
        try:
            server.start()
        except ServerError as exc:
            pytest.fail(f"{exc}\n{exc.log}")
        yield server
    finally:
        server.stop()


@contextmanager
def server_process(workdir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m service serve`` on a free loopback port; yields (base URL, process)."""
    settings = {
        "QA_MODEL": "hash",
        "QA_CORPUS_DIR": str(workdir / "corpus"),
        "QA_INDEX_DIR": str(workdir / "index"),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    server = ServerProcess(
        workdir / "server.log",
        env={**clean, **settings, **env},
        cwd=workdir,
        timeout_s=90,
        poll_s=0.1,
    )
    with running(server):
        yield server.url, server.process


serving = thread_server  # ``with serving(app) as url``: uvicorn in a thread on a free port


def wait_for_marker(
    marker: Path,
    proc: subprocess.Popen[bytes],
    what: str,
    timeout_s: float = 60,
    log: Path | None = None,
) -> None:
    """Wait until the child ``proc`` touches ``marker`` at its slow stage; fail if it ends
    first (with its stderr, or the end of ``log``) or never gets there."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None:
            if log is not None:
                err = log.read_text(errors="replace")
            else:
                err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"{what} ended before its slow stage ({proc.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} never reached its slow stage")
        time.sleep(0.02)
