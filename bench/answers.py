"""Do the answer sentences answer? Retrieval, passage and answer containment, and the
"relevant enough?" decision, per corpus and language.

    python bench/answers.py --ncpqa-index DIR [--seed-index DIR] [--split dev]

NCPQA (../shared/bench/ncpqa, dev questions, Chinese and English): doc hit@5, the share
whose top-5 passages contain the gold answer (passage_answer@5: what answer selection can
reach), the share whose answer sentences contain it (answer_hit; both normalised NFKC
without whitespace), the share of the gold span's characters the answer covers
(answer_overlap). Found: recall (answerable questions answered) and precision (answered
questions that are answerable) against the near-miss negatives of bench/negatives/
(ncpqa.jsonl for NCPQA, seed.jsonl for the bundled corpus with ../shared/eval/seed_dev.jsonl
as its answerable questions; there answer_hit means an `expect_any` string is in the answer).
Indexes not given are built in a temporary directory (NCPQA embeds ~4,200 passages).
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
from policyqa.evaluate import Question, Report, evaluate, read_questions  # noqa: E402
from policyqa.search import Searcher, normalized  # noqa: E402
from policyqa.store import Store  # noqa: E402

SHARED = ROOT.parent / "shared"
NEGATIVES = ROOT / "bench" / "negatives"


def seed_rows(searcher: Searcher) -> dict[str, list[tuple[bool, bool]]]:
    """(found, an expected string is in the answer) of each seed dev question, by language."""
    out: dict[str, list[tuple[bool, bool]]] = {}
    for line in (SHARED / "eval" / "seed_dev.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            answer = ask(searcher, row["question"], 5)
            text = normalized("".join(s.text for s in answer.sentences))
            out.setdefault(row["lang"], []).append(
                (answer.found, any(normalized(e) in text for e in row["expect_any"])))
    return out


def precision(found_pos: int, found_neg: int) -> str:
    return f"{found_pos / (found_pos + found_neg):.3f}" if found_pos + found_neg else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ncpqa-index", type=Path)
    ap.add_argument("--seed-index", type=Path)
    ap.add_argument("--ncpqa", type=Path, default=SHARED / "bench" / "ncpqa")
    ap.add_argument("--split", default="dev", help="NCPQA question files SPLIT.jsonl and SPLIT_en.jsonl")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seed_index = args.seed_index or Path(tmp) / "seed"
        ncpqa_index = args.ncpqa_index or Path(tmp) / "ncpqa"
        if not args.seed_index:
            indexer.update(ROOT / "corpus", seed_index)
        if not args.ncpqa_index:
            indexer.update(args.ncpqa / "docs", ncpqa_index)
        questions: list[Question] = []
        for name in (f"{args.split}.jsonl", f"{args.split}_en.jsonl"):
            questions += read_questions(args.ncpqa / name)
        questions += read_questions(NEGATIVES / "ncpqa.jsonl")
        report: Report = evaluate(Searcher(Store.open(ncpqa_index)), questions, 10)

        print("| corpus | lang | n | doc hit@5 | top-5 passages contain answer | answer_hit | answer_overlap "
              "| answer chars | found recall | negatives found | found precision |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for lang in report.languages():
            m, neg = report.metrics(lang), report.unanswerable(lang)
            pos_found = round(m["found"] * m["n"])
            neg_found = round((neg["wrongly_answered"] or 0) * neg["n"])
            print(f"| ncpqa {args.split} | {lang} | {m['n']} | {m['doc_hit@5']:.3f} | {m['passage_answer@5']:.3f} | "
                  f"{m['answer_hit']:.3f} | {m['answer_overlap']:.3f} | {m['answer_chars'] or 0:.0f} | "
                  f"{m['found']:.3f} | "
                  f"{neg_found}/{neg['n']} | {precision(pos_found, neg_found)} |", flush=True)

        seed = Searcher(Store.open(seed_index))
        negatives = read_questions(NEGATIVES / "seed.jsonl")
        for lang, rows in sorted(seed_rows(seed).items()):
            neg_found = sum(ask(seed, q.question, 5).found for q in negatives if q.lang == lang)
            n_neg = sum(q.lang == lang for q in negatives)
            pos_found = sum(f for f, _ in rows)
            print(f"| seed dev | {lang} | {len(rows)} | - | - | {sum(h for _, h in rows) / len(rows):.3f} | - | - | "
                  f"{pos_found / len(rows):.3f} | {neg_found}/{n_neg} | {precision(pos_found, neg_found)} |",
                  flush=True)


if __name__ == "__main__":
    main()
