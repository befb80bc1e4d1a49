"""Measuring retrieval against questions with known answers (`policyqa eval`).

Owns: reading question files (one JSON object a line: `question`, `lang`, `doc` relative
to the corpus, optional `answer_start`/`answer_end`) and the metrics (render.py draws
them).

Metrics, over the top-k passages of each question: doc hit@1 / hit@5 (a passage from the
gold document ranks first / in the top 5), MRR@k (reciprocal rank of the first passage
from the gold document), span hit@5 (a top-5 passage from the gold document covers at
least half of the answer span, or all of it when the answer is shorter than 40
characters; only questions with a span count), and search latency.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError
from .records import Hit
from .search import Searcher
from .terms import has_han

SHORT_ANSWER = 40
MAX_FILE_BYTES = 64 * 1024 * 1024  # NCPQA's dev set of 400 questions is under 1 MB


class QuestionFileError(InputError):
    """A question file that cannot be read as given."""


@dataclass(frozen=True)
class Question:
    question: str
    lang: str
    doc: str
    answer_start: int | None = None
    answer_end: int | None = None


@dataclass
class Outcome:
    question: Question
    rank: int | None  # 1-based rank of the first gold-document passage, None if absent
    span_hit: bool | None  # None when the question has no answer span
    latency_ms: float
    top: Hit | None


@dataclass
class Report:
    k: int
    outcomes: list[Outcome] = field(default_factory=list)

    def metrics(self, lang: str | None = None) -> dict:
        out = [o for o in self.outcomes if lang is None or o.question.lang == lang]
        if not out:
            return {"n": 0}
        ranks = [o.rank for o in out]
        spans = [o.span_hit for o in out if o.span_hit is not None]
        latency = np.array([o.latency_ms for o in out])
        return {
            "n": len(out),
            "doc_hit@1": _mean(r == 1 for r in ranks),
            "doc_hit@5": _mean(r is not None and r <= 5 for r in ranks),
            "span_hit@5": _mean(spans) if spans else None,
            f"mrr@{self.k}": _mean(1.0 / r if r else 0.0 for r in ranks),
            "latency_ms": {"mean": round(float(latency.mean()), 1), "p95": round(float(np.percentile(latency, 95)), 1)},
        }

    def as_json(self) -> dict:
        langs = sorted({o.question.lang for o in self.outcomes})
        return {**self.metrics(), "by_lang": {lang: self.metrics(lang) for lang in langs}}

    def misses(self, limit: int = 10) -> list[Outcome]:
        """The worst: gold document not in the top k, then found lowest."""
        missed = [o for o in self.outcomes if o.rank is None or o.rank > 5]
        return sorted(missed, key=lambda o: -(o.rank or 10**6))[:limit]


def _mean(values) -> float:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4)


def read_questions(path: Path) -> list[Question]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # bounded: the path may be /dev/zero or a pipe
        if len(raw) > MAX_FILE_BYTES:
            raise QuestionFileError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB: not a question file")
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(f"cannot read {path}: {exc}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            q, doc = obj["question"], obj["doc"]
            if not isinstance(q, str) or not q.strip() or not isinstance(doc, str):
                raise ValueError("`question` and `doc` must be non-empty strings")
            start, end = obj.get("answer_start"), obj.get("answer_end")
            if (start is None) != (end is None) or (start is not None and not 0 <= int(start) < int(end)):
                raise ValueError("answer_start/answer_end must both be given, with start < end")
            lang = obj.get("lang") or ("zh" if has_han(q) else "en")
            out.append(Question(q.strip(), str(lang), doc, None if start is None else int(start),
                                None if end is None else int(end)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise QuestionFileError(f"{path}:{n}: not a question record ({what})") from None
    if not out:
        raise QuestionFileError(f"{path} has no questions")
    return out


def _span_hit(q: Question, hits: list[Hit]) -> bool | None:
    if q.answer_start is None:
        return None
    length = q.answer_end - q.answer_start
    need = length if length < SHORT_ANSWER else length / 2
    return any(
        h.doc == q.doc and min(h.end, q.answer_end) - max(h.start, q.answer_start) >= need for h in hits[:5]
    )


def evaluate(searcher: Searcher, questions: list[Question], k: int,
             advance: Callable[[], None] = lambda: None) -> Report:
    report = Report(k=k)
    for q in questions:
        t0 = time.perf_counter()
        hits = searcher.search(q.question, k).hits
        latency = (time.perf_counter() - t0) * 1000
        rank = next((i for i, h in enumerate(hits, start=1) if h.doc == q.doc), None)
        report.outcomes.append(Outcome(q, rank, _span_hit(q, hits), latency, hits[0] if hits else None))
        advance()
    return report
