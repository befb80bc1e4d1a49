"""A cited passage in its document context (chat's `/open N`).

Owns: where the surrounding text comes from and how much of it is shown. The corpus file
is read when it is still the version that was indexed (same content hash), so the
paragraphs around the passage are exactly what the user's file holds; when it has
changed or is gone, the neighbouring stored chunks stand in, and the caller is told so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backend import IndexStore
from .clean import line_spans
from .load import Unreadable, read_document
from .records import Hit

AROUND_PARAGRAPHS = 1  # paragraphs shown before and after the passage's own
AROUND_CHARS = 200  # at most this much text on each side (scraped files may be one line)
AROUND_CHUNKS = 1  # stored chunks shown on each side when the file cannot be used


@dataclass(frozen=True)
class Context:
    before: str
    passage: str
    after: str
    from_file: bool
    note: str  # where the text comes from, for the reader
    cut_before: bool  # `before` starts inside a paragraph
    cut_after: bool


def passage_context(store: IndexStore, corpus: Path, hit: Hit) -> Context:
    text, problem = _indexed_file_text(store, corpus, hit)
    if text is not None:
        return _from_text(text, hit, f"from {corpus / hit.doc}")
    return _from_chunks(store, hit, f"from the index: {problem}")


def _indexed_file_text(store: IndexStore, corpus: Path, hit: Hit) -> tuple[str | None, str]:
    root = corpus.resolve()
    path = (root / hit.doc).resolve()
    if not path.is_relative_to(root):  # an index entry must not reach outside the corpus
        return None, "the document lies outside the corpus"
    if not path.is_file():
        return None, f"{hit.doc} is not in {corpus} any more"
    try:
        doc = read_document(path, root)
    except Unreadable as exc:
        return None, f"{hit.doc} cannot be read ({exc})"
    if doc.content_hash != store.document_hashes().get(hit.doc) or doc.text[hit.start:hit.end] != hit.text:
        return None, f"{hit.doc} has changed since it was indexed"
    return doc.text, ""


def _from_text(text: str, hit: Hit, note: str) -> Context:
    paragraphs = line_spans(text)
    inside: list[int | None] = [i for i, p in enumerate(paragraphs)
                                if p.end > hit.start and p.start < hit.end] or [None]
    start = paragraphs[max(0, inside[0] - AROUND_PARAGRAPHS)].start if inside[0] is not None else hit.start
    end = (paragraphs[min(len(paragraphs) - 1, inside[-1] + AROUND_PARAGRAPHS)].end
           if inside[-1] is not None else hit.end)
    lo, hi = max(min(start, hit.start), hit.start - AROUND_CHARS), min(max(end, hit.end), hit.end + AROUND_CHARS)
    return Context(
        text[lo:hit.start].rstrip(" \t"), hit.text, text[hit.end:hi].lstrip(" \t"), True, note, lo > start, hi < end
    )


def _from_chunks(store: IndexStore, hit: Hit, note: str) -> Context:
    rows = store.chunks_of(hit.doc)
    at = next((i for i, r in enumerate(rows) if r.chunk_id == hit.chunk_id), None)
    if at is None:  # the document was re-indexed since: only the passage itself is known
        return Context("", hit.text, "", False, note, False, False)
    before = "\n".join(r.text for r in rows[max(0, at - AROUND_CHUNKS):at])
    after = "\n".join(r.text for r in rows[at + 1:at + 1 + AROUND_CHUNKS])
    return Context(before, rows[at].text, after, False, note, False, False)
