"""Index segments: the streaming keyword writer against bm25s, scores across parts and
segments, tombstones, delta commits, merges and `index optimize`."""
from __future__ import annotations

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
    monkeypatch.setattr(lexical, "PART_CHUNKS", part_chunks)  # one part, or several
    texts, docs, documents = _passages(400)
    ids = np.arange(1, len(texts) + 1)
    lexical.write(tmp_path / "k", ids, texts, docs, documents)
    index = _load(tmp_path / "k")
    assert part_chunks > len(texts) or len(index.bigrams.passages.parts) > 1
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
    order = np.concatenate([sorted(set(docs[i] for i in range(len(texts)) if index.chunk_documents[i] == r))
                            for r in range(int(index.chunk_documents.max()) + 1)])
    assert np.array_equal(got, by_doc[[paths.index(p) for p in order]]) if part_chunks == 97 else \
        np.array_equal(got, by_doc)


@NEEDS_LAWS
def test_deleted_passages_score_as_in_an_index_without_them(tmp_path):
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
    live_docs = np.unique(with_tombstones.chunk_documents[keep])
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
    query = dict.fromkeys(words("市人民政府应当加强监督管理"), 1.0)
    assert np.array_equal(split.words.scores(query), one.words.scores(query))
    assert split.words.document_frequency("管理") == one.words.document_frequency("管理") > 0
