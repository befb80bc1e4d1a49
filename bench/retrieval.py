"""Retrieval quality on NCPQA dev, component by component (reproduces the issue's table).

    python bench/retrieval.py [--index DIR] [--ncpqa ../shared/bench/ncpqa]

Builds an index of the 599 NCPQA documents with the project's own indexer (in a temporary
directory, or in --index DIR, which is reused on the next run: only what changed is
embedded again), then evaluates each retrieval component and the final pipeline on the
400 Chinese dev questions, the 80 English ones, and the same 80 asked in Chinese (the
ceiling for English). A full build embeds ~4,200 passages: ~4 minutes at the reference
17-18 passages/s of 2 idle cores, but about 30 minutes on a shared, busy 2-core machine;
with a built --index, evaluating all pipelines takes about 2 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from policyqa import indexer  # noqa: E402
from policyqa.evaluate import Question, evaluate  # noqa: E402
from policyqa.lexical import WORDS  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PIPELINES = [
    ("BM25 over rjieba words (title+section+passage)", dict(mode="lexical", translate=False, chinese=WORDS)),
    ("BM25 over character bigrams (title+section+passage)", dict(mode="lexical", translate=False)),
    ("BM25 over words, English translated (translate.py)", dict(mode="lexical", chinese=WORDS)),
    ("dense multilingual-e5-small", dict(mode="dense")),
    ("hybrid of words, dense and document words", dict(translate=False, chinese=WORDS)),
    ("the same + English translation", dict(chinese=WORDS)),
    ("final: hybrid, Chinese by bigrams, English translated", {}),
]


def questions(path: Path, field: str = "question", lang: str | None = None) -> list[Question]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        o = json.loads(line)
        out.append(Question(o[field], lang or o["lang"], o["doc"], o.get("answer_start"), o.get("answer_end")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="index directory to build or reuse (default: a temporary one)")
    ap.add_argument("--ncpqa", type=Path, default=ROOT.parent / "shared" / "bench" / "ncpqa")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or Path(tmp) / "index"
        t0 = time.perf_counter()
        report = indexer.update(args.ncpqa / "docs", index)
        print(f"index: {report.chunks} chunks, {report.chunks_embedded} embedded, {time.perf_counter() - t0:.0f} s")
        sets = {
            "zh": questions(args.ncpqa / "dev.jsonl"),
            "en": questions(args.ncpqa / "dev_en.jsonl"),
            "en as zh": questions(args.ncpqa / "dev_en.jsonl", "question_zh", "zh"),
        }
        store = Store.open(index)
        print(f"\n| pipeline | {' | '.join(f'{s} ({len(q)} q)' for s, q in sets.items())} |")
        print("|---|" + "---|" * len(sets))
        metrics = {}
        for name, options in PIPELINES:
            searcher = Searcher(store, **options)
            cells = []
            for s, qs in sets.items():
                m = evaluate(searcher, qs, 10).metrics()
                metrics[(name, s)] = m
                cells.append(f"{m['doc_hit@5']:.3f}")
            print(f"| {name} | {' | '.join(cells)} |", flush=True)
        final = PIPELINES[-1][0]
        print("\nfinal pipeline in detail (doc hit@1 / hit@5 / span hit@5 / MRR@10 / mean ms):")
        for s in sets:
            m = metrics[(final, s)]
            print(f"  {s:9} {m['doc_hit@1']:.3f} / {m['doc_hit@5']:.3f} / {m['span_hit@5']:.3f} / "
                  f"{m['mrr@10']:.3f} / {m['latency_ms']['mean']:.0f}")
        store.close()


if __name__ == "__main__":
    main()
