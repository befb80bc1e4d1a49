"""Format extraction benchmark: import cost of each extractor, extraction speed, and
proof that no extractor is imported on the one-shot `ask` path.

    python bench/formats.py [--paragraphs 300]

Prints, for HTML (trafilatura), Word (python-docx) and PDF (pypdf):
- the import time of the extractor module in a fresh process (median of 3);
- the time to extract a document of --paragraphs paragraphs (HTML page, .docx, PDF of
  ~paragraphs/25 pages), best of 3, and its characters per second;
and then the modules the `ask` path imports (cli, search, answer, render, load), with
any extractor library among them named (there must be none).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from policyqa.formats import extract  # noqa: E402

from realfiles import write_docx_paragraphs, write_pdf  # noqa: E402

EXTRACTOR_LIBS = ("trafilatura", "docx", "pypdf", "lxml", "htmldate", "justext")
PARAGRAPH = "对新认定的国家级技术转移示范机构给予50万元一次性奖励，对技术转让方按经登记的技术合同交易额的3%给予奖励。"


def import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    runs = [float(subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "src")},
                                 capture_output=True, text=True, check=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def make_files(folder: Path, n: int) -> dict[str, Path]:
    # Numbered: trafilatura collapses identical long paragraphs of a page into one.
    paragraphs = [f"{i + 1}. {PARAGRAPH}" for i in range(n)]
    body = "".join(f"<h2>第{i // 10 + 1}节</h2><p>{p}</p>" if i % 10 == 0 else f"<p>{p}</p>"
                   for i, p in enumerate(paragraphs))
    html = folder / "page.html"
    html.write_text(f"<html><head><title>bench</title></head><body><nav><a href='/'>首页</a></nav>"
                    f"<article><h1>技术转移若干政策</h1>{body}</article><footer>版权所有</footer></body></html>",
                    encoding="utf-8")
    docx_path = folder / "doc.docx"
    write_docx_paragraphs(docx_path, paragraphs)
    pdf = folder / "doc.pdf"
    # 25 lines of 30 characters a page.
    lines = [p[i:i + 30] for p in paragraphs for i in range(0, len(p), 30)]
    write_pdf(pdf, [lines[i:i + 25] for i in range(0, len(lines), 25)])
    return {".html": html, ".docx": docx_path, ".pdf": pdf}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--paragraphs", type=int, default=300)
    args = parser.parse_args()
    modules = {".html": "policyqa.formats.webpage", ".docx": "policyqa.formats.word", ".pdf": "policyqa.formats.pdf"}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.paragraphs)
        print(f"{'format':<7}{'import ms':>10}{'extract ms':>12}{'chars':>9}{'chars/s':>11}  extra")
        for suffix, path in files.items():
            raw = path.read_bytes()
            extract(suffix, raw)  # warm: first-call work is not extraction speed
            best, found = float("inf"), None
            for _ in range(3):
                t = time.perf_counter()
                found = extract(suffix, raw)
                best = min(best, time.perf_counter() - t)
            extra = f"{len(found.pages)} pages" if found.pages else f"{len(found.headings)} headings"
            print(f"{suffix:<7}{import_ms(modules[suffix]):>10.0f}{best * 1000:>12.1f}{len(found.text):>9}"
                  f"{len(found.text) / best:>11.0f}  {extra}")
    code = ("import sys, policyqa.cli, policyqa.search, policyqa.answer, policyqa.render, policyqa.load; "
            f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {EXTRACTOR_LIBS!r})) or 'none')")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT / "src")},
                         capture_output=True, text=True, check=True).stdout.strip()
    print(f"extractor libraries imported on the ask path: {out}")


if __name__ == "__main__":
    main()
