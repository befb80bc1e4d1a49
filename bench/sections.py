"""Sections of law chunks against the law's own outline (编/章/节 › 第X条).

    python bench/sections.py [--laws DIR] [--limit N] [--dump FILE]

Chunks every law (a .txt file with articles) under --laws (default ../shared/bench/laws) and
compares each chunk's section with the outline read straight from the file's lines: the
last 编, 章 and 节 heading and the last article (第X条) that starts at or before the chunk.
Prints how many chunks have a section that differs from it, and of those how many carry
an enumerated list item （一）/一、/1. as a section, how many a label cut short (not followed
in the text by the end of its line or phrase), and how many lack their article.
--dump writes every chunk's (doc, start, end, section) as JSON lines, to compare the
chunking of two revisions of any corpus (--laws may name any folder of documents).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from policyqa.chunk import chunk_document  # noqa: E402
from policyqa.clean import clean  # noqa: E402
from policyqa.load import corpus_files, read_document  # noqa: E402

_NUM = "一二三四五六七八九十百零〇"
_PARTS = [re.compile(rf"^第[{_NUM}\d]+{kind}") for kind in "编章节"]
_ARTICLE = re.compile(rf"^第[{_NUM}\d]+条")
_LIST_ITEM = re.compile(rf"^(?:[（(][{_NUM}\d]+[）)]|[{_NUM}]+、|\d{{1,2}}[.、．]|[{_NUM}]+是)")
_PHRASE_END = re.compile(r"[。；：:！？\s]")


def expected_sections(doc) -> list[tuple[int, str]]:
    """(offset, outline) at every heading line or article start of a law, in order."""
    out, parts, article = [], [None, None, None], None
    for span in doc.keep:
        line = doc.text[span.start:span.end].lstrip("#").strip()
        level = next((i for i, p in enumerate(_PARTS) if p.match(line)), None)
        if level is not None:
            parts = parts[:level] + [line] + [None] * (2 - level)
            article = None
        elif _ARTICLE.match(line):
            article = _ARTICLE.match(line).group()
        else:
            continue
        out.append((span.start, " › ".join(p for p in parts + [article] if p) or None))
    return out


def is_cut(label: str, text: str) -> bool:
    """True when no occurrence of `label` in `text` ends at a line or phrase end."""
    for m in re.finditer(re.escape(label), text):
        if m.end() == len(text) or _PHRASE_END.match(text, m.end()) or _ARTICLE.fullmatch(label):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", type=Path, default=ROOT.parent / "shared" / "bench" / "laws")
    parser.add_argument("--limit", type=int, default=0, help="only the first N files")
    parser.add_argument("--dump", type=Path, help="write every chunk's section as JSON lines")
    args = parser.parse_args()
    files = [p for p in corpus_files(args.laws) if p.suffix == ".txt"]
    files = files[: args.limit] if args.limit else files
    laws = total = bad = listed = cut = no_article = 0
    dump = args.dump.open("w", encoding="utf-8") if args.dump else None
    for path in files:
        doc = clean(read_document(path, args.laws))
        chunks = chunk_document(doc)
        if dump:
            for c in chunks:
                dump.write(json.dumps([c.doc, c.start, c.end, c.section], ensure_ascii=False) + "\n")
        outline = expected_sections(doc)
        if sum(1 for _, s in outline if s and _ARTICLE.match(s.split(" › ")[-1])) < 2:
            continue  # not written as articles (a decision or notice in 一、 sections)
        laws += 1
        for c in chunks:
            total += 1
            before = [s for offset, s in outline if offset <= c.start]
            want = before[-1] if before else None
            if c.section == want:
                continue
            bad += 1
            labels = (c.section or "").split(" › ")
            listed += any(_LIST_ITEM.match(label) for label in labels)
            cut += any(label and is_cut(label, doc.text) for label in labels)
            no_article += bool(want and _ARTICLE.match(want.split(" › ")[-1])
                               and want.split(" › ")[-1] not in labels)
    if dump:
        dump.close()
    print(f"{laws} of {len(files)} files written as articles, {total} chunks: "
          f"{bad} with a section other than the law's outline "
          f"({bad / max(total, 1):.1%})")
    print(f"  a list item as a section: {listed}; a label cut short: {cut}; their article missing: {no_article}")


if __name__ == "__main__":
    main()
