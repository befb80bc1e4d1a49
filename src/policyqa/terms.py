"""Text as search terms: the ground floor that keyword search, translation, answers and
follow-ups share.

Owns: which script a text is written in (Han characters), the two ways of cutting text
into terms -- words (rjieba, the Rust port of jieba, search mode) and character bigrams --,
and the stopwords left out of both. Chinese has no spaces: a question and a passage may
be segmented differently into words, while their character pairs still match, so Chinese
questions are searched by bigrams and English questions' translations (translate.py) by
words.
"""
from __future__ import annotations

import re
import unicodedata

HAN = "\u3400-\u9fff"  # CJK Unified Ideographs and Extension A: what counts as a Han character
_HAN = re.compile(f"[{HAN}]")
_WORD = re.compile(f"[0-9a-z{HAN}]")
_WRAP = re.compile(f"(?<=[{HAN}])\\s+(?=[{HAN}])")
_TOKEN = re.compile(f"[{HAN}]+|[a-z]+|\\d+(?:\\.\\d+)?")

# Function words and question words: frequent in questions, uninformative in documents.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 等 对 为 将 把 被 由 从 于 以 其 之 也 都 就 这 那 有 没有 我 我们 你 您 他 她 它 "
    "哪些 哪个 哪 什么 怎么 怎样 如何 多少 几 吗 呢 吧 啊 么 是否 可以 能 能否 会 要 需要 应该 应当 "
    "请问 一下 一些 些 个 中 上 下 内 后 前 时 方面 相关 有关 进行 情况 采取 具体 主要 哪里 何 为何 为什么 "
    "多大 多久 多长 什么样 怎么样 规定 措施 政策 工作".split()
)


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


def is_han(ch: str) -> bool:
    return _HAN.match(ch) is not None


def mainly_chinese(text: str) -> bool:
    """At least half of the non-space characters are Han. A follow-up that adds an
    English topic to a Chinese word ("... seed-stage firms 贷款") is treated like the
    English question it mostly is."""
    compact = re.sub(r"\s+", "", text)
    return bool(compact) and 2 * len(_HAN.findall(compact)) >= len(compact)


def words(text: str) -> list[str]:
    """The search terms of a text: rjieba's search-mode words (a compound and its parts),
    NFKC-normalised and lower-cased, without punctuation and stopwords."""
    import rjieba  # builds its dictionary at import: only paths that need words pay for it

    text = unicodedata.normalize("NFKC", text).lower()
    return [t for t in rjieba.cut_for_search(text) if _WORD.search(t) and t not in STOPWORDS]


_LONGEST_STOPWORD = max(len(w) for w in STOPWORDS)


def in_stopwords(text: str) -> list[bool]:
    """For each character of `text`, whether it lies in a stopword (the longest one
    starting at each position)."""
    stop = [False] * len(text)
    for i in range(len(text)):
        for n in range(min(_LONGEST_STOPWORD, len(text) - i), 0, -1):
            if text[i:i + n] in STOPWORDS:
                stop[i:i + n] = [True] * n
                break
    return stop


def bigrams(text: str) -> list[str]:
    """The overlapping character pairs of each run of Han characters (a lone character
    kept whole; runs continue across white space, which in Chinese text is line wrapping),
    plus Latin words and numbers whole, NFKC-normalised and lower-cased."""
    out = []
    for run in _TOKEN.findall(_WRAP.sub("", unicodedata.normalize("NFKC", text)).lower()):
        out += [run[i:i + 2] for i in range(len(run) - 1)] if _HAN.match(run) and len(run) > 1 else [run]
    return out
