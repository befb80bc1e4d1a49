"""Cutting a cleaned document into passages sized for the embedding model.

Owns: sentence splitting for Chinese policy text, the structural headings that become each
chunk's section, and the packing of sentences into chunks of about
CHUNK_TARGET..CHUNK_MAX characters. A chunk never spans two PDF pages, so it cites one.
Every chunk is an exact slice of the document's loaded text.

Sections follow one of two outlines. A document written as articles (laws, regulations,
办法) is 编 › 章 › 节 › 第X条; its enumerated items （一）/一、/1. are parts of an article,
not sections. Any other document (notices, opinions) is outlined by 一、 / （一） / 一是 /
1. headings. Markdown headings and the headings a Word or web page marks as such count in
both. A section label is a whole heading, a whole heading phrase, or its number alone.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from .clean import line_spans
from .records import Chunk, Document, Span

CHUNK_TARGET = 180  # past this, a paragraph end closes the chunk
CHUNK_MAX = 360  # never longer (e5 reads ~190 tokens per 300 Chinese characters)
SETTINGS = {"chunker": "sentences-v2", "target": CHUNK_TARGET, "max": CHUNK_MAX}

_NUM = "一二三四五六七八九十百零〇"
_ARTICLE = re.compile(rf"^第[{_NUM}\d]+条")


@dataclass(frozen=True)
class _Outline:
    headings: list[tuple[int, re.Pattern]]  # (level, pattern at the start of a line or sentence)
    closing: int  # a heading of this level or above closes the chunk; deeper ones may share it
    # Policy items often run their heading into a long first sentence: its first LABEL_MAX
    # characters say more about the passages under it than the item's number alone.
    shortened_labels: bool


_PARTS = [
    (1, re.compile(rf"^第[{_NUM}\d]+编")),
    (2, re.compile(rf"^第[{_NUM}\d]+章")),
    (3, re.compile(rf"^第[{_NUM}\d]+节")),
]
ARTICLES = _Outline([*_PARTS, (4, _ARTICLE)], closing=3, shortened_labels=False)
POLICY = _Outline(
    [
        (1, re.compile(rf"^第[{_NUM}\d]+[编章]")),
        (2, re.compile(rf"^第[{_NUM}\d]+节")),
        (1, re.compile(rf"^[{_NUM}]+、")),
        (2, re.compile(rf"^[（(][{_NUM}]+[）)]")),
        (3, re.compile(rf"^[{_NUM}]+是")),
        (3, _ARTICLE),
        (3, re.compile(r"^\d{1,2}[.、．](?!\d)")),
    ],
    closing=2,
    shortened_labels=True,
)
_FIRST_ARTICLES = ("第一条", "第二条")
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


def heading_of(sentence: str, whole_line: bool, outline: _Outline) -> tuple[int, str] | None:
    md = _MD_HEADING.match(sentence)
    if md and whole_line:
        text = sentence[md.end():].strip()
        level = _level(text, outline)
        # In a document of articles, 编/章/节 keep their place whatever the Markdown depth.
        if outline is ARTICLES:
            return (level, text) if level else (min(len(md.group(1)), ARTICLES.closing), text)
        return len(md.group(1)), text
    for level, pattern in outline.headings:
        marker = pattern.match(sentence)
        if marker:
            return level, _label(sentence, marker.group(), whole_line and pattern is not _ARTICLE, outline)
    return None


def _level(text: str, outline: _Outline) -> int | None:
    return next((level for level, pattern in outline.headings if pattern.match(text)), None)


def _label(sentence: str, marker: str, whole_line: bool, outline: _Outline) -> str:
    """The heading line, else the phrase the heading opens, else (in a document of
    articles) its number alone: never a phrase cut short. An article's label is its number
    (the rest is the article's text, not a title)."""
    if whole_line and len(sentence) <= LABEL_MAX:
        return sentence
    rest = sentence[len(marker):]
    cut = _LABEL_END.search(sentence, len(marker) + len(rest) - len(rest.lstrip()))
    phrase = sentence[: cut.start()] if cut else sentence
    if _ARTICLE.match(marker) and outline is ARTICLES:
        return marker
    if len(phrase) > LABEL_MAX:
        return phrase[:LABEL_MAX] if outline.shortened_labels else marker
    return phrase


def _is_title_line(text: str) -> bool:
    """Short and not a sentence: a heading line such as "## 第一章 总则"."""
    return len(text) <= LABEL_MAX + 7 and not re.search(r"[。；！？]", text)


def outline_of(doc: Document) -> _Outline:
    """ARTICLES when paragraphs or sentences open with 第一条 and 第二条: a document that
    only quotes articles (第三十一条规定…) has no 第一条 of its own."""
    seen: set[str] = set()
    for line in doc.keep:
        for span in sentences(doc.text, line):
            seen.update(a for a in _FIRST_ARTICLES if doc.text.startswith(a, span.start))
            if len(seen) == len(_FIRST_ARTICLES):
                return ARTICLES
    return POLICY


def _units(doc: Document, outline: _Outline) -> list[_Sentence]:
    units = []
    marked = {span.start: level for span, level in doc.headings}
    for line in doc.keep:
        text = doc.text[line.start:line.end]
        if line.start in marked:
            level = (_level(text, outline) if outline is ARTICLES else None) or marked[line.start]
            line_heading: tuple[int, str] | None = (level, _marked_label(text, outline))
        else:
            line_heading = heading_of(text, True, outline) if _is_title_line(text) else None
        if line_heading:
            units.append(_Sentence(line, paragraph_start=True, heading=line_heading))
            continue
        for i, span in enumerate(sentences(doc.text, line)):
            heading = heading_of(doc.text[span.start:span.end], False, outline)
            units.append(_Sentence(span, paragraph_start=i == 0, heading=heading))
    return units


def _marked_label(text: str, outline: _Outline) -> str:
    """A heading the format marks: whole when it fits, else as _label shortens it, else
    its first LABEL_MAX characters marked as shortened."""
    if len(text) <= LABEL_MAX or outline.shortened_labels:
        return text[:LABEL_MAX]
    marker = next((m.group() for _, p in outline.headings if (m := p.match(text))), "")
    label = _label(text, marker, False, outline) if marker else text
    return label if len(label) <= LABEL_MAX else text[: LABEL_MAX - 1] + "…"


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
    outline = outline_of(doc)

    def close():
        nonlocal current
        if current:
            start, end = current[0].start, current[-1].end
            chunks.append(Chunk(doc.path, len(chunks), start, end, doc.text[start:end], current_section,
                                page_of(start)))
        current = []

    for unit in _units(doc, outline):
        if unit.heading:
            level, label = unit.heading
            size = current[-1].end - current[0].start if current else 0
            # Small items (一是…, 第X条) may share a chunk, but a paragraph of its own
            # starts a new one once the current chunk says something.
            if level <= outline.closing or size >= (CHUNK_TARGET // 3 if unit.paragraph_start else CHUNK_TARGET):
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
