"""Cutting a cleaned document into passages sized for the embedding model.

Owns: sentence splitting for Chinese policy text, the structural headings that become each
chunk's section (一、 / （一） / 一是 / 第X条 / Markdown, and the headings a Word or web
page marks as such), and the packing of sentences into chunks of about
CHUNK_TARGET..CHUNK_MAX characters. A chunk never spans two PDF pages, so it cites one.
Every chunk is an exact slice of the document's loaded text.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from .clean import line_spans
from .records import Chunk, Document, Span

CHUNK_TARGET = 180  # past this, a paragraph end closes the chunk
CHUNK_MAX = 360  # never longer (e5 reads ~190 tokens per 300 Chinese characters)
SETTINGS = {"chunker": "sentences-v1", "target": CHUNK_TARGET, "max": CHUNK_MAX}

_NUM = "一二三四五六七八九十百零〇"
# (level, pattern at the start of a line or sentence). Level 1 headings close the chunk.
_HEADINGS = [
    (1, re.compile(rf"^第[{_NUM}\d]+[编章]")),
    (2, re.compile(rf"^第[{_NUM}\d]+节")),
    (1, re.compile(rf"^[{_NUM}]+、")),
    (2, re.compile(rf"^[（(][{_NUM}]+[）)]")),
    (3, re.compile(rf"^[{_NUM}]+是")),
    (3, re.compile(rf"^第[{_NUM}\d]+条")),
    (3, re.compile(r"^\d{1,2}[.、．](?!\d)")),
]
_MD_HEADING = re.compile(r"^(#{1,6})\s+")
_LABEL_END = re.compile(r"[。；：:！？\s]")
LABEL_MAX = 30
# A sentence ends at 。！？；… (plus closing quotes/brackets), or at whitespace next to
# Chinese text: scraped notices often separate paragraphs and headings by spaces only.
_BOUNDARY = re.compile(r"[。！？；!?;…]+[”’」』\"'）)]*|\s+")


@dataclass(frozen=True)
class _Sentence:
    span: Span
    paragraph_start: bool
    heading: tuple[int, str] | None  # (level, label)


def _is_cjk(ch: str) -> bool:
    return ch > "\u2e7f"


def sentences(text: str, line: Span) -> list[Span]:
    """Sentence spans within one line, without surrounding whitespace."""
    out, start = [], line.start
    for m in _BOUNDARY.finditer(text, line.start, line.end):
        if m.group()[0].isspace():
            before = text[m.start() - 1] if m.start() > line.start else ""
            after = text[m.end()] if m.end() < line.end else ""
            if not (_is_cjk(before) or _is_cjk(after)):
                continue
            end, nxt = m.start(), m.end()
        else:
            end = nxt = m.end()
        if end > start:
            out.append(Span(start, end))
        start = nxt
    if line.end > start:
        out.append(Span(start, line.end))
    return out


def text_sentences(text: str) -> list[Span]:
    """Sentence spans of any text, line by line."""
    return [s for line in line_spans(text) for s in sentences(text, line)]


def heading_of(sentence: str, whole_line: bool) -> tuple[int, str] | None:
    md = _MD_HEADING.match(sentence)
    if md and whole_line:
        return len(md.group(1)), sentence[md.end():].strip()
    for level, pattern in _HEADINGS:
        if pattern.match(sentence):
            if whole_line and len(sentence) <= LABEL_MAX:
                return level, sentence
            cut = _LABEL_END.search(sentence)
            label = sentence[: cut.start()] if cut else sentence
            return level, label[:LABEL_MAX]
    return None


def _is_title_line(text: str) -> bool:
    """Short and not a sentence: a heading line such as "## 第一章 总则"."""
    return len(text) <= LABEL_MAX + 7 and not re.search(r"[。；！？]", text)


def _units(doc: Document) -> list[_Sentence]:
    units = []
    marked = {span.start: level for span, level in doc.headings}
    for line in doc.keep:
        text = doc.text[line.start:line.end]
        if line.start in marked:
            line_heading = (marked[line.start], text[:LABEL_MAX])
        else:
            line_heading = heading_of(text, whole_line=True) if _is_title_line(text) else None
        if line_heading:
            units.append(_Sentence(line, paragraph_start=True, heading=line_heading))
            continue
        for i, span in enumerate(sentences(doc.text, line)):
            heading = heading_of(doc.text[span.start:span.end], whole_line=False)
            units.append(_Sentence(span, paragraph_start=i == 0, heading=heading))
    return units


def _split_long(span: Span) -> list[Span]:
    """A sentence longer than CHUNK_MAX, cut into equal parts."""
    n = -(-(span.end - span.start) // CHUNK_MAX)
    step = -(-(span.end - span.start) // n)
    return [Span(s, min(s + step, span.end)) for s in range(span.start, span.end, step)]


def _contiguous(doc: Document, a: Span, b: Span) -> bool:
    """True when nothing dropped as noise lies between a and b."""
    return doc.text[a.end:b.start].strip() == ""


def page_finder(pages: list[Span]):
    """offset -> 1-based page number (None for documents without pages)."""
    starts = [p.start for p in pages]
    return lambda offset: max(1, bisect_right(starts, offset)) if starts else None


def chunk_document(doc: Document) -> list[Chunk]:
    chunks: list[Chunk] = []
    path: dict[int, str] = {}
    current: list[Span] = []
    current_section: str | None = None
    page_of = page_finder(doc.pages)

    def close():
        nonlocal current
        if current:
            start, end = current[0].start, current[-1].end
            chunks.append(Chunk(doc.path, len(chunks), start, end, doc.text[start:end], current_section, page_of(start)))
        current = []

    for unit in _units(doc):
        if unit.heading:
            level, label = unit.heading
            size = current[-1].end - current[0].start if current else 0
            # Small items (一是…, 第X条) may share a chunk, but a paragraph of its own
            # starts a new one once the current chunk says something.
            if level <= 2 or size >= (CHUNK_TARGET // 3 if unit.paragraph_start else CHUNK_TARGET):
                close()
            if label != doc.title:  # a Markdown title repeated in every section is noise
                path = {k: v for k, v in path.items() if k < level}
                path[level] = label
        for span in _split_long(unit.span) if unit.span.end - unit.span.start > CHUNK_MAX else [unit.span]:
            if current:
                size = span.end - current[0].start
                soft_break = unit.paragraph_start and current[-1].end - current[0].start >= CHUNK_TARGET
                new_page = page_of(span.start) != page_of(current[0].start)
                if size > CHUNK_MAX or soft_break or new_page or not _contiguous(doc, current[-1], span):
                    close()
            if not current:
                current_section = " › ".join(path[k] for k in sorted(path)) or None
            current.append(span)
    close()
    return chunks


def search_text(title: str, c: Chunk) -> str:
    """What is embedded for a chunk: its text in context, so that a question naming the
    document's subject or region finds passages that do not repeat it."""
    head = [title]
    if c.section and not c.text.startswith(c.section):
        head.append(c.section)
    return "\n".join(head + [c.text])
