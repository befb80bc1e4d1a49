"""What checking an index's files costs: on every question, on every update, on request.

    python bench/verify.py --index DIR [--runs 20]

DIR is an index with recorded checksums (`index update` adds them to an older one, embedding
nothing; run it on a copy of a shared index). Prints
the median time of: reading the vector file as FAISS reads it (faiss.read_index) and as a
question does (Store.load_vectors: the bytes, their CRC-32, then FAISS from memory); the
size check of the keyword files done when a question opens them; the full checksum pass of
`index update` and `index status --verify`; and SQLite's quick_check of the database.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from policyqa import lexical  # noqa: E402
from policyqa.store import Store, vectors_name  # noqa: E402


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    import faiss

    store = Store.open(args.index)
    if store.checksums() is None:
        sys.exit("this index has no checksums yet: run `policyqa index update` on a copy of it first")
    generation = store.generation()
    path = args.index / vectors_name(generation)
    keywords = lexical.generation_dir(args.index, generation)
    keyword_mb = sum(p.stat().st_size for p in keywords.rglob("*") if p.is_file()) / 1e6
    database_mb = (args.index / "policyqa.sqlite3").stat().st_size / 1e6
    print(f"index {args.index}: generation {generation}, vector file {path.stat().st_size / 1e6:.1f} MB, "
          f"keyword files {keyword_mb:.1f} MB, database {database_mb:.1f} MB")
    with store.snapshot():
        read = median_ms(lambda: faiss.read_index(str(path)), args.runs)
        checked = median_ms(lambda: store.load_vectors(generation), args.runs)
        sizes = median_ms(lambda: store.damaged(full=False), args.runs)
        full = median_ms(lambda: store.damaged(full=True), args.runs)
    quick = median_ms(lambda: store.conn.execute("PRAGMA quick_check").fetchall(), max(1, args.runs // 4))
    print(f"faiss.read_index                 {read:8.2f} ms")
    print(f"Store.load_vectors (with CRC-32) {checked:8.2f} ms  ({checked / read:.2f}x)")
    print(f"keyword file sizes (per question) {sizes:7.2f} ms")
    print(f"all checksums (update, --verify) {full:8.2f} ms")
    print(f"SQLite quick_check               {quick:8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
