"""Turning ranked passages into an answer.

Owns: the decision whether the passages are relevant enough to answer at all, and the
choice of the sentence(s) in them that answer the question, each cited to its passage.
The answer is extractive: every sentence is a verbatim slice of a cited document.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from .chunk import text_sentences
from .records import Answer, AnswerSentence, Hit
from .search import Filter, Searcher, normalized
from .terms import bigrams, mainly_chinese

# "Relevant enough?": the top passage's dense cosine with the question and the share of the
# question's keyword information (IDF-weighted; search.SearchResult.coverage) it contains
# must satisfy cosine + weight * coverage >= bar and coverage >= min_coverage. Fitted on
# answerable questions (NCPQA dev, seed dev) against unanswerable ones (bench/negatives/),
# keeping every seed question answered; bench/found.py prints how well each rule
# separates them. English questions are embedded with their Chinese translation and their
# cosines are compressed across languages, so English has a rule of its own.
FOUND_ZH = (0.2, 0.905, 0.0)  # (weight, bar, min_coverage)
FOUND_OTHER = (0.0, 0.83, 0.20)
CANDIDATE_PASSAGES = 3
PASSAGE_MARGIN = 0.03  # passages this close to the best one may supply answer sentences
SECOND_SENTENCE_RATIO = 0.7
MIN_SENTENCE_CHARS = 6
# The best passage's sentences get this much on top of their (max-normalised) keyword
# score: with no shared words (a question in another language) it is the only evidence,
# and the best passage's opening sentence answers.
TOP_PASSAGE_BONUS = 0.1
# Two sentences of one passage this few characters apart (punctuation, a space) read as
# one stretch of text: a second sentence from the same passage is shown only then.
ADJACENT_CHARS = 2


def ask(
    searcher: Searcher, question: str, k: int, searched: str | None = None, where: Filter | None = None
) -> Answer:
    """Search (among the documents `where` admits), then compose: the whole
    question-to-answer step."""
    query = searched or question
    found = searcher.search(query, k, where=where)
    t0 = time.perf_counter()
    # Answer sentences are matched with the words typed: in a follow-up they are what is
    # new, the searched topic would pick the previous answer again. An English question
    # shares no words with Chinese sentences; its translation does.
    plan = found.plan if query == question else searcher.plan(question)
    keywords = " ".join(plan.terms) if plan.translated and plan.terms else None
    result = compose(question, found.hits, searched, keywords, found.coverage)
    timings = {**found.timings_ms, "answer_ms": (time.perf_counter() - t0) * 1000}
    result.timings_ms = {k: round(v, 1) for k, v in timings.items()}
    return result


def is_found(question: str, top: Hit, coverage: Callable[[Hit], float | None] | None) -> bool:
    """Whether the top passage is relevant enough to answer from (the rule above)."""
    weight, bar, min_coverage = FOUND_ZH if mainly_chinese(question) else FOUND_OTHER
    cov = coverage(top) if coverage else None
    cov = min_coverage if cov is None else cov  # None: no keyword index to ask
    return cosine(top) + weight * cov >= bar and cov >= min_coverage


def cosine(hit: Hit) -> float:
    """The passage's dense similarity with the question (the fused score is relative)."""
    return hit.scores.get("dense", hit.score)


def compose(question: str, hits: list[Hit], searched: str | None = None, keywords: str | None = None,
            coverage: Callable[[Hit], float | None] | None = None) -> Answer:
    """`keywords`: what answering sentences are matched with, when not the question itself;
    `coverage`: a passage's share of the question's keywords (None: not known)."""
    found = bool(hits) and is_found(searched or question, hits[0], coverage)
    # Words are matched against what was typed (or its translation): in a follow-up
    # ("那贷款呢？") they are what is new, while the searched query's topic words would
    # pick the previous answer again.
    sentences = _pick_sentences(keywords or question, hits) if found else []
    return Answer(question=question, found=found, sentences=sentences, hits=hits, searched=searched)


def _candidates(hits: list[Hit]) -> list[tuple[int, int, int, str]]:
    """(citation, start, end, text) for each sentence of the passages near the top."""
    out = []
    best = cosine(hits[0])
    for n, hit in enumerate(hits[:CANDIDATE_PASSAGES], start=1):
        if cosine(hit) < best - PASSAGE_MARGIN:
            break
        for span in text_sentences(hit.text):
            text = hit.text[span.start:span.end]
            if len(normalized(text)) >= MIN_SENTENCE_CHARS:
                out.append((n, hit.start + span.start, hit.start + span.end, text))
    return out


def _pick_sentences(question: str, hits: list[Hit]) -> list[AnswerSentence]:
    cands = _candidates(hits)
    if not cands:
        return []
    q = set(bigrams(question))
    sets = [set(bigrams(c[3])) for c in cands]
    df: dict[str, int] = {}
    for s in sets:
        for t in s:
            df[t] = df.get(t, 0) + 1
    idf = {t: math.log(1 + len(sets) / df.get(t, 1)) for t in q}
    lexical = np.array([sum(idf[t] for t in q & s) for s in sets])
    scores = lexical / max(lexical.max(), 1e-9) + np.array([TOP_PASSAGE_BONUS * (c[0] == 1) for c in cands])
    order = np.argsort(-scores, kind="stable")
    first = cands[order[0]]
    picked = [first]
    for i in order[1:]:
        if scores[i] < SECOND_SENTENCE_RATIO * scores[order[0]]:
            break
        if cands[i][0] != first[0] or abs(cands[i][1] - first[2]) <= ADJACENT_CHARS:
            picked.append(cands[i])
            break
    picked.sort(key=lambda c: (c[0], c[1]))
    return [AnswerSentence(text=t, citation=n, start=s, end=e) for n, s, e, t in picked]
