"""The small records that flow between the pipeline steps.

load -> Document -> chunk -> Chunk -> store/search -> Hit -> answer -> Answer -> render
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A half-open character range [start, end) of a document's loaded text."""

    start: int
    end: int


@dataclass
class Document:
    """One corpus file, decoded. `text` is what offsets refer to; `keep` lists the
    ranges of it that are content (page noise is left out, never rewritten)."""

    path: str  # relative to the corpus directory, with forward slashes
    text: str
    title: str
    encoding: str
    content_hash: str  # sha256 of the raw file bytes
    keep: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class Chunk:
    """A searchable passage: exactly `doc_text[start:end]`."""

    doc: str
    ordinal: int
    start: int
    end: int
    text: str
    section: str | None


@dataclass(frozen=True)
class Hit:
    """A chunk found for a query, with the scores that ranked it."""

    chunk_id: int
    doc: str
    title: str
    section: str | None
    start: int
    end: int
    text: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    citation: int  # 1-based position of the supporting passage in Answer.hits
    start: int  # document offsets of the sentence, inside its passage
    end: int


@dataclass
class Answer:
    question: str
    found: bool
    sentences: list[AnswerSentence]
    hits: list[Hit]
    searched: str | None = None  # the query actually searched, when it differs
    timings_ms: dict[str, float] = field(default_factory=dict)
