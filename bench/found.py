"""How well `ask` knows when the corpus has no answer: precision and recall of `found`.

    python bench/found.py [--ncpqa-index DIR] [--seed-index DIR]

Positives are questions the corpus answers (../shared/eval/seed_dev.jsonl for the bundled
corpus; NCPQA dev, Chinese and English, for NCPQA); negatives are questions it does not
(bench/negatives/seed.jsonl and ncpqa.jsonl, written for this project). Indexes are built
in temporary directories unless given (bench/retrieval.py --index DIR leaves a reusable
NCPQA index; building it embeds ~4,200 passages).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from policyqa import indexer  # noqa: E402
from policyqa.answer import ask  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import Store  # noqa: E402
from policyqa.terms import has_han  # noqa: E402

SHARED = ROOT.parent / "shared"


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def measure(index: Path, positives: list[str], negatives: list[str]) -> dict:
    searcher = Searcher(Store.open(index))
    out = {}
    for label, questions in (("pos", positives), ("neg", negatives)):
        for q in questions:
            lang = "zh" if has_han(q) else "en"
            found = ask(searcher, q, 5).found
            counts = out.setdefault(lang, {"pos": 0, "pos_found": 0, "neg": 0, "neg_found": 0})
            counts[label] += 1
            counts[f"{label}_found"] += found
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ncpqa-index", type=Path)
    ap.add_argument("--seed-index", type=Path)
    ap.add_argument("--ncpqa", type=Path, default=SHARED / "bench" / "ncpqa")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seed_index = args.seed_index or Path(tmp) / "seed"
        ncpqa_index = args.ncpqa_index or Path(tmp) / "ncpqa"
        indexer.update(ROOT / "corpus", seed_index)
        indexer.update(args.ncpqa / "docs", ncpqa_index)
        corpora = {
            "seed": (seed_index, [q["question"] for q in lines(SHARED / "eval" / "seed_dev.jsonl")],
                     [q["question"] for q in lines(ROOT / "bench" / "negatives" / "seed.jsonl")]),
            "ncpqa": (ncpqa_index, [q["question"] for f in ("dev.jsonl", "dev_en.jsonl")
                                    for q in lines(args.ncpqa / f)],
                      [q["question"] for q in lines(ROOT / "bench" / "negatives" / "ncpqa.jsonl")]),
        }
        print("| corpus | lang | answerable found (recall) | unanswerable found | precision of found |")
        print("|---|---|---|---|---|")
        for name, (index, pos, neg) in corpora.items():
            for lang, c in sorted(measure(index, pos, neg).items()):
                found = c["pos_found"] + c["neg_found"]
                precision = c["pos_found"] / found if found else float("nan")
                print(f"| {name} | {lang} | {c['pos_found']}/{c['pos']} ({c['pos_found'] / c['pos']:.2f}) | "
                      f"{c['neg_found']}/{c['neg']} | {precision:.3f} |", flush=True)


if __name__ == "__main__":
    main()
