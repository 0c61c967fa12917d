"""``python -m service cite``: references printed from the corpus folder, no index needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_corpus

from service.citation_export import FORMATS
from service.cli import citing, main


def cite(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env.update(QA_CORPUS_DIR=str(tmp / "corpus"), QA_INDEX_DIR=str(tmp / "index"))
    return subprocess.run(
        [sys.executable, "-m", "service", "cite", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cite_prints_the_references_in_order(tmp_path: Path) -> None:
    write_tiny_corpus(tmp_path / "corpus")
    ris = cite(tmp_path, "knee", "--format", "ris")
    assert (ris.returncode, ris.stderr) == (0, "")
    assert ris.stdout == (
        "TY  - JOUR\n"
        "AU  - Ames, K.\n"
        "TI  - Knee Cartilage\n"
        "T2  - Knee Journal\n"
        "PY  - 2021\n"
        "DO  - 10.1000/knee.1\n"
        "UR  - https://doi.org/10.1000/knee.1\n"
        "ER  - \n"
    )
    bib = cite(tmp_path, "lung", "knee", "lung")  # BibTeX by default; repeats dropped
    assert bib.returncode == 0
    assert bib.stdout.startswith("@misc{anon2025lung,\n")
    assert bib.stdout.count("\n@") == 1 and "@article{ames2021knee," in bib.stdout
    assert not (tmp_path / "index").exists()  # read from the corpus: nothing built


def test_cite_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tiny_corpus(tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QA_CORPUS_DIR", str(tmp_path / "corpus"))
    assert main(["cite", "knee", "nope", "gone"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: no document with id 'nope', 'gone' in {tmp_path / 'corpus'} "
        "(ids: disc, knee, lung, skin)\n"
    )
    with pytest.raises(SystemExit) as usage:
        main(["cite", "knee", "--format", "endnote"])
    assert usage.value.code == 2
    assert "invalid choice: 'endnote'" in capsys.readouterr().err


def test_the_cli_offers_the_formats_the_exporter_writes() -> None:
    assert citing.FORMATS == FORMATS
