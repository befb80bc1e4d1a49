"""Core benchmark: cold `ask`, warm query latency, build throughput vs raw encode.

    python bench/core.py [--runs 5] [--docs 40]

Prints, in one run:
- cold `policyqa ask` wall time with the index present (median of --runs fresh processes),
  for an English and a Chinese question, beside a bare `python -c pass` and
  `python -c "import numpy"` for scale;
- warm latency of the same question path (search + answer) in one process;
- index build throughput (chunks/s and chunks per CPU-second, model load excluded) against
  raw encode throughput on exactly the same chunk texts, in fp32 and at the encoder's own
  precision (bf16 where it keeps parity), each in a fresh process, with the per-CPU-second
  ratio and the smallest cosine between the two precisions' vectors over every chunk.
Build throughput uses --docs documents of ../shared/bench/ncpqa when present (the bundled
corpus alone is too small to time), else the bundled corpus.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
NCPQA = ROOT.parent / "shared" / "bench" / "ncpqa" / "docs"
SEED_DEV = ROOT.parent / "shared" / "eval" / "seed_dev.jsonl"
QUESTION = "what financing support exists for seed-stage firms"
QUESTION_ZH = "科技企业债权融资风险补偿资金池规模多大"


def wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def median_wall(cmd: list[str], env: dict, runs: int) -> str:
    wall(cmd, env)  # warm the page cache once, as a user's second question would
    times = [wall(cmd, env) for _ in range(runs)]
    return f"{statistics.median(w for w, _ in times):.3f} s ({statistics.median(c for _, c in times):.3f} s CPU)"


def cold_ask(index: Path, runs: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    py = sys.executable
    # Bytecode compiled, as an install leaves the package: an environment that forbids
    # writing it (PYTHONDONTWRITEBYTECODE) would otherwise compile every module each run.
    subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "src" / "policyqa")], check=True)
    base = median_wall([py, "-c", "pass"], env, runs)
    numpy = median_wall([py, "-c", "import numpy"], env, runs)
    for label, question in (("English", QUESTION), ("Chinese", QUESTION_ZH)):
        ask = median_wall([py, "-m", "policyqa", "ask", question, "--index", str(index)], env, runs)
        ask_json = median_wall([py, "-m", "policyqa", "ask", question, "--json", "--index", str(index)], env, runs)
        print(f"cold ask, {label} question (median of {runs}):  {ask}   (--json {ask_json})")
    print(f"  for scale: python -c pass {base}, import numpy {numpy}")


def warm_latency(index: Path) -> None:
    import json

    from policyqa.answer import ask
    from policyqa.search import Searcher
    from policyqa.store import Store

    questions = [QUESTION]
    if SEED_DEV.exists():
        questions = [json.loads(line)["question"] for line in SEED_DEV.read_text().splitlines() if line.strip()]
    searcher = Searcher(Store.open(index))
    ask(searcher, questions[0], 5)
    times = []
    for _ in range(3):
        for q in questions:
            t = time.perf_counter()
            ask(searcher, q, 5)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(f"warm ask ({len(times)} questions): median {statistics.median(times):.1f} ms, "
          f"p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms")


def build_child(docs: int, vectors_out: Path) -> None:
    """One build in this process at the precision POLICYQA_PRECISION asks for: prints one JSON
    line of figures and saves the raw encode's vectors to `vectors_out` for the parity check."""
    import json

    import numpy as np

    from policyqa import indexer
    from policyqa.chunk import search_text
    from policyqa.embed import BUNDLED, PassageEncoder
    from policyqa.records import Chunk
    from policyqa.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        if NCPQA.is_dir():
            for p in sorted(NCPQA.glob("*.txt"))[:docs]:
                shutil.copy(p, corpus / p.name)
            source = f"{docs} NCPQA documents"
        else:
            shutil.copytree(ROOT / "corpus", corpus, dirs_exist_ok=True)
            source = "the bundled corpus"

        class Clock(indexer.Progress):
            start = cpu = None

            def reading(self, total_files):
                self.start, self.cpu = time.perf_counter(), time.process_time()

        t_load = time.perf_counter()
        encoder = PassageEncoder(BUNDLED, lambda m: None)
        load_s = time.perf_counter() - t_load
        clock = Clock()
        report = indexer.update(corpus, Path(tmp) / "index", full=True, progress=clock)
        build_s, build_cpu = time.perf_counter() - clock.start, time.process_time() - clock.cpu

        store = Store.open(Path(tmp) / "index")
        rows = store.conn.execute(
            "SELECT c.text, c.section, d.title FROM chunks c JOIN documents d ON d.path = c.doc ORDER BY c.id"
        ).fetchall()
        texts = [search_text(t, Chunk("", 0, 0, 0, text, s)) for text, s, t in rows]
        t, cpu = time.perf_counter(), time.process_time()
        np.save(vectors_out, encoder.passages(texts, batch_size=indexer.EMBED_BATCH))
        raw_s, raw_cpu = time.perf_counter() - t, time.process_time() - cpu
    print(json.dumps(dict(source=source, precision=encoder.precision, chunks=report.chunks, load_s=load_s,
                          build_s=build_s, build_cpu_s=build_cpu, texts=len(texts), raw_s=raw_s, raw_cpu_s=raw_cpu)))


def build_throughput(docs: int) -> None:
    """The same build at fp32 and at the encoder's own choice (bf16 where it keeps parity),
    each in a fresh process so that neither inherits the other's model or caches."""
    import json

    import numpy as np

    from policyqa.embed import PARITY_COSINE, min_cosine

    figures, vectors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "auto"):
            out = Path(tmp) / f"{precision}.npy"
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), POLICYQA_PRECISION=precision)
            proc = subprocess.run([sys.executable, __file__, "--build-child", str(out), "--docs", str(docs)],
                                  env=env, check=True, capture_output=True, text=True)
            figures[precision] = json.loads(proc.stdout.strip().splitlines()[-1])
            vectors[precision] = np.load(out)
    for f in figures.values():
        build_rate, raw_rate = f["chunks"] / f["build_s"], f["texts"] / f["raw_s"]
        print(f"build {f['precision']} ({f['source']}, {f['chunks']} chunks): {f['build_s']:.1f} s = "
              f"{build_rate:.1f} chunks/s, {f['chunks'] / f['build_cpu_s']:.2f} chunks per CPU-second "
              f"(model load {f['load_s']:.1f} s excluded)")
        print(f"  raw encode, same {f['texts']} texts: {f['raw_s']:.1f} s = {raw_rate:.1f} chunks/s, "
              f"{f['texts'] / f['raw_cpu_s']:.2f} per CPU-second; build / raw throughput {build_rate / raw_rate:.2f}")
    base, fast = figures["fp32"], figures["auto"]
    per_cpu = (fast["chunks"] / fast["build_cpu_s"]) / (base["chunks"] / base["build_cpu_s"])
    print(f"build chunks per CPU-second, {fast['precision']} / fp32: {per_cpu:.2f}")
    print(f"parity over all {len(vectors['fp32'])} chunks, {fast['precision']} vs fp32: min cosine "
          f"{min_cosine(vectors['fp32'], vectors['auto']):.6f} (the encoder keeps bf16 at >= {PARITY_COSINE} "
          "on its probe batch)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--skip-build", action="store_true", help="only the query figures")
    ap.add_argument("--build-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_child:
        build_child(args.docs, args.build_child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([sys.executable, "-m", "policyqa", "index", "build", "--corpus", str(ROOT / "corpus"),
                        "--index", str(index)],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cold_ask(index, args.runs)
        warm_latency(index)
    if not args.skip_build:
        build_throughput(args.docs)


if __name__ == "__main__":
    main()
