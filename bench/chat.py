"""Chat responsiveness: time to the prompt, the first answer, and warm answers.

Answers go through exactly what chat runs for a typed question (Chat.handle: topic,
answer.ask, render into a terminal-sized console), cycling through the seed questions so
that no query vector is reused; one round first warms caches and is not counted. "compute"
is the whole handle() call; embed/search/answer are answer.ask's own timings. The start-up
figures are fresh processes.

    python bench/chat.py [--index DIR] [--corpus DIR] [--rounds 5] [--questions FILE]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def fresh_process(args: list[str], stdin: str, index: Path, corpus: Path, runs: int) -> float:
    """Median wall time of `policyqa chat` in a new process reading `stdin`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "policyqa", "chat", "--index", str(index), "--corpus", str(corpus),
                               *args], input=stdin, env=env, capture_output=True, text=True, encoding="utf-8")
        times.append((time.perf_counter() - t0) * 1000)
        if proc.returncode != 0:
            sys.exit(f"chat failed: {proc.stderr.strip()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "index")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    parser.add_argument("--questions", type=Path, default=ROOT.parent / "shared" / "eval" / "seed_dev.jsonl")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--starts", type=int, default=3, help="fresh processes per start-up figure")
    args = parser.parse_args()

    from rich.console import Console

    from policyqa.chat import Chat
    from policyqa.cli import open_or_build

    questions = [json.loads(line)["question"]
                 for line in args.questions.read_text(encoding="utf-8").splitlines() if line]
    t0 = time.perf_counter()
    store = open_or_build(args.corpus, args.index)
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system="standard")
    chat = Chat(args.corpus, args.index, store, console)
    chat.banner()
    ready = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    chat.handle(questions[0])
    first = (time.perf_counter() - t1) * 1000
    torch_loaded = "torch" in sys.modules

    per_question: dict[str, list[float]] = {q: [] for q in questions}
    parts: dict[str, list[float]] = {}
    for round_ in range(args.rounds + 1):
        for q in questions:
            chat.handle("/new")  # each seed question stands alone, as when typed after /new
            t = time.perf_counter()
            chat.handle(q)
            ms = (time.perf_counter() - t) * 1000
            if round_ == 0:
                continue
            per_question[q].append(ms)
            for key, value in chat.last_timings.items():
                parts.setdefault(key, []).append(value)

    everything = [v for vs in per_question.values() for v in vs]
    print(f"index {args.index}: {store.counts()[0]} documents, {store.counts()[1]} chunks; "
          f"{len(questions)} questions x {args.rounds} rounds; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"in-process: index open + banner {ready:.0f} ms; first answer {first:.0f} ms "
          f"(torch imported: {torch_loaded})")
    print(f"warm compute per question (ms): p50 {statistics.median(everything):.1f}  "
          f"p95 {percentile(everything, 95):.1f}  max {max(everything):.1f}")
    print("  of which (p50 ms): " + "  ".join(f"{k} {statistics.median(v):.1f}" for k, v in parts.items()))
    for q, times in per_question.items():
        print(f"  {statistics.median(times):7.1f}  {q}")
    banner = fresh_process([], "", args.index, args.corpus, args.starts)
    answered = fresh_process([], questions[0] + "\n", args.index, args.corpus, args.starts)
    print(f"fresh process (median of {args.starts}): start to banner and exit {banner:.0f} ms; "
          f"start to first answer and exit {answered:.0f} ms")


if __name__ == "__main__":
    main()
