"""The persisted index: build, load, staleness, incremental re-embedding, corruption, crashes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import make_settings, wait_for_marker

from service.chunking import chunk_document
from service.config import Settings
from service.documents import Document, load_corpus
from service.embedding import HashEmbedder
from service.index_store import (
    MANIFEST,
    POINTER,
    VECTORS,
    CorpusEmptyError,
    IndexCorruptError,
    IndexMismatchError,
    IndexMissingError,
    IndexStoreError,
    IndexWriteError,
    current_build,
    load_index,
)
from service.ingest import build_index, ensure_index

EMBEDDER = HashEmbedder()


def texts_to_embed(docs: list[Document], settings: Settings) -> set[str]:
    """Every distinct text a build sends to the embedder: chunk inputs and sentences."""
    out: set[str] = set()
    for doc in docs:
        for chunk in chunk_document(
            doc,
            max_tokens=settings.chunk_max_tokens,
            overlap_sentences=settings.chunk_overlap_sentences,
            count_tokens=EMBEDDER.count_tokens,
            with_context=settings.embed_context,
        ):
            out.add(chunk.embedding_text(doc.title, settings.embed_context))
            out.update(chunk.sentence_texts(doc.text))
    return out


# -- build and load ----------------------------------------------------------------------------


def test_build_then_load_roundtrip(hash_settings: Settings) -> None:
    report = build_index(hash_settings, EMBEDDER)
    docs = load_corpus(hash_settings.corpus_dir).documents
    distinct = texts_to_embed(docs, hash_settings)
    assert report.embedded == len(distinct) and report.reused == 0
    assert report.problems == []

    data = load_index(hash_settings.index_dir)
    assert data.path == report.path == current_build(hash_settings.index_dir)
    m = data.manifest
    assert (m.model, m.dimension, m.documents, m.index_type) == ("hash-256", 256, 5, "flat")
    assert (m.chunking.max_tokens, m.chunking.overlap_sentences, m.chunking.embed_context) == (
        160,
        1,
        True,
    )
    assert set(m.files) == {
        "documents.jsonl",
        "documents.text",
        "documents.offsets.npy",
        "chunks.jsonl",
        "chunks.offsets.npy",
        "chunk_documents.npy",
        "vectors.faiss",
        "sentences.npy",
        "sentence_offsets.npy",
        *(f"bm25/{p.name}" for p in (data.path / "bm25").iterdir()),
    }
    assert data.documents == {d.id: d for d in docs}
    assert m.chunks == len(data.chunks) == data.vectors.ntotal
    assert m.sentences == sum(len(c.sentences) for c in data.chunks)
    assert data.sentence_vectors.shape == (m.sentences, 256)

    # Stored vectors are the embeddings of what the chunking produced.
    i = next(i for i, c in enumerate(data.chunks) if "around 7%" in c.text)
    chunk = data.chunks[i]
    doc = data.documents[chunk.document_id]
    expected = EMBEDDER.embed([chunk.embedding_text(doc.title)])[0]
    assert np.allclose(data.vectors.reconstruct(i), expected)
    sentences = chunk.sentence_texts(doc.text)
    # Sentence vectors are stored as float16: within its rounding (2**-11 relative).
    assert np.allclose(data.chunk_sentence_vectors(i), EMBEDDER.embed(sentences), atol=1e-3)
    assert any(s == "The pooled reoperation rate was low, around 7%." for s in sentences)


def test_old_builds_are_removed_but_the_previous_one_is_kept(built: Settings) -> None:
    first = current_build(built.index_dir)
    second = build_index(built, EMBEDDER).path
    third = build_index(built, EMBEDDER).path
    builds = sorted(p.name for p in built.index_dir.glob("build-*"))
    assert builds == sorted([second.name, third.name])
    assert not first.exists()
    assert (built.index_dir / POINTER).read_text().strip() == third.name


def test_leftovers_of_dead_builds_are_cleaned(built: Settings) -> None:
    dead = built.index_dir / ".tmp-999999999-deadbeef"
    (dead / "bm25").mkdir(parents=True)
    busy = built.index_dir / f".tmp-{os.getppid()}-cafe0000"  # a live process: still building
    busy.mkdir()
    pointer_tmp = built.index_dir / ".CURRENT.abcd1234"  # old naming, no pid
    pointer_tmp.write_text("build-x\n")
    dead_pointer = built.index_dir / ".CURRENT.999999999-deadbeef"
    dead_pointer.write_text("build-y\n")
    busy_pointer = built.index_dir / f".CURRENT.{os.getppid()}-cafe0000"
    busy_pointer.write_text("build-z\n")
    build_index(built, EMBEDDER)
    assert not dead.exists() and not pointer_tmp.exists() and not dead_pointer.exists()
    assert busy.exists() and busy_pointer.exists()


# -- staleness and incremental re-embedding ----------------------------------------------------


def test_ensure_index_builds_once_then_reuses(hash_settings: Settings) -> None:
    first = ensure_index(hash_settings, EMBEDDER)
    assert first.build is not None and first.reason is not None
    assert "no index" in first.reason
    again = ensure_index(hash_settings, EMBEDDER)
    assert again.build is None and again.reason is None
    assert again.data.path == first.data.path

    forced = ensure_index(hash_settings, EMBEDDER, force=True)
    assert forced.build is not None and forced.reason == "rebuild requested"
    assert forced.build.embedded == 0  # an unchanged corpus re-embeds nothing
    assert forced.build.reused == first.build.embedded
    assert forced.data.path != first.data.path
    assert [c.id for c in forced.data.chunks] == [c.id for c in first.data.chunks]


def _cannot_write(*_args: object, **_kwargs: object) -> None:
    raise IndexWriteError("cannot write to index/ (Read-only file system); fix its permissions")


def test_stale_index_that_cannot_be_rebuilt_is_served_with_a_warning(
    built: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load_index(built.index_dir)
    (built.corpus_dir / "new.md").write_text("# New\n\nA new study of knee cartilage.\n")
    monkeypatch.setattr("service.ingest.build_index", _cannot_write)
    with pytest.raises(IndexWriteError):  # ingest: building is the point, so it fails
        ensure_index(built, EMBEDDER)
    served = ensure_index(built, EMBEDDER, serve_stale=True)
    assert served.build is None
    assert served.data.path == before.path
    assert served.reason == "index is stale: corpus changed"
    assert served.warning == (
        "serving the existing index unchanged (index is stale: corpus changed) because "
        "cannot write to index/ (Read-only file system); fix its permissions"
    )


def test_index_of_another_model_is_not_served_even_when_it_cannot_be_rebuilt(
    built: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.ingest.build_index", _cannot_write)
    other = HashEmbedder(dimension=EMBEDDER.dimension)
    other.name = "hash-other"
    with pytest.raises(IndexWriteError):
        ensure_index(built, other, serve_stale=True)


@pytest.mark.parametrize(
    "change", [{"chunk_max_tokens": 96}, {"chunk_overlap_sentences": 0}, {"embed_context": False}]
)
def test_chunking_settings_change_rebuilds(
    built: Settings, tmp_path: Path, change: dict[str, object]
) -> None:
    before = load_index(built.index_dir)
    changed = make_settings(tmp_path, **change)
    assert changed.corpus_dir == built.corpus_dir  # same folders, other settings
    docs = load_corpus(built.corpus_dir).documents
    ensured = ensure_index(changed, EMBEDDER)
    assert ensured.build is not None
    assert ensured.reason == "index is stale: chunking settings changed"
    assert not {c.id for c in ensured.data.chunks} & {c.id for c in before.chunks}
    # Only texts the old build did not have are embedded (sentences are all reused).
    new_texts = texts_to_embed(docs, changed) - texts_to_embed(docs, built)
    assert ensured.build.embedded == len(new_texts) > 0
    assert ensure_index(changed, EMBEDDER).build is None


def test_model_change_rebuilds(built: Settings) -> None:
    ensured = ensure_index(built, HashEmbedder(dimension=64))
    assert ensured.build is not None
    assert ensured.reason == "index is stale: model changed (hash-256 -> hash-64)"
    assert ensured.data.manifest.dimension == 64
    assert ensured.build.reused == 0  # vectors of another model are never reused


def test_changing_one_document_re_embeds_only_its_texts(built: Settings) -> None:
    before = load_index(built.index_dir)
    old_docs = load_corpus(built.corpus_dir).documents
    path = built.corpus_dir / "zhang-2023.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("The pooled reoperation rate was low, around 7%.", "Reoperations: 7%."),
        encoding="utf-8",
    )
    new_docs = load_corpus(built.corpus_dir).documents
    expected = texts_to_embed(new_docs, built) - texts_to_embed(old_docs, built)
    zhang = next(d for d in new_docs if d.id == "zhang-2023")
    assert expected <= texts_to_embed([zhang], built)
    assert "Reoperations: 7%." in expected

    ensured = ensure_index(built, EMBEDDER)
    assert ensured.build is not None
    assert ensured.reason == "index is stale: corpus changed"
    assert ensured.build.embedded == len(expected)
    assert 0 < ensured.build.embedded <= 4  # the edited sentence and the chunks holding it
    # Chunks of the other documents are the same chunks.
    unchanged = {c.id for c in before.chunks if c.document_id != "zhang-2023"}
    assert unchanged <= {c.id for c in ensured.data.chunks}


def test_adding_and_removing_documents(built: Settings, tmp_path: Path) -> None:
    (built.corpus_dir / "extra.txt").write_text(
        "Cord Blood Cells\n\nUmbilical cord blood cells were tested in ten patients.\n",
        encoding="utf-8",
    )
    docs = load_corpus(built.corpus_dir).documents
    extra = next(d for d in docs if d.id == "extra")
    added = ensure_index(built, EMBEDDER)
    assert added.build is not None and added.data.manifest.documents == 6
    assert added.build.embedded == len(texts_to_embed([extra], built)) == 2

    (built.corpus_dir / "han-2025.md").unlink()
    removed = ensure_index(built, EMBEDDER)
    assert removed.build is not None and removed.reason == "index is stale: corpus changed"
    assert removed.build.embedded == 0
    assert sorted(removed.data.documents) == [
        "el-assaad-2024",
        "extra",
        "li-2025",
        "regmi-2022",
        "zhang-2023",
    ]


def test_bad_files_are_reported_and_the_rest_indexed(hash_settings: Settings) -> None:
    corpus = hash_settings.corpus_dir
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "latin1.txt").write_bytes(b"caf\xe9\n")
    (corpus / "binary.html").write_bytes(b"\x00\x01\x02")
    (corpus / "dup.md").write_text("---\nid: zhang-2023\n---\n\n# Copy\n\nText.\n")
    (corpus / "broken.md").write_text("---\ntitle: [x\n---\n\nText.\n")
    (corpus / "slides.pdf").write_bytes(b"%PDF-1.4")
    ensured = ensure_index(hash_settings, EMBEDDER)
    assert ensured.build is not None
    assert sorted(p.path for p in ensured.build.problems) == [
        "binary.html",
        "broken.md",
        "empty.md",
        "latin1.txt",
        "slides.pdf",
        "zhang-2023.md",  # "dup.md" sorts first and keeps the id
    ]
    assert ensured.data.manifest.documents == 5
    assert ensured.data.documents["zhang-2023"].path == "dup.md"
    assert {c.document_id for c in ensured.data.chunks} == set(ensured.data.documents)


def test_empty_corpus_and_headings_only(hash_settings: Settings) -> None:
    (hash_settings.index_dir.parent / "other").mkdir()
    empty = make_settings(hash_settings.index_dir.parent / "other")
    with pytest.raises(CorpusEmptyError, match="no usable documents"):
        build_index(empty, EMBEDDER)
    with pytest.raises(CorpusEmptyError, match="no text to index"):
        build_index(
            empty,
            EMBEDDER,
            documents=[Document(id="h", title="H", text="# H\n\n## Only a heading\n")],
        )


def test_index_dir_that_cannot_be_written(hash_settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = make_settings(tmp_path, index_dir=blocker / "index")
    with pytest.raises(IndexStoreError, match=r"cannot write to .*a-file/index/"):
        ensure_index(settings, EMBEDDER)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_index_dir(hash_settings: Settings) -> None:
    hash_settings.index_dir.mkdir()
    hash_settings.index_dir.chmod(0o500)
    try:
        with pytest.raises(IndexStoreError, match="cannot write to"):
            build_index(hash_settings, EMBEDDER)
    finally:
        hash_settings.index_dir.chmod(0o700)


# -- corrupt or mismatched indexes -------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _edit_manifest(change: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return edit


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated vectors": (VECTORS, _truncate, r"vectors\.faiss has \d+ bytes, the manifest says"),
    "corrupt vectors": (VECTORS, _flip_byte, r"vectors\.faiss does not match its checksum"),
    "corrupt chunks": ("chunks.jsonl", _flip_byte, r"chunks\.jsonl does not match its checksum"),
    "missing sentences": ("sentences.npy", Path.unlink, r"sentences\.npy is missing"),
    "malformed manifest": (
        MANIFEST,
        lambda p: p.write_text('{"format_version": 1, "model": '),
        r"manifest\.json is not a valid manifest \(JSONDecodeError",
    ),
    "manifest with a missing field": (
        MANIFEST,
        _edit_manifest(lambda d: d.pop("chunking")),
        r"manifest\.json is not a valid manifest \(KeyError",
    ),
    "manifest with bad files": (
        MANIFEST,
        _edit_manifest(lambda d: d.update(files=["vectors.faiss"])),
        r"manifest\.json is not a valid manifest .*'files'",
    ),
    "manifest with another dimension": (
        MANIFEST,
        _edit_manifest(lambda d: d.update(dimension=384)),
        r"vectors\.faiss has dimension 256, manifest 384",
    ),
    "manifest with another chunk count": (
        MANIFEST,
        _edit_manifest(lambda d: d.update(chunks=1)),
        r"vectors\.faiss holds \d+ vectors, chunks\.jsonl \d+ chunks, manifest 1",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_index_is_refused(built: Settings, case: str) -> None:
    name, damage, message = CORRUPTIONS[case]
    build = current_build(built.index_dir)
    damage(build / name)
    with pytest.raises(IndexCorruptError, match=message) as info:
        load_index(built.index_dir)
    text = str(info.value)
    assert str(build) in text  # names the build (and the file, above)
    assert "\n" not in text and text.endswith("rebuild with `python -m service ingest`")
    # With the corpus at hand, ensure_index rebuilds instead of failing.
    ensured = ensure_index(built, EMBEDDER)
    assert ensured.build is not None and ensured.data.path != build
    assert ensured.reason is not None and ensured.reason in text


def test_checksum_is_skipped_when_not_verifying(built: Settings) -> None:
    sentences = current_build(built.index_dir) / "sentences.npy"
    raw = bytearray(sentences.read_bytes())
    raw[-1] ^= 0xFF  # inside the float data: still a readable .npy file
    sentences.write_bytes(bytes(raw))
    with pytest.raises(IndexCorruptError, match=r"sentences\.npy does not match its checksum"):
        load_index(built.index_dir)
    assert load_index(built.index_dir, verify=False).manifest.documents == 5


def test_current_pointer_problems(built: Settings) -> None:
    pointer = built.index_dir / POINTER
    pointer.write_text("build-20000101T000000-abcdef\n")
    with pytest.raises(IndexCorruptError, match="names a missing build") as info:
        load_index(built.index_dir)
    assert str(pointer) in str(info.value)
    assert "build-20000101T000000-abcdef" in str(info.value)
    pointer.write_text("../elsewhere\n")
    with pytest.raises(IndexCorruptError, match="names a missing build"):
        load_index(built.index_dir)
    pointer.unlink()
    with pytest.raises(IndexMissingError, match=r"no index in .*; build it with"):
        load_index(built.index_dir)


def test_format_version_mismatch(built: Settings) -> None:
    _edit_manifest(lambda d: d.update(format_version=99))(current_build(built.index_dir) / MANIFEST)
    with pytest.raises(IndexMismatchError, match=r"manifest\.json has index format 99"):
        load_index(built.index_dir)


def test_without_corpus_a_mismatched_index_is_refused(built: Settings, tmp_path: Path) -> None:
    shutil.rmtree(built.corpus_dir)
    # Same model: the index is served even though the corpus folder is gone.
    assert ensure_index(built, EMBEDDER).build is None
    with pytest.raises(IndexMismatchError, match=r"manifest\.json has dimension 256") as info:
        ensure_index(built, HashEmbedder(dimension=64))
    assert str(current_build(built.index_dir) / MANIFEST) in str(info.value)
    with pytest.raises(IndexMissingError, match="no corpus folder"):
        ensure_index(built, EMBEDDER, force=True)
    (tmp_path / "nothing").mkdir()
    nothing = make_settings(tmp_path / "nothing")
    shutil.rmtree(nothing.corpus_dir)
    with pytest.raises(IndexMissingError, match=r"no index in .* and no corpus folder"):
        ensure_index(nothing, EMBEDDER)


# -- crash safety ------------------------------------------------------------------------------

# Runs a build of the given corpus and index in a child process, slowed down at one stage:
# "embed" sleeps inside HashEmbedder.embed, "write" after the first file of the new build is
# written into its temporary folder. The parent kills it with SIGKILL meanwhile.
SLOW_BUILD = """
import sys, time
from pathlib import Path
from service import index_store, ingest
from service.config import load_settings
from service.embedding import HashEmbedder

corpus, index, stage = sys.argv[1:4]
marker = Path(index).parent / "slow-stage-reached"
if stage == "embed":
    def slow_embed(self, texts, **kwargs):
        marker.touch()
        time.sleep(60)
    HashEmbedder.embed = slow_embed
else:
    write = index_store._write_text
    def slow_write(path, text):
        write(path, text)
        marker.touch()
        time.sleep(60)
    index_store._write_text = slow_write
settings = load_settings(corpus_dir=Path(corpus), index_dir=Path(index), model="hash")
ingest.build_index(settings, HashEmbedder())
"""


def _kill_build_midway(settings: Settings, stage: str) -> None:
    marker = settings.index_dir.parent / "slow-stage-reached"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, str(settings.corpus_dir), str(settings.index_dir),
         stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_marker(marker, proc, "the slow build", timeout_s=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["embed", "write"])
def test_killed_rebuild_leaves_the_old_index_in_service(built: Settings, stage: str) -> None:
    index_dir = built.index_dir
    old = load_index(index_dir)
    pointer = (index_dir / POINTER).read_text()
    # A new document, so the killed build would have changed what is served.
    (built.corpus_dir / "new.txt").write_text("New Study\n\nAllogeneic cells were given.\n")

    _kill_build_midway(built, stage)

    leftovers = list(index_dir.glob(".tmp-*"))
    if stage == "write":
        assert len(leftovers) == 1 and (leftovers[0] / "documents.jsonl").is_file()
    assert (index_dir / POINTER).read_text() == pointer
    survived = load_index(index_dir)  # verifies every checksum
    assert survived.path == old.path
    assert survived.manifest == old.manifest
    assert sorted(survived.documents) == sorted(old.documents)

    report = build_index(built, EMBEDDER)
    assert not list(index_dir.glob(".tmp-*"))
    assert report.manifest.documents == 6
    assert load_index(index_dir).path == report.path
