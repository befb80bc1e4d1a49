"""The small records that flow between the pipeline steps.

load -> Document -> chunk -> Chunk -> store -> ChunkRow -> search -> Hit -> answer -> Answer -> render
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, fields


@dataclass(frozen=True)
class Span:
    """A half-open character range [start, end) of a document's loaded text."""

    start: int
    end: int


@dataclass(frozen=True)
class Meta:
    """What a document says about itself: issuing authority (发文机关), document number
    (文号), publication or effective date (YYYY-MM-DD). Each is None when not found."""

    title: str
    issuer: str | None = None
    doc_number: str | None = None
    date: str | None = None

    def as_dict(self) -> dict:
        return {"title": self.title, "issuer": self.issuer, "doc_number": self.doc_number, "date": self.date}


@dataclass
class Document:
    """One corpus file, decoded or extracted. `text` is what offsets refer to: the decoded
    file for text formats, the extracted text for HTML, Word and PDF. `keep` lists the
    ranges of it that are content (page noise is left out, never rewritten)."""

    path: str  # relative to the corpus directory, with forward slashes
    text: str
    title: str
    encoding: str  # the text encoding, or the format for extracted documents ("pdf", ...)
    content_hash: str  # sha256 of the raw file bytes
    keep: list[Span] = field(default_factory=list)
    headings: list[tuple[Span, int]] = field(default_factory=list)  # (span, level) the format marks as headings
    pages: list[Span] = field(default_factory=list)  # page i + 1 of a PDF is pages[i]
    hints: dict[str, str] = field(default_factory=dict)  # metadata the format states (title, date, issuer)
    meta: Meta | None = None


@dataclass(frozen=True)
class Chunk:
    """A searchable passage: exactly `doc_text[start:end]`."""

    doc: str
    ordinal: int
    start: int
    end: int
    text: str
    section: str | None
    page: int | None = None  # 1-based PDF page where the chunk starts


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk as readers see it: where it lies in its document, and what the
    document says about itself."""

    chunk_id: int
    doc: str
    title: str
    section: str | None
    start: int
    end: int
    text: str
    _: KW_ONLY
    page: int | None = None  # 1-based PDF page where the chunk starts
    meta: Meta | None = None


@dataclass(frozen=True)
class Hit(ChunkRow):
    """A chunk found for a query, with the scores that ranked it."""

    score: float
    scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, row: ChunkRow, score: float, scores: dict[str, float]) -> Hit:
        return cls(**{f.name: getattr(row, f.name) for f in fields(ChunkRow)}, score=score, scores=scores)


@dataclass(frozen=True)
class AnswerSentence:
    text: str
    citation: int  # 1-based position of the supporting passage in Answer.hits
    # Document offsets of the sentence: within its passage, or running past the passage's
    # edge into the document's next passage when the sentence (or its list) goes on there.
    start: int
    end: int


@dataclass
class Answer:
    question: str
    found: bool
    sentences: list[AnswerSentence]
    hits: list[Hit]
    searched: str | None = None  # the query actually searched, when it differs
    timings_ms: dict[str, float] = field(default_factory=dict)
