"""The Milvus backend on NCPQA dev: the same pipelines against a local index and the same
passages in milvus-lite, and the two keyword options (policyqa's BM25 over rjieba words,
fused as today, against Milvus's own BM25 full-text search with its Chinese analyzer).

    python bench/milvus.py [--index /work/ncpqa-index] [--ncpqa ../shared/bench/ncpqa] [--store DIR/x.db]

--index is a built NCPQA index (bench/retrieval.py --index DIR builds one), copied: its
embedding cache seeds the Milvus store's pending vectors, so nothing is embedded again.
Prints doc hit@5 / hit@1 / mean ms per pipeline and backend, then the keyword options
alone (top-5 passages, no fusion), on the 400 Chinese and 80 English dev questions.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from retrieval import questions  # noqa: E402

from policyqa import indexer, terms  # noqa: E402
from policyqa.backend import MilvusLocation, open_store  # noqa: E402
from policyqa.evaluate import evaluate  # noqa: E402
from policyqa.lexical import WORDS  # noqa: E402
from policyqa.milvus import MilvusStore  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [
    ("final: hybrid, Chinese by bigrams, English translated", {}),
    ("hybrid of words, dense and document words", dict(translate=False, chinese=WORDS)),
    ("dense multilingual-e5-small", dict(mode="dense")),
    ("BM25 over rjieba words (policyqa)", dict(mode="lexical", translate=False, chinese=WORDS)),
]


def seed(store_uri: str, index: Path, ncpqa: Path) -> MilvusLocation:
    """A Milvus store of the NCPQA documents whose vectors come from `index`'s cache."""
    where = MilvusLocation(store_uri)
    local = Store.open(index)
    try:
        hashes = [h for (h,) in local.conn.execute("SELECT DISTINCT embed_hash FROM chunks")]
        stored = local.stored_vectors(hashes)
    finally:
        local.close()
    writer = MilvusStore.create_or_open(where)
    for i in range(0, len(hashes), 1000):
        part = hashes[i:i + 1000]
        writer.cache_vectors(part, np.vstack([stored[h] for h in part]))
    writer.close()
    t0 = time.perf_counter()
    report = indexer.update(ncpqa / "docs", where)
    print(f"milvus-lite store: {report.chunks} chunks, {report.chunks_embedded} embedded, "
          f"{time.perf_counter() - t0:.0f} s to write (vectors seeded from {index})", flush=True)
    return where


def milvus_bm25(store: MilvusStore) -> str:
    """A collection of the same passage texts the keyword index is over, searched by
    Milvus's BM25 function over its Chinese (jieba) analyzer."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    chunks = store._live_chunks()[0]
    ids, texts = [c.id for c in chunks], indexer.keyword_texts(chunks)
    name = f"{store.chunks}_bm25"
    client = store.client
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                     analyzer_params={"type": "chinese"})
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                 output_field_names=["sparse"]))
    params = MilvusClient.prepare_index_params()
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
    for i in range(0, len(ids), 1000):
        client.insert(name, [{"id": int(c), "text": t} for c, t in zip(ids[i:i + 1000], texts.passages[i:i + 1000])])
    return name


def keyword_hits(store: MilvusStore, bm25: str, qs) -> dict[str, tuple[float, float]]:
    """doc hit@5 and mean ms of the top-5 passages by each keyword option alone."""
    lexical = store.load_lexical(store.generation())
    assert lexical is not None
    doc_of = {}
    for d, rows in store._document_rows().items():
        for c in range(rows["first_id"], rows["last_id"] + 1):
            doc_of[c] = d
    out = {}
    hits, spent = 0, 0.0
    for q in qs:
        t0 = time.perf_counter()
        # the question's rjieba words, as the hybrid of words searches them
        scores = lexical.words.scores({t: 1.0 for t in terms.words(q.question)})
        top = np.argsort(-scores, kind="stable")[:5]
        spent += time.perf_counter() - t0
        hits += q.doc in {doc_of[int(lexical.ids[r])] for r in top if scores[r] > 0}
    out["policyqa BM25, rjieba words"] = (hits / len(qs), 1000 * spent / len(qs))
    hits, spent = 0, 0.0
    for q in qs:
        t0 = time.perf_counter()
        found = store.client.search(bm25, data=[q.question], anns_field="sparse", limit=5,
                                    search_params={"metric_type": "BM25"})
        spent += time.perf_counter() - t0
        hits += q.doc in {doc_of.get(int(h["id"])) for h in found[0]}
    out["Milvus BM25, jieba analyzer"] = (hits / len(qs), 1000 * spent / len(qs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=Path("/work/ncpqa-index"))
    ap.add_argument("--ncpqa", type=Path, default=ROOT.parent / "shared" / "bench" / "ncpqa")
    ap.add_argument("--store", help="milvus-lite file or server URI (default: a temporary file)")
    ap.add_argument("--keywords-only", action="store_true", help="skip the pipelines, compare the keyword options")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"  # a copy: opening an index may write beside its database (WAL)
        shutil.copytree(args.index, index)
        where = seed(args.store or str(Path(tmp) / "ncpqa.db"), index, args.ncpqa)
        sets = {"zh": questions(args.ncpqa / "dev.jsonl"), "en": questions(args.ncpqa / "dev_en.jsonl")}
        stores = {"local": open_store(index), "milvus-lite": open_store(where)}
        figures: dict = {"pipelines": {}, "keywords": {}}
        print("\n| pipeline | backend | " + " | ".join(f"{s} hit@5 / hit@1 / ms" for s in sets) + " |")
        print("|---|---|" + "---|" * len(sets))
        for name, options in [] if args.keywords_only else PIPELINES:
            for backend, store in stores.items():
                cells = []
                for s, qs in sets.items():
                    m = evaluate(Searcher(store, **options), qs, 10).metrics()
                    figures["pipelines"][f"{name} | {backend} | {s}"] = m["doc_hit@5"]
                    cells.append(f"{m['doc_hit@5']:.3f} / {m['doc_hit@1']:.3f} / {m['latency_ms']['mean']:.0f}")
                print(f"| {name} | {backend} | {' | '.join(cells)} |", flush=True)
        milvus = stores["milvus-lite"]
        assert isinstance(milvus, MilvusStore)
        t0 = time.perf_counter()
        bm25 = milvus_bm25(milvus)
        print(f"\nkeyword search alone, top-5 passages (Milvus BM25 collection written in "
              f"{time.perf_counter() - t0:.1f} s):")
        print("| keywords | zh doc hit@5 | zh mean ms |\n|---|---|---|")
        for name, (hit, ms) in keyword_hits(milvus, bm25, sets["zh"]).items():
            figures["keywords"][name] = hit
            print(f"| {name} | {hit:.3f} | {ms:.1f} |")
        for store in stores.values():
            store.close()
        if args.json:
            print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
