"""Writing an answer with a language model from the found passages, and checking it.

Owns: the grounded prompt (the passages numbered as they are cited, with title, issuer,
number, date and section; the answer in the question's language, every sentence ending
with its markers), cutting the streamed reply into sentences as they complete, and the
checks each sentence must pass before it counts as supported:

1. its markers [n] name passages that were given to the model;
2. every number in it -- amounts, percentages, years, months, days -- is a number of a
   cited passage, compared by value (2亿元 = 200 million yuan = 20000万元, 百分之十 = 10%);
3. it is written in the question's language (Chinese names in brackets are fine);
4. its meaning is close to a cited passage: the cosine of the embedding model's vectors
   (multilingual, so across languages too) with the passage or one of its sentences
   reaches SUPPORT_BAR (higher for Chinese sentences: same-language cosines run higher),
   calibrated by bench/generate.py --calibrate.

Sentences that fail are kept and marked unverified with the reason, not dropped: they
were already on the screen while streaming, and a reader judges a marked claim better
than a silent gap.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .answer import mainly_chinese
from .chunk import text_sentences
from .config import DEFAULT_MAX_TOKENS, LLMSettings
from .records import Answer, Hit
from .render import meta_fields

GIVEN_PASSAGES = 4  # the top passages the model reads (prompt time grows with each)
HISTORY_TURNS = 2  # chat follow-ups send this many earlier question/answer pairs
# Cosine (e5 "query: " vectors on both sides, the model card's advice for similarity) of
# a sentence with its cited passage or one of the passage's sentences. bench/generate.py
# --calibrate prints the separation of known supported and unsupported sentences.
SUPPORT_BAR = {False: 0.83, True: 0.94}  # by whether the sentence is mainly Chinese

_MARKER = re.compile(r"\s*[\[【]\s*(\d{1,3}(?:\s*[,，、;；]\s*\d{1,3})*)\s*[\]】]")
_MARKER_PREFIX = re.compile(r"^\s*(?:[\[【]\s*[\d\s,，、;；]*)?$")
_END = re.compile(r"[。！？!?]+[”’」』\"')）]*|\.(?=[\s\[【\"'”’)）]|$)(?<!\d\.)[\"'”’)）]*|\n+")
_WORDLIKE = re.compile(r"[\w\u3400-\u9fff]")


class Encoder(Protocol):
    def query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Checked:
    """One written sentence and what the checks found."""

    text: str  # as the model wrote it, markers included
    citations: tuple[int, ...]
    verified: bool
    why: str | None  # the failed checks, None when verified


@dataclass
class Generated:
    text: str
    sentences: list[Checked]
    model: str
    ms: float
    first_token_ms: float | None
    pieces: int  # streamed text pieces (about one token each)
    stopped: bool = False  # the user interrupted the stream

    def as_json(self) -> dict:
        return {
            "text": self.text,
            "sentences": [{"text": s.text, "citations": list(s.citations), "verified": s.verified, "why": s.why}
                          for s in self.sentences],
            "model": self.model,
            "ms": round(self.ms, 1),
        }


@dataclass(frozen=True)
class Turn:
    """An earlier question and the written answer to it (chat follow-ups)."""

    question: str
    answer: str


# ---- prompt ---------------------------------------------------------------------------
def language_of(question: str) -> str:
    return "Chinese" if mainly_chinese(question) else "English"


def passage_block(n: int, hit: Hit) -> str:
    head = " · ".join([hit.title, *meta_fields(hit.meta), *([hit.section] if hit.section else [])])
    return f"[{n}] {head}\n{hit.text.strip()}"


def system_prompt(language: str) -> str:
    return (
        "You answer questions about Chinese policy documents using only the numbered passages the user gives. "
        f"Write the answer in {language}, in 1 to 4 short sentences. End every sentence with the marker of the "
        "passage it rests on, like [1] or [2][3]. Give amounts, percentages, dates and names exactly as the "
        "passages state them; in English, you may keep a Chinese name in brackets after its translation. "
        "If the passages do not answer the question, say so in one sentence."
    )


def messages(question: str, hits: list[Hit], history: Iterable[Turn] = ()) -> list[dict[str, str]]:
    language = language_of(question)
    out = [{"role": "system", "content": system_prompt(language)}]
    for turn in list(history)[-HISTORY_TURNS:]:
        out += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
    passages = "\n\n".join(passage_block(n, h) for n, h in enumerate(hits, start=1))
    # Restated last: small models forget the markers when the rule is only in the system turn.
    rule = f"Answer in {language}; end every sentence with the marker [n] of its passage."
    out.append({"role": "user", "content": f"Passages:\n\n{passages}\n\nQuestion: {question}\n{rule}"})
    return out


# ---- sentences as they stream ---------------------------------------------------------
class SentenceSplitter:
    """Cuts streamed text into sentences. A sentence is complete once text that is not
    one of its trailing markers follows its end ("... fund. [1] The" ends after [1])."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        out: list[str] = []
        while True:
            cut = self._complete_end()
            if cut is None:
                return out
            sentence, self.buffer = self.buffer[:cut], self.buffer[cut:]
            out.append(sentence)

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer, ""
        return [rest] if rest.strip() else []

    def _complete_end(self) -> int | None:
        for end in _END.finditer(self.buffer):
            cut = end.end()
            # A marker opening the next line belongs to that line ("[2] text" lists).
            while "\n" not in end.group() and (marker := _MARKER.match(self.buffer, cut)) is not None:
                if "\n" in marker.group():
                    break
                cut = marker.end()
            tail = self.buffer[cut:]
            if not tail.strip() or _MARKER_PREFIX.match(tail):
                return None  # what follows may still be this sentence's markers
            if _WORDLIKE.search(self.buffer[:end.start()]):
                return cut
        return None


def citations_of(sentence: str) -> tuple[int, ...]:
    seen: list[int] = []
    for m in _MARKER.finditer(sentence):
        for n in re.split(r"[,，、;；]", m.group(1)):
            if int(n) not in seen:
                seen.append(int(n))
    return tuple(seen)


def without_markers(sentence: str) -> str:
    return _MARKER.sub("", sentence).strip()


# ---- numbers --------------------------------------------------------------------------
_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_BIG_UNITS = {"万": 10**4, "亿": 10**8}
_MULTIPLIER_WORDS = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12,
                     "bn": 10**9, "mn": 10**6}
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"], start=1)}
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                                                      "seventy": 70, "eighty": 80, "ninety": 90}
del _WORDS["zero"], _WORDS["one"]  # "one of the ...", "zero-interest": words more often than amounts
_WORD_NUMBER = re.compile(r"\b(" + "|".join(_WORDS) + r")\b((?:\s+(?:hundred|thousand|million|billion))*)",
                          re.IGNORECASE)
_CN_NUM = "零〇一二两三四五六七八九十百千万亿"
_ARABIC = re.compile(
    r"(?<![\d.])(\d+(?:,\d{3})*(?:\.\d+)?)\s*((?:[百千万亿]+)|(?:(?:hundred|thousand|million|billion|trillion|bn|mn)\b\s*)+)?"
    r"\s*(%|％|percent\b|per cent\b)?", re.IGNORECASE)
_CHINESE = re.compile(rf"(百分之)?(?<![\d.])([{_CN_NUM}]*[零〇一二两三四五六七八九十][{_CN_NUM}]*)")
# After these a Chinese numeral is a quantity; elsewhere (一是, 统一, 进一步) it is a word.
_CN_UNIT_AFTER = re.compile(r"[元亿万个项家倍人名次年月日号条款岁%％批类期轮成]")
_MONTH_WORD = re.compile(r"\b(" + "|".join(_MONTHS) + r")\b", re.IGNORECASE)


def chinese_number(text: str) -> float | None:
    """二亿 -> 2e8, 一万五千 -> 15000, 十 -> 10, 二〇一五 -> 2015 (digit by digit)."""
    if not text or any(c not in _CN_NUM for c in text):
        return None
    if all(c in _DIGITS for c in text):
        return float(int("".join(str(_DIGITS[c]) for c in text)))
    for big in ("亿", "万"):
        if big in text:
            left, right = text.split(big, 1)
            high = chinese_number(left) if left else 1.0
            low = chinese_number(right) if right else 0.0
            return None if high is None or low is None else high * _BIG_UNITS[big] + low
    total, digit = 0, None
    for c in text:
        if c in _DIGITS:
            digit = _DIGITS[c]
        else:
            total += (1 if digit is None else digit) * _SMALL_UNITS[c]
            digit = None
    return float(total + (digit or 0))


def _multiplier(unit: str | None) -> float:
    if not unit:
        return 1.0
    value = 1.0
    for word in re.findall(r"[a-z]+", unit.lower()):
        value *= _MULTIPLIER_WORDS[word]
    for c in re.sub(r"[a-zA-Z\s]", "", unit):
        value *= (_SMALL_UNITS | _BIG_UNITS)[c]
    return value


def _key(value: float, percent: bool) -> tuple[str, float]:
    return ("%" if percent else "n", float(f"{value:.6g}"))


def numbers(text: str, strict: bool = True) -> set[tuple[str, float]]:
    """The quantities `text` states, each as (kind, value): "%" for percentages, "n" for
    everything else. `strict` (for written sentences) reads a Chinese numeral only before
    a unit or after 百分之; a passage's numbers are read liberally, and also without
    their multipliers, so that a sentence is never held to less than the passage says."""
    text = without_markers(text)
    found: set[tuple[str, float]] = set()
    for m in _ARABIC.finditer(text):
        base = float(m.group(1).replace(",", ""))
        found.add(_key(base * _multiplier(m.group(2)), bool(m.group(3))))
        if not strict:
            found.add(_key(base, bool(m.group(3))))
    for m in _CHINESE.finditer(text):
        percent, numeral = bool(m.group(1)), m.group(2)
        if strict and not percent and not _CN_UNIT_AFTER.match(text, m.end()):
            if not re.search(r"[万亿]$", numeral) or len(numeral) < 2:
                continue
        value = chinese_number(numeral)
        if value is not None:
            found.add(_key(value, percent))
    for m in _WORD_NUMBER.finditer(text):
        found.add(_key(_WORDS[m.group(1).lower()] * _multiplier(m.group(2)), False))
    for m in _MONTH_WORD.finditer(text):
        word = m.group(1).lower()
        if word != "may" or re.search(r"\d", text[max(0, m.start() - 4):m.end() + 4]):
            found.add(_key(_MONTHS[word], False))
    return found


# ---- the checks -----------------------------------------------------------------------
class Checker:
    """Checks written sentences against the passages that were given (citation n is
    hits[n-1]); passage vectors are computed once, when first cited."""

    def __init__(self, question: str, hits: list[Hit], encoder: Encoder | None):
        self.question = question
        self.hits = hits
        self.encoder = encoder
        self._numbers: dict[int, set[tuple[str, float]]] = {}
        self._vectors: dict[int, np.ndarray] = {}

    def passage_numbers(self, n: int) -> set[tuple[str, float]]:
        if n not in self._numbers:
            hit = self.hits[n - 1]
            self._numbers[n] = numbers(" ".join([hit.text, hit.title, *meta_fields(hit.meta)]), strict=False)
        return self._numbers[n]

    def passage_vectors(self, n: int) -> np.ndarray:
        """The passage's vector and its sentences' vectors, one per row."""
        assert self.encoder is not None, "only check() with an encoder measures similarity"
        if n not in self._vectors:
            text = self.hits[n - 1].text
            pieces = [text] + [text[s.start:s.end] for s in text_sentences(text) if len(text[s.start:s.end]) >= 8]
            self._vectors[n] = np.stack([np.asarray(self.encoder.query(p), dtype=np.float32) for p in pieces])
        return self._vectors[n]

    def similarity(self, sentence: str, cited: Iterable[int]) -> float:
        assert self.encoder is not None, "only check() with an encoder measures similarity"
        v = np.asarray(self.encoder.query(sentence), dtype=np.float32)
        return max(float((self.passage_vectors(n) @ v).max()) for n in cited)

    def check(self, sentence: str) -> Checked:
        text = sentence.strip()
        citations = citations_of(text)
        body = without_markers(text)
        problems: list[str] = []
        given = [n for n in citations if 1 <= n <= len(self.hits)]
        if not citations:
            problems.append("cites no passage")
        elif len(given) < len(citations):
            wrong = ", ".join(f"[{n}]" for n in citations if n not in given)
            problems.append(f"cites {wrong}, but only [1]-[{len(self.hits)}] were given")
        if given:
            have = set().union(*(self.passage_numbers(n) for n in given))
            missing = [v for v in sorted(numbers(body), key=lambda k: k[1]) if v not in have]
            if missing:
                shown = ", ".join(f"{v[1]:,.10g}{'%' if v[0] == '%' else ''}" for v in missing)
                problems.append(f"{shown} not in {''.join(f'[{n}]' for n in given)}")
        if mainly_chinese(self.question) != mainly_chinese(body):
            problems.append(f"not written in {language_of(self.question)}")
        if given and self.encoder is not None:
            cosine, bar = self.similarity(body, given), SUPPORT_BAR[mainly_chinese(body)]
            if cosine < bar:
                problems.append(f"meaning not close to {''.join(f'[{n}]' for n in given)} "
                                f"(similarity {cosine:.2f} < {bar:.2f})")
        return Checked(text, citations, not problems, "; ".join(problems) or None)


# ---- writing --------------------------------------------------------------------------
class Stream(Protocol):
    def __call__(self, messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]: ...


def write(
    stream: Stream, model: str, answer: Answer, encoder: Encoder | None, history: Iterable[Turn] = (),
    on_text: Callable[[str], None] | None = None, on_sentence: Callable[[Checked], None] | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Generated:
    """The written answer to `answer.question` from its top passages, each sentence checked
    as soon as it is complete. `stream` is llm.Client.stream; its LLMError propagates.
    Ctrl-C ends the stream early: what was written so far is checked and kept."""
    hits = answer.hits[:GIVEN_PASSAGES]
    checker = Checker(answer.question, hits, encoder)
    splitter = SentenceSplitter()
    checked: list[Checked] = []
    pieces, first, stopped = 0, None, False
    t0 = time.perf_counter()

    def take(sentences: list[str]) -> None:
        for s in sentences:
            if _WORDLIKE.search(without_markers(s)):
                checked.append(checker.check(s))
                if on_sentence:
                    on_sentence(checked[-1])

    parts: list[str] = []
    try:
        for piece in stream(messages(answer.question, hits, history), max_tokens):
            if first is None:
                first = (time.perf_counter() - t0) * 1000
            pieces += 1
            parts.append(piece)
            if on_text:
                on_text(piece)
            take(splitter.feed(piece))
    except KeyboardInterrupt:
        stopped = True
    take(splitter.flush())
    return Generated("".join(parts).strip(), checked, model, (time.perf_counter() - t0) * 1000, first, pieces, stopped)


def respond(
    settings: LLMSettings, answer: Answer, encoder: Encoder | None, history: Iterable[Turn] = (),
    on_text: Callable[[str], None] | None = None, on_sentence: Callable[[Checked], None] | None = None,
) -> tuple[Generated | None, str | None]:
    """The written answer, or None and why not: nothing relevant was found (no model is
    called), or the server failed (the reason; raised instead when settings.required)."""
    if not answer.found:
        return None, None
    from .llm import Client, LLMError

    with Client(settings) as client:
        try:
            model = client.resolve_model()
            written = write(client.stream, model, answer, encoder, history, on_text, on_sentence, settings.max_tokens)
            return written, None
        except LLMError as exc:
            if settings.required:
                raise
            return None, str(exc)
