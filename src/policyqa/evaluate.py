"""Measuring retrieval and answers against questions with known answers (`policyqa eval`).

Owns: reading question files (one JSON object a line: `question`, `lang`, `doc` relative
to the corpus, optional `answer` text and `answer_start`/`answer_end`; a row without
`doc` is a question the corpus does not answer) and the metrics (render.py draws them).

Metrics, over the top-k passages of each question: doc hit@1 / hit@5 (a passage from the
gold document ranks first / in the top 5), MRR@k (reciprocal rank of the first passage
from the gold document), span hit@5 (a top-5 passage from the gold document covers at
least half of the answer span, or all of it when the answer is shorter than 40
characters; only questions with a span count), and latency (search and answer).

Answer metrics, over what `ask` answers: found (the share of answerable questions
answered at all), answer_hit (the answer sentences contain the gold answer text, both
normalised as search.normalized), passage_answer@5 (the top-5 passages contain it: what
answer_hit could reach) and answer_overlap (the share of the gold span's characters that
the answer sentences cover, by document offsets) and answer_chars (how long the answers
given are: containment alone would favour long ones). For unanswerable rows: the share
wrongly answered.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .answer import ask
from .errors import InputError
from .records import Answer, Hit
from .search import Searcher, normalized
from .terms import has_han

SHORT_ANSWER = 40
MAX_FILE_BYTES = 64 * 1024 * 1024  # NCPQA's dev set of 400 questions is under 1 MB


class QuestionFileError(InputError):
    """A question file that cannot be read as given."""


@dataclass(frozen=True)
class Question:
    question: str
    lang: str
    doc: str | None  # None: the corpus does not answer it
    answer_start: int | None = None
    answer_end: int | None = None
    answer: str | None = None  # the gold answer's text


@dataclass
class Outcome:
    question: Question
    rank: int | None  # 1-based rank of the first gold-document passage, None if absent
    span_hit: bool | None  # None when the question has no answer span
    latency_ms: float
    top: Hit | None
    found: bool = False
    answer_hit: bool | None = None  # None: no gold answer text
    passage_answer: bool | None = None
    answer_overlap: float | None = None  # None: no gold span
    answer_chars: int = 0  # how much text the answer sentences are


@dataclass
class Report:
    k: int
    outcomes: list[Outcome] = field(default_factory=list)

    def metrics(self, lang: str | None = None) -> dict:
        """The metrics of the answerable questions (in `lang`)."""
        out = [o for o in self.outcomes if o.question.doc is not None and (lang is None or o.question.lang == lang)]
        if not out:
            return {"n": 0}
        ranks = [o.rank for o in out]
        latency = np.array([o.latency_ms for o in out])
        return {
            "n": len(out),
            "doc_hit@1": _mean(r == 1 for r in ranks),
            "doc_hit@5": _mean(r is not None and r <= 5 for r in ranks),
            "span_hit@5": _mean_known(o.span_hit for o in out),
            f"mrr@{self.k}": _mean(1.0 / r if r else 0.0 for r in ranks),
            "latency_ms": {"mean": round(float(latency.mean()), 1), "p95": round(float(np.percentile(latency, 95)), 1)},
            "found": _mean(o.found for o in out),
            "passage_answer@5": _mean_known(o.passage_answer for o in out),
            "answer_hit": _mean_known(o.answer_hit for o in out),
            "answer_overlap": _mean_known(o.answer_overlap for o in out),
            "answer_chars": _mean_known(o.answer_chars if o.found else None for o in out),
        }

    def unanswerable(self, lang: str | None = None) -> dict:
        """Of the questions the corpus does not answer (in `lang`): how many, and the share answered."""
        out = [o for o in self.outcomes if o.question.doc is None and (lang is None or o.question.lang == lang)]
        return {"n": len(out), "wrongly_answered": _mean(o.found for o in out) if out else None}

    def languages(self) -> list[str]:
        return sorted({o.question.lang for o in self.outcomes})

    def as_json(self) -> dict:
        out = {**self.metrics(), "by_lang": {lang: self.metrics(lang) for lang in self.languages()}}
        if self.unanswerable()["n"]:
            out["unanswerable"] = {**self.unanswerable(),
                                   "by_lang": {lang: self.unanswerable(lang) for lang in self.languages()}}
        return out

    def misses(self, limit: int = 10) -> list[Outcome]:
        """The worst: gold document not in the top k, then found lowest."""
        missed = [o for o in self.outcomes if o.question.doc is not None and (o.rank is None or o.rank > 5)]
        return sorted(missed, key=lambda o: -(o.rank or 10**6))[:limit]


def _mean(values) -> float:
    values = [float(v) for v in values]
    return round(sum(values) / len(values), 4)


def _mean_known(values) -> float | None:
    known = [v for v in values if v is not None]
    return _mean(known) if known else None


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
            q, doc, gold = obj["question"], obj.get("doc"), obj.get("answer")
            if not isinstance(q, str) or not q.strip() or not isinstance(doc, (str, type(None))):
                raise ValueError("`question` must be a non-empty string and `doc` a string")
            if not isinstance(gold, (str, type(None))):
                raise ValueError("`answer` must be a string")
            start, end = obj.get("answer_start"), obj.get("answer_end")
            if (start is None) != (end is None) or (start is not None and not 0 <= int(start) < int(end)):
                raise ValueError("answer_start/answer_end must both be given, with start < end")
            if doc is None and (start is not None or gold):
                raise ValueError("an answer needs the `doc` it is in")
            lang = obj.get("lang") or ("zh" if has_han(q) else "en")
            out.append(Question(q.strip(), str(lang), doc, None if start is None else int(start),
                                None if end is None else int(end), gold or None))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise QuestionFileError(f"{path}:{n}: not a question record ({what})") from None
    if not out:
        raise QuestionFileError(f"{path} has no questions")
    return out


def _span_hit(q: Question, hits: list[Hit]) -> bool | None:
    if q.answer_start is None or q.answer_end is None or q.doc is None:  # both ends or neither (load)
        return None
    length = q.answer_end - q.answer_start
    need = length if length < SHORT_ANSWER else length / 2
    return any(
        h.doc == q.doc and min(h.end, q.answer_end) - max(h.start, q.answer_start) >= need for h in hits[:5]
    )


def answer_hit(gold: str, answer: Answer) -> bool:
    """The answer sentences, read in order, contain the gold answer."""
    return normalized(gold) in normalized("".join(s.text for s in answer.sentences))


def passage_answer(gold: str, hits: list[Hit]) -> bool:
    """One of the top-5 passages contains the gold answer."""
    return any(normalized(gold) in normalized(h.text) for h in hits[:5])


def answer_overlap(q: Question, answer: Answer) -> float | None:
    """The share of the gold span's characters that answer sentences from its document cover."""
    if q.answer_start is None or q.answer_end is None:
        return None
    covered = np.zeros(q.answer_end - q.answer_start, dtype=bool)
    for s in answer.sentences:
        if answer.hits[s.citation - 1].doc == q.doc:
            covered[max(0, s.start - q.answer_start):max(0, s.end - q.answer_start)] = True
    return round(float(covered.mean()), 4)


def evaluate(searcher: Searcher, questions: list[Question], k: int,
             advance: Callable[[], None] = lambda: None) -> Report:
    report = Report(k=k)
    for q in questions:
        t0 = time.perf_counter()
        answer = ask(searcher, q.question, k)
        latency = (time.perf_counter() - t0) * 1000
        hits = answer.hits
        rank = next((i for i, h in enumerate(hits, start=1) if h.doc == q.doc), None) if q.doc else None
        gold = q.answer
        report.outcomes.append(Outcome(
            q, rank, _span_hit(q, hits), latency, hits[0] if hits else None, answer.found,
            answer_hit(gold, answer) if gold else None, passage_answer(gold, hits) if gold else None,
            answer_overlap(q, answer), sum(len(s.text) for s in answer.sentences)))
        advance()
    return report
