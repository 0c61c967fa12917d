"""``python -m service ingest`` and ``search``, run as a user would (subprocess, env vars)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_settings, write_tiny_corpus

from service.embedding import HashEmbedder
from service.index_store import LOCK
from service.ingest import build_index


def _cli(
    cwd: Path, args: tuple[str, ...], corpus: Path, index: Path, env_extra: dict[str, str]
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_MODEL="hash", QA_CORPUS_DIR=str(corpus), QA_INDEX_DIR=str(index), **env_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,  # a folder without a .env file
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(
    cwd: Path, *args: str, corpus: Path, index: Path, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    return _finish(_cli(cwd, args, corpus, index, env_extra))


def run_together(
    cwd: Path, runs: list[tuple[tuple[str, ...], Path, Path, dict[str, str]]]
) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI runs in parallel (each one pays the start-up imports)."""
    procs = [_cli(cwd, args, corpus, index, extra) for args, corpus, index, extra in runs]
    return [_finish(p) for p in procs]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    write_tiny_corpus(corpus)
    return corpus, index


def assert_one_line_error(result: subprocess.CompletedProcess[str], pattern: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def test_ingest_progress_then_up_to_date(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    corpus, index = folders
    (corpus / "broken.txt").write_bytes(b"caf\xe9\n")
    first = run_cli(tmp_path, "ingest", corpus=corpus, index=index)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    lines = first.stderr.splitlines()
    assert lines[0] == "loading model 'hash' ..."
    # Not a terminal: one line per finished stage.
    for stage in ("chunking: 4/4", "embedding chunks: 5/5", "embedding sentences: 5/5",
                  "indexing: 1/1"):  # fmt: skip
        assert stage in lines, first.stderr
    assert (
        "warning: broken.txt: skipped: not valid UTF-8 (byte 0xe9 at offset 3); "
        "re-save the file as UTF-8"
    ) in lines
    built = next(line for line in lines if line.startswith("built index"))
    assert re.fullmatch(
        r"built index \(no index in .*\): 4 documents, 5 chunks, 5 sentences; "
        r"embedded 10, reused 0; \d+\.\d s -> .*/index/build-\S+",
        built,
    ), built
    assert re.fullmatch(r"done in \d+\.\d s", lines[-1])
    assert (index / "CURRENT").is_file()

    again = run_cli(tmp_path, "ingest", corpus=corpus, index=index)
    assert again.returncode == 0, again.stderr
    assert re.search(
        r"^index is up to date: 4 documents, 5 chunks \(built \S+\); nothing to do\. "
        r"Use --force to rebuild\.$",
        again.stderr,
        re.MULTILINE,
    ), again.stderr
    assert "embedding" not in again.stderr and "warning" not in again.stderr

    forced = run_cli(tmp_path, "ingest", "--force", corpus=corpus, index=index)
    assert forced.returncode == 0, forced.stderr
    assert re.search(
        r"^built index \(rebuild requested\): .*; embedded 0, reused 10;", forced.stderr, re.M
    ), forced.stderr


def test_search_json(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    corpus, index = folders
    result = run_cli(
        tmp_path, "search", "knee injection pain", "--json", "--k", "3", "--mode", "hybrid",
        corpus=corpus, index=index,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # stdout is only the JSON (the index was built on the way)
    assert set(out) == {"query", "mode", "results"}
    assert out["query"] == "knee injection pain"
    assert out["mode"] == "hybrid"
    results = out["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    for r in results:
        assert set(r) >= {"rank", "score", "chunk_id", "document_id", "title", "section", "text",
                          "authors", "year", "journal", "doi", "pmid", "url", "study_type",
                          "source_title"}  # fmt: skip
        assert r["chunk_id"].startswith(r["document_id"] + ":")
    # See tests/core/test_retrieval.py for the arithmetic: 2/61, 2/62, 2/63.
    assert [(r["document_id"], r["section"]) for r in results] == [
        ("knee", "Pain"),
        ("knee", "Knee Cartilage"),
        ("disc", "Spinal Discs"),
    ]
    assert [r["score"] for r in results] == [round(2 / 61, 6), round(2 / 62, 6), round(2 / 63, 6)]
    top = results[0]
    assert top["text"] == "Knee pain fell after one injection."
    assert top["title"] == "Knee Cartilage"
    assert (top["authors"], top["year"], top["journal"], top["doi"], top["url"]) == (
        ["Ames K"],
        2021,
        "Knee Journal",
        "10.1000/knee.1",
        "https://doi.org/10.1000/knee.1",
    )
    assert results[2]["doi"] is None and results[2]["authors"] == []

    bm25_json, text = run_together(
        tmp_path,
        [
            (("search", "knee", "--json", "--mode", "bm25"), corpus, index, {}),
            (("search", "lung fibrosis", "--k", "1", "-q"), corpus, index, {}),
        ],
    )
    assert bm25_json.returncode == 0, bm25_json.stderr
    bm25 = json.loads(bm25_json.stdout)
    assert bm25["mode"] == "bm25"
    assert [r["document_id"] for r in bm25["results"]] == ["knee", "knee"]
    assert text.returncode == 0, text.stderr
    assert re.match(r"1\. \[-?\d+\.\d{4}\] Lung Fibrosis \(2025\) - ", text.stdout)
    assert "Nebulized vesicles improved lung function" in text.stdout


def test_a_second_ingest_waits_for_the_first_and_builds_nothing(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    """Two processes on one missing index (two ``ask`` runs, a server and ``ingest``): the
    build lock lets one build while the other waits, then loads what the first built."""
    corpus, index = folders
    index.mkdir()
    with (index / LOCK).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # this test is the process building
        waiting = _cli(tmp_path, ("ingest",), corpus, index, {})
        time.sleep(5)  # ample for the tiny corpus, had it not waited
        assert waiting.poll() is None, "ingest did not wait for the build lock"
        assert not list(index.glob("build-*"))
        settings = make_settings(tmp_path)  # the same corpus/ and index/ folders
        build_index(settings, HashEmbedder())
    second = _finish(waiting)
    assert second.returncode == 0, second.stderr
    assert f"waiting for another process building the index in {index}/: 1/1" in second.stderr
    assert "index is up to date" in second.stderr and "built index" not in second.stderr
    assert len(list(index.glob("build-*"))) == 1


def test_ask_shows_each_answer_status(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    corpus, index = folders
    answered, uncovered, as_json = run_together(
        tmp_path,
        [
            (("ask", "Did knee pain fall after the injection?", "-q"), corpus, index,
             {"QA_READER": "off"}),
            (("ask", "chocolate chip cookies: recipe?", "-q"), corpus, index,
             {"QA_READER": "off"}),
            (("ask", "chocolate chip cookies: recipe?", "--json"), corpus, index,
             {"QA_READER": "off"}),
        ],
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.startswith("Knee pain fell after one injection. [1]")
    assert "References\n  [1] Knee Cartilage (2021)." in answered.stdout
    assert "not medical advice" in answered.stdout
    assert uncovered.returncode == 0, uncovered.stderr
    assert uncovered.stdout.startswith("Not covered by the documents:\nThe documents in this")
    assert "do not mention chocolate, chip or cookies" in " ".join(uncovered.stdout.split())
    assert "References" not in uncovered.stdout
    body = json.loads(as_json.stdout)
    assert body["answer_status"] == "not_covered" and body["abstained"] is True


@pytest.mark.model
def test_ask_shows_not_stated_with_related_reading(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    """The shipped reader, with a threshold no answer reaches: a plain 'not stated' reply."""
    corpus, index = folders
    result = run_cli(
        tmp_path, "ask", "How much do disc injections of stem cells cost?", "-q",
        corpus=corpus, index=index, QA_READER="on", QA_READER_THRESHOLD="1.0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Not stated in the documents:\n")
    assert "do not answer this question" in " ".join(result.stdout.split())
    assert "\nRelated reading (not an answer)\n  - Spinal Discs (2023), Spinal Discs." in (
        result.stdout
    )
    assert "References" not in result.stdout and "[1]" not in result.stdout
    assert "not medical advice" in result.stdout


def test_train_reader_refuses_bad_arguments_in_one_line(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    corpus, index = folders
    data = str(Path(__file__).resolve().parents[2] / "eval" / "reader" / "synthetic_1.jsonl")
    no_dev, missing, bad, none = run_together(
        tmp_path,
        [
            (("train-reader", "--synthetic", data, "--leave-out", "zhang-2023"), corpus, index, {}),
            (("train-reader", "--synthetic", str(tmp_path / "none.jsonl")), corpus, index, {}),
            (("train-reader", "--synthetic", data, "--epochs", "0"), corpus, index, {}),
            (("train-reader",), corpus, index, {}),  # run outside a checkout: no eval/reader/
        ],
    )
    assert_one_line_error(no_dev, r"--leave-out needs --with-dev")
    assert_one_line_error(none, r"no synthetic training files in eval/reader/; pass --synthetic")
    assert_one_line_error(missing, r"synthetic training file .*none\.jsonl not found")
    assert_one_line_error(bad, r"--epochs must be between 1 and 20")


def test_errors_are_one_line_and_exit_non_zero(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    corpus, index = folders
    blocker = tmp_path / "plain-file"
    blocker.write_text("I am not a folder")
    missing, unwritable, settings, k = run_together(
        tmp_path,
        [
            (("ingest",), tmp_path / "nope", index, {}),
            (("ingest",), corpus, blocker / "index", {}),
            (("ingest",), corpus, index, {"QA_CHUNK_MAX_TOKENS": "5"}),
            (("search", "knee", "--k", "50"), corpus, index, {}),
        ],
    )
    assert missing.returncode == 1
    assert_one_line_error(missing, r"^error: corpus folder .*/nope/ does not exist")
    assert unwritable.returncode == 1
    assert_one_line_error(
        unwritable,
        r"cannot write to .*plain-file/index/ \(.+\); fix its permissions or set "
        r"QA_INDEX_DIR to a writable folder",
    )
    assert settings.returncode == 2
    assert_one_line_error(settings, r"invalid settings: QA_CHUNK_MAX_TOKENS")
    assert k.returncode == 2
    assert_one_line_error(k, r"--k must be between 1 and 20 \(QA_MAX_TOP_K\)")
    assert not index.exists()  # nothing was built by any of them


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_index_dir(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    corpus, index = folders
    index.mkdir()
    index.chmod(0o500)
    try:
        result = run_cli(tmp_path, "ingest", corpus=corpus, index=index)
    finally:
        index.chmod(0o700)
    assert_one_line_error(result, r"cannot write to .*index/ \(Permission denied\)")


def test_k_is_bounded_by_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--k`` is checked against QA_MAX_TOP_K, not a copy of its default."""
    from service.cli import main

    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("QA_MAX_TOP_K", "3")
    assert main(["search", "knee", "--k", "4", "--corpus-dir", str(tmp_path / "none")]) == 2
