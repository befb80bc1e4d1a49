"""Turning ranked passages into an answer.

Owns: the decision whether the passages are relevant enough to answer at all, and the
choice of the sentences in them that answer the question, each cited to its passage.
The answer is extractive and whole: every sentence is a verbatim slice of a cited
document and a complete sentence of it (clauses joined by ；, lines wrapped inside a
sentence, and a passage's cut edges completed from the document's neighbouring
passages); a heading is never the answer on its own, and a sentence that introduces a
list (…：, 如下, 包括) comes with its items.

Which sentence answers: the question's keywords it contains (IDF-weighted bigrams; for an
English question its translation's weighted Chinese terms), whether it states what the
question asks for (an amount, a date, a count, a body), and the rank of its passage (for
an English question also graded by the passage's score, and the sentence opening its
passage). Sentence embeddings at ask time were measured and left out: on NCPQA dev they
picked no better than the keywords for English questions, at a cost per sentence that a
cold `ask` cannot afford.
bench/answers.py prints how often the answer holds the gold answer.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .chunk import POLICY, heading_of, text_sentences
from .lexical import LexicalIndex
from .records import Answer, AnswerSentence, Hit
from .search import Filter, Searcher, normalized
from .store import ChunkRow
from .terms import bigrams, mainly_chinese

# "Relevant enough?": the top passage's dense cosine with the question and the share of the
# question's keyword information (IDF-weighted; search.SearchResult.coverage) it contains
# must satisfy cosine + weight * coverage >= bar. Fitted on answerable questions (NCPQA
# dev, seed dev) against unanswerable ones (bench/negatives/: off-topic and near-miss),
# keeping every seed question answered; bench/answers.py and bench/found.py print how well
# the rules separate them. The bar rose when the question's own words (是什么, 政策) stopped
# counting as words the corpus lacks: coverage is higher for every question.
FOUND_ZH = (0.2, 0.915)  # (weight, bar)
# English questions are embedded with their Chinese translation and their cosines are
# compressed across languages and differ between corpora (a one-document corpus scores
# every question alike), so their rule leans on what is relative: the coverage, and how far
# the top passage's cosine stands out from the next ones' (STANDOUT_OF passages in all).
# cosine >= floor and coverage + weight * standout >= bar.
# Refitted when a word's translations came to include its base form's ("services" ->
# 服务, not only 劳务): coverage counts more, the standout less.
FOUND_OTHER = (0.83, 2.0, 0.22)  # (floor, weight, bar)
STANDOUT_OF = 5
# And for a Chinese question, at least this share of its words (asked_words) must be in
# the answer sentences or their documents' titles: a passage on the topic that does not
# say what is asked about (a car-purchase subsidy asked of an S&T reform plan) answers
# nothing. With it the first bar came down from 0.905 answering fewer near misses; lower
# bars answer more of them than they gain answerable questions (bench/answers.py).
ANSWER_WORDS = 0.5
CANDIDATE_PASSAGES = 3
PASSAGE_MARGIN = 0.03  # passages this close to the best one may supply answer sentences
REACH_CHARS = 800  # how far into neighbouring passages a sentence or a list may run
SENTENCE_MAX = 400  # clauses and wrapped lines are joined into one sentence up to this length
HEADING_CHARS = 30  # a line or paragraph this short without punctuation is a heading
LIST_MAX_CHARS = 1200  # a list's items are brought up to this much text
MIN_SENTENCE_CHARS = 6
# The best passage's sentences get this much on top of their (max-normalised) keyword
# score: with no shared words (a question in another language) it is the only evidence,
# and the best passage's opening sentence answers.
TOP_PASSAGE_BONUS = 0.1
CUE_BONUS = 0.3  # a sentence stating what the question asks for (an amount, a date, ...)
SECOND_SENTENCE_RATIO = 0.7
# A translated (English) question: its keyword evidence is weaker (bench/answers.py), so its
# passages' rank and a sentence's opening place in its passage count too, and a second
# answering sentence from another passage comes with the first more readily.
PASSAGE_WEIGHT = 0.2
LEAD_BONUS = 0.1
SECOND_RATIO_TRANSLATED = 0.5
# An answer often spans a few sentences of one paragraph: the sentences after the answer
# that continue its paragraph come with it, up to this much text in all.
PARAGRAPH_CHARS = 250
# A sentence whose bigrams are mostly the question's restates it (often a heading-like
# topic sentence): the sentence after it is what it announces.
RESTATES = 0.5

_CLOSE = "”’」』\"'）)"
_END = re.compile(f"[。！？!?…][{_CLOSE}]*$")  # ends a sentence
_CLAUSE = re.compile(f"[；;][{_CLOSE}]*$")  # ends a clause: the sentence goes on
_INTRO = re.compile(f"(?:[：:]|如下[。.]?|包括[。.]?)[{_CLOSE}]*$")
_PUNCT = re.compile(r"[。！？!?…；;：:，,、]")
_STOPS = re.compile(r"[。！？!?…；;：:，,]")  # what a heading does not contain
_ORDINAL = r"第[一二三四五六七八九十百零〇\d]+"
_ARTICLE_NUMBER = re.compile(f"^{_ORDINAL}条$")
_ARTICLE = re.compile(f"^(?:#|{_ORDINAL}[条章节编])")  # a new article or chapter ends a list
_BULLET = re.compile(r"^[•·●○■◆▪\-*]")
# (what the question asks for, what a sentence stating it contains)
_AMOUNT = re.compile(r"\d[\d,.]*\s*(?:[万亿千百]+)?元|\d+(?:\.\d+)?\s*[%％]|百分之|"
                     r"[一二三四五六七八九十百千万两]+[万亿]?元|\d+\s*[万亿]")
_DATE = re.compile(r"\d{4}\s*年|\d{1,2}\s*月\s*\d{1,2}\s*日|\d+\s*(?:个)?(?:工作日|日|天|月|年)|"
                   r"[一二三四五六七八九十两]+(?:个)?(?:工作日|天|月|年)")
_COUNT = re.compile(r"\d+|[一二三四五六七八九十两百千]+(?:个|家|项|条|名|人|类|种|批|次|大)")
_BODY = re.compile(r"部|局|委员会|委|厅|办公室|办|政府|中心|银行|机构|协会|公司|集团|医院|学校")
# What a sum is paid as: "多少补贴" and "奖励多少" ask for an amount, not a count.
_MONEY = r"(?:钱|元|万元|亿元|资金|补贴|补助|奖励|奖补|奖金|经费|费用|贷款|税款)"
CUES = [
    (re.compile(f"多少{_MONEY}|{_MONEY}(?:是|有|为)?多少|金额|额度|多大|规模|比例|幅度|标准是|上限|最高|"
                r"how much|amount|how large|how big|\brate\b|percentage|ratio|limit|maximum|minimum|size", re.I),
     _AMOUNT),
    (re.compile(r"何时|什么时候|哪一?年|哪天|哪一天|日期|期限|截止|多久|多长时间|起止|"
                r"\bwhen\b|what date|deadline|how long|until|which year|what year|period", re.I), _DATE),
    (re.compile(r"几|多少|how many|number of", re.I), _COUNT),
    (re.compile(r"哪个部门|哪些部门|哪个单位|哪些单位|哪家|谁|哪个机构|什么机构|什么部门|由哪|负责|主管|印发|发布|"
                r"\bwho\b|which (?:department|agency|body|authority|organi[sz]ation|ministry)|issued", re.I), _BODY),
]


@dataclass(frozen=True)
class Stretch:
    """Document text around a passage: text[i] is the document's character start + i,
    except inside `gaps` (text offsets between stored passages, where the document's own
    characters are not known here and line breaks stand in)."""

    start: int
    text: str
    gaps: tuple[tuple[int, int], ...] = ()


def stretch_of(hit: Hit, passages: list[ChunkRow]) -> Stretch:
    """`hit` with up to REACH_CHARS of its document's passages on each side (`passages`:
    all of the document's, in order); the passage alone when it is not among them."""
    at = next((i for i, p in enumerate(passages) if p.chunk_id == hit.chunk_id), None)
    if at is None:
        return Stretch(hit.start, hit.text)
    lo = hi = at
    while lo > 0 and hit.start - passages[lo - 1].start <= REACH_CHARS:
        lo -= 1
    while hi + 1 < len(passages) and passages[hi + 1].end - hit.end <= REACH_CHARS:
        hi += 1
    start = pos = passages[lo].start
    parts, gaps = [], []
    for p in passages[lo:hi + 1]:
        if p.start > pos:
            parts.append("\n" * (p.start - pos))
            gaps.append((pos - start, p.start - start))
        parts.append(p.text)
        pos = p.end
    return Stretch(start, "".join(parts), tuple(gaps))


@dataclass(frozen=True)
class Sentence:
    """A whole sentence of a stretch: text offsets [start, end)."""

    start: int
    end: int
    heading: bool  # a heading line or paragraph, not a sentence that says something
    intro: bool  # introduces a list: its items follow


def whole_sentences(text: str) -> list[Sentence]:
    """The stretch's sentences: chunk.text_sentences' pieces joined where one sentence
    goes on (after ；, or across a wrapped line)."""
    spans: list[list[int]] = []
    for span in text_sentences(text):
        if spans and _continues(text, spans[-1], span.start, span.end):
            spans[-1][1] = span.end
        else:
            spans.append([span.start, span.end])
    return [Sentence(s, e, _is_heading(text[s:e]), bool(_INTRO.search(text[s:e]))) for s, e in spans]


def _continues(text: str, prev: list[int], start: int, end: int) -> bool:
    before, between = text[prev[0]:prev[1]], text[prev[1]:start]
    if end - prev[0] > SENTENCE_MAX or _END.search(before) or _INTRO.search(before):
        return False
    if not between:  # cut at punctuation: only a clause's ； lets the sentence go on
        return bool(_CLAUSE.search(before))
    if _ARTICLE_NUMBER.match(before):  # "第五条 市人民政府……" is one sentence
        return "\n" not in between
    # White space (a single line break, spaces) after a sentence that has not ended is a
    # wrapped line or a gap in the layout; a blank line separates paragraphs, and a
    # heading or a numbered item starts afresh.
    return ("\n\n" not in between.replace(" ", "") and not _PUNCT.search(before[-1]) and not _is_heading(before)
            and heading_of(text[start:end], False, POLICY) is None)


def _is_heading(sentence: str) -> bool:
    return sentence.startswith("#") or (len(sentence) <= HEADING_CHARS and not _STOPS.search(sentence))


def _enumerated(sentence: str) -> bool:
    return heading_of(sentence, False, POLICY) is not None or bool(_BULLET.match(sentence))


def list_items(text: str, sentences: list[Sentence], i: int) -> list[int]:
    """The indexes of the items of the list that sentence i introduces: what follows it,
    up to a new article or chapter, or past an item that ends its sentence when the next
    is not numbered."""
    out: list[int] = []
    size = 0
    for j in range(i + 1, len(sentences)):
        t = text[sentences[j].start:sentences[j].end]
        if _ARTICLE.match(t) or (out and size + len(t) > LIST_MAX_CHARS):
            break
        if out and _END.search(text[sentences[out[-1]].start:sentences[out[-1]].end]) and not _enumerated(t):
            break
        out.append(j)
        size += len(t)
    return out


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
    keywords = dict(plan.terms) if plan.translated and plan.terms else None
    documents: dict[str, list[ChunkRow]] = {}

    def around(hit: Hit) -> Stretch:
        if hit.doc not in documents:
            documents[hit.doc] = searcher.store.chunks_of(hit.doc)
        return stretch_of(hit, documents[hit.doc])

    judged = searched or question
    asked = asked_words(found.keywords, judged) if found.keywords is not None and mainly_chinese(judged) else None
    result = compose(question, found.hits, searched, keywords, found.coverage, around, asked)
    timings = {**found.timings_ms, "answer_ms": (time.perf_counter() - t0) * 1000}
    result.timings_ms = {k: round(v, 1) for k, v in timings.items()}
    return result


def is_found(question: str, hits: list[Hit], coverage: Callable[[Hit], float | None] | None) -> bool:
    """Whether the top passage is relevant enough to answer from (the rules above)."""
    top = hits[0]
    cov = coverage(top) if coverage else None
    if mainly_chinese(question):
        weight, bar = FOUND_ZH
        return cosine(top) + weight * (0.0 if cov is None else cov) >= bar
    floor, weight, bar = FOUND_OTHER
    if cov is None:  # no keyword index to ask: the cosine alone
        return cosine(top) >= floor
    return cosine(top) >= floor and cov + weight * standout(hits) >= bar


def standout(hits: list[Hit]) -> float:
    """How far the top passage's cosine stands above the mean of the next ones' (of the
    first STANDOUT_OF); 0 with nothing to compare."""
    rest = [cosine(h) for h in hits[1:STANDOUT_OF]]
    return cosine(hits[0]) - sum(rest) / len(rest) if rest else 0.0


def asked_words(keywords: LexicalIndex, question: str) -> list[str]:
    """The corpus words of two or more characters that the question contains, those
    inside a longer one left out (科技企业, not also 科技 and 企业): what it asks about,
    found without loading a word segmenter."""
    found = [t for t in keywords.words.contained(question)[0] if len(t) > 1]
    return list(dict.fromkeys(t for t in found if not any(t != u and t in u for u in found)))


def answer_words(asked: list[str], hits: list[Hit], sentences: list[AnswerSentence]) -> float:
    """The share of `asked` that the answer sentences, or their documents' titles, contain."""
    if not asked:
        return 1.0
    text = normalized("".join(hits[s.citation - 1].title + s.text for s in sentences)).lower()
    return sum(w in text for w in asked) / len(asked)


def cosine(hit: Hit) -> float:
    """The passage's dense similarity with the question (the fused score is relative)."""
    return hit.scores.get("dense", hit.score)


def compose(question: str, hits: list[Hit], searched: str | None = None, keywords: str | dict[str, float] | None = None,
            coverage: Callable[[Hit], float | None] | None = None,
            around: Callable[[Hit], Stretch] | None = None, asked: list[str] | None = None) -> Answer:
    """`keywords`: what answering sentences are matched with, when not the question itself
    (a dict: the weighted Chinese terms of a translated question);
    `coverage`: a passage's share of the question's keywords (None: not known); `around`:
    the document text around a passage (None: the passage alone); `asked`: a Chinese
    question's words that the answer must mostly contain (None: neither that test nor the
    test that an amount, date or count asked for is stated)."""
    found = bool(hits) and is_found(searched or question, hits, coverage)
    # Words are matched against what was typed (or its translation): in a follow-up
    # ("那贷款呢？") they are what is new, while the searched query's topic words would
    # pick the previous answer again.
    sentences = _pick(question, keywords or question, hits, around) if found else []
    if sentences and asked is not None and answer_words(asked, hits, sentences) < ANSWER_WORDS:
        sentences = []  # the topic is here, what is asked about is not
    # And a Chinese question that asks how much, when or how many is not answered by
    # sentences that state no amount, date or count. (An English question's sentences are
    # chosen on weaker evidence: on NCPQA dev the test refused English questions whose
    # answers had been right.)
    quantities = [p for p in _cues(question) if p is not _BODY] if asked is not None else []
    if sentences and quantities and not any(p.search(s.text) for s in sentences for p in quantities):
        sentences = []
    found = found and bool(sentences)
    return Answer(question=question, found=found, sentences=sentences, hits=hits, searched=searched)


@dataclass(frozen=True)
class _Candidate:
    citation: int
    doc: str
    stretch: Stretch
    sentences: list[Sentence]  # the stretch's
    index: int  # of this sentence among them
    passage_end: int  # stretch offset where the cited passage ends

    @property
    def text(self) -> str:
        s = self.sentences[self.index]
        return self.stretch.text[s.start:s.end]


def _candidates(hits: list[Hit], around: Callable[[Hit], Stretch] | None) -> list[_Candidate]:
    """Each sentence that overlaps a passage near the top, once."""
    out, seen = [], set()
    best = cosine(hits[0])
    for n, hit in enumerate(hits[:CANDIDATE_PASSAGES], start=1):
        if cosine(hit) < best - PASSAGE_MARGIN:
            break
        st = around(hit) if around else Stretch(hit.start, hit.text)
        sentences = whole_sentences(st.text)
        lo, hi = hit.start - st.start, hit.end - st.start
        for i, s in enumerate(sentences):
            key = (hit.doc, st.start + s.start)
            if s.end <= lo or s.start >= hi or s.heading or key in seen:
                continue
            seen.add(key)
            if len(normalized(st.text[s.start:s.end])) >= MIN_SENTENCE_CHARS:
                out.append(_Candidate(n, hit.doc, st, sentences, i, hi))
    return out


def _cues(question: str) -> list[re.Pattern]:
    """What the question asks for, as patterns that a sentence stating it matches (an
    amount asked for is not answered by any number: "有多少补贴" is not a count)."""
    out = [states for asks, states in CUES if asks.search(question)]
    return [p for p in out if p is not _COUNT] if _AMOUNT in out else out


def _pick(question: str, keywords: str | dict[str, float], hits: list[Hit],
          around: Callable[[Hit], Stretch] | None) -> list[AnswerSentence]:
    cands = _candidates(hits, around)
    if not cands:
        return []
    translated = isinstance(keywords, dict)
    # The bigrams shared with the question also say whether a sentence restates it (_leads).
    q = set(bigrams(" ".join(keywords) if isinstance(keywords, dict) else keywords))
    sets = [set(bigrams(c.text)) for c in cands]
    if isinstance(keywords, dict):
        lexical = _weighted_terms(keywords, [normalized(c.text) for c in cands])
    else:
        df: dict[str, int] = {}
        for s in sets:
            for t in s:
                df[t] = df.get(t, 0) + 1
        idf = {t: math.log(1 + len(sets) / df.get(t, 1)) for t in q}
        lexical = np.array([sum(idf[t] for t in q & s) for s in sets])
    cues = _cues(question)
    scores = (lexical / max(lexical.max(), 1e-9)
              + np.array([TOP_PASSAGE_BONUS * (c.citation == 1) for c in cands])
              + np.array([CUE_BONUS * any(p.search(c.text) for p in cues) for c in cands]))
    if translated:
        scores += _translated_evidence(hits, cands)
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    extents = {}
    for i in order:
        extents[i] = _extent(cands[i], q & sets[i], sets[i])
        if extents[i]:
            break
    first = order[len(extents) - 1]
    if not extents[first]:
        return []
    c0 = cands[first]
    picked = [(c0, extents[first])]
    for i in order[len(extents):]:
        if scores[i] < (SECOND_RATIO_TRANSLATED if translated else SECOND_SENTENCE_RATIO) * scores[first]:
            break
        c = cands[i]
        indexes = _extent(c, q & sets[i], sets[i])
        if not indexes:
            continue
        # Another passage (not repeating the answer), or the sentence just before or
        # after the answer in its text.
        if (c.stretch != c0.stretch and not _overlap(c, indexes, c0, extents[first])
                and normalized(c.text) not in normalized(_text(c0, extents[first]))) or \
                min(indexes) == max(extents[first]) + 1 or max(indexes) == min(extents[first]) - 1:
            picked.append((c, indexes))
            break
    out = [a for c, indexes in picked for a in _pieces(c, indexes)]
    return sorted(out, key=lambda a: (a.citation, a.start))


def _weighted_terms(terms: dict[str, float], texts: list[str]) -> np.ndarray:
    """Each text's translated terms, by their weight in the translation and how few of
    the texts contain them: the weights say which sense of an English word the passages
    use, which the bigrams of all the senses joined together lose."""
    out = np.zeros(len(texts))
    for term, weight in terms.items():
        has = np.array([term in t for t in texts])
        if weight > 0 and has.any():
            out += has * weight * math.log(1 + len(texts) / has.sum())
    return out


def _translated_evidence(hits: list[Hit], cands: list[_Candidate]) -> np.ndarray:
    """What else says which sentence answers a translated question, whose keywords are
    a dictionary's guesses: how well its passage ranked (the fused score, scaled over the
    candidates' passages) and whether it opens its passage (a passage found for the
    question most often begins with what it is found for)."""
    fused = np.array([hits[c.citation - 1].score for c in cands])
    spread = fused.max() - fused.min()
    rank = (fused - fused.min()) / spread if spread > 0 else np.zeros(len(cands))
    opens = np.array([c.index == min(d.index for d in cands if d.citation == c.citation) for c in cands])
    return PASSAGE_WEIGHT * rank + LEAD_BONUS * opens


def _extent(c: _Candidate, shared: set[str], own: set[str]) -> list[int]:
    """The sentences shown when candidate c answers: itself, with a list's items or the
    sentence a topic sentence announces; none for a list whose items are not here."""
    s = c.sentences[c.index]
    if s.intro:
        items = list_items(c.stretch.text, c.sentences, c.index)
        return [c.index] + items if items else []
    out = [c.index, c.index + 1] if _leads(c, shared, own) else [c.index]
    out += _goes_on(c, out[-1])
    if len(out) > 1 and c.sentences[out[-1]].intro:  # what came with it introduces a list
        items = list_items(c.stretch.text, c.sentences, out[-1])
        out = out + items if items else out[:-1]
    return out


def _goes_on(c: _Candidate, last: int) -> list[int]:
    """The sentences after `last` that continue its paragraph (no line break, heading or
    numbered item between) and begin in the cited passage, up to PARAGRAPH_CHARS in all:
    only a cut sentence or a list runs on into the next passage."""
    out = []
    size = sum(c.sentences[i].end - c.sentences[i].start for i in range(c.index, last + 1))
    for j in range(last + 1, len(c.sentences)):
        s = c.sentences[j]
        between = c.stretch.text[c.sentences[j - 1].end:s.start]
        t = c.stretch.text[s.start:s.end]
        if s.heading or between.strip(" ") or _enumerated(t) or size + len(t) > PARAGRAPH_CHARS \
                or s.start >= c.passage_end:
            break
        out.append(j)
        size += len(t)
        if s.intro:
            break
    return out


def _text(c: _Candidate, indexes: list[int]) -> str:
    return c.stretch.text[c.sentences[min(indexes)].start:c.sentences[max(indexes)].end]


def _overlap(a: _Candidate, a_indexes: list[int], b: _Candidate, b_indexes: list[int]) -> bool:
    def span(c: _Candidate, indexes: list[int]) -> tuple[int, int]:
        return c.stretch.start + c.sentences[min(indexes)].start, c.stretch.start + c.sentences[max(indexes)].end

    (s1, e1), (s2, e2) = span(a, a_indexes), span(b, b_indexes)
    return a.doc == b.doc and s1 < e2 and s2 < e1


def _leads(c: _Candidate, shared: set[str], own: set[str]) -> bool:
    """Whether the sentence announces rather than says: it restates the question, or is a
    short topic sentence ("强化制度保障，制定……政策体系。"); then the sentence after it in
    its paragraph is what it announces."""
    s = c.sentences[c.index]
    if c.index + 1 >= len(c.sentences) or c.sentences[c.index + 1].heading \
            or c.sentences[c.index + 1].start >= c.passage_end:
        return False
    if "\n\n" in c.stretch.text[s.end:c.sentences[c.index + 1].start]:
        return False
    return len(shared) >= RESTATES * len(own) or s.end - s.start <= HEADING_CHARS


def _pieces(c: _Candidate, indexes: list[int]) -> list[AnswerSentence]:
    """The sentences as exact slices of the document: cut where the stretch is not the
    document's own text (between stored passages)."""
    out = []
    st = c.stretch
    for i in indexes:
        s = c.sentences[i]
        cuts = [s.start]
        for a, b in st.gaps:
            if s.start < a < s.end:
                cuts += [a, b]
        cuts.append(s.end)
        for a, b in zip(cuts[::2], cuts[1::2]):
            piece = st.text[a:b]
            lead = len(piece) - len(piece.lstrip())
            piece = piece.strip()
            if piece:
                out.append(AnswerSentence(text=piece, citation=c.citation, start=st.start + a + lead,
                                          end=st.start + a + lead + len(piece)))
    return out
