"""Turning HTML, Word and PDF files into a document's text.

Owns: which suffix goes to which extractor, and the text those extractors build. Each
extractor lives in its own module, imported only when a file of its kind is read (their
libraries cost hundreds of milliseconds to import and are never needed to answer).
The extracted text is what the document's character offsets refer to: one line per
paragraph, heading, table row or PDF text line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

from ..records import Span

EXTRACTORS = {".html": "webpage", ".htm": "webpage", ".docx": "word", ".pdf": "pdf"}


class NotExtractable(Exception):
    """The file is of a known kind but yields no text; the message says why."""


@dataclass
class Extracted:
    headings: list[tuple[Span, int]] = field(default_factory=list)
    pages: list[Span] = field(default_factory=list)
    hints: dict[str, str] = field(default_factory=dict)  # title/date/issuer the format itself states
    length: int = 0  # of the text so far
    # Pieces joined once at the end: growing one string block by block copies it each time.
    _parts: list[str] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def add(self, line: str, heading: int | None = None) -> None:
        """Append one block on a line of its own (its inner line breaks kept, blank lines
        and surrounding spaces dropped); a heading's span is recorded with its level."""
        line = "\n".join(part.strip() for part in line.splitlines() if part.strip())
        if not line:
            return
        if self.length:
            self._parts.append("\n")
            self.length += 1
        start = self.length
        self._parts.append(line)
        self.length += len(line)
        if heading:
            self.headings.append((Span(start, self.length), heading))


def extract(suffix: str, raw: bytes) -> Extracted:
    """Raises NotExtractable (or the format library's own errors, which the loader reports)."""
    module = import_module(f".{EXTRACTORS[suffix]}", __name__)
    result = module.extract(raw)
    if not result.text.strip():
        raise NotExtractable("no text found")
    return result
