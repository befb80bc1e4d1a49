"""Fault injection at scale: `kill -9` a running `policyqa index update` many times
(tests/crashkit.py has the harness; the test suite runs 20 trials of it).

    python bench/crash.py [--trials 100] [--seed 7]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from crashkit import prepare, schedule, trial  # noqa: E402

SEED_DOCUMENT = ROOT / "corpus" / "chengdu-sti-reform.txt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="policyqa-crash-") as tmp:
        root = Path(tmp)
        setup = prepare(SEED_DOCUMENT, root)
        print(f"uninterrupted update: {setup.seconds:.2f} s; old {len(setup.old_chunks)} chunks, "
              f"new {len(setup.new_chunks)} chunks")
        results = []
        for i, (point, delay) in enumerate(schedule(args.trials, args.seed, setup.seconds)):
            t = trial(setup, root / "work", point, delay)
            results.append(t)
            when = f"at {point}" if point else f"after {delay:.2f} s"
            print(f"trial {i + 1:3d}: killed {when:<22} index held {t.after_kill}"
                  f"{' (update had finished)' if t.finished_first else ''}; repair embedded {t.repair_embedded}")
        old = sum(t.after_kill == "old" for t in results)
        print(f"{len(results)} trials, {len(results)} passed: {old} left the old index, "
              f"{len(results) - old} the new one; every repair matched a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
