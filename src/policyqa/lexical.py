"""Keyword search: Chinese word segmentation and a BM25 index kept with each generation.

Owns: turning text into search terms (rjieba, the Rust port of jieba: its dictionary is
compiled in, so a one-shot question does not pay jieba's ~0.6 s dictionary load), writing
the BM25 index of a generation (built by bm25s) into `lexical-NNNNNN/` beside that
generation's vector file before the generation becomes current, and scoring a weighted
query against it.

The query side reads bm25s's saved arrays with numpy alone: bm25s imports scipy, which
would cost a cold question about a second. bm25s stores the BM25 weight of every
(document, term) pair as a sparse matrix in CSC form, so a query's scores are the weighted
sums of its terms' columns.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .translate import load_table

SETTINGS = {"segmenter": "rjieba-search", "k1": 1.2, "b": 0.75, "method": "lucene"}
_DIR = "lexical-{:06d}"
_WORD = re.compile(r"[0-9a-z\u3400-\u9fff]")

# Function words and question words: frequent in questions, uninformative in documents.
STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 等 对 为 将 把 被 由 从 于 以 其 之 也 都 就 这 那 有 没有 我 我们 你 您 他 她 它 "
    "哪些 哪个 哪 什么 怎么 怎样 如何 多少 几 吗 呢 吧 啊 么 是否 可以 能 能否 会 要 需要 应该 应当 "
    "请问 一下 一些 些 个 中 上 下 内 后 前 时 方面 相关 有关 进行 情况 采取 具体 主要 哪里 何 为何 为什么 "
    "多大 多久 多长 什么样 怎么样 规定 措施 政策 工作".split()
)


def terms(text: str) -> list[str]:
    """The search terms of a text: rjieba's search-mode words (a compound and its parts),
    NFKC-normalised and lower-cased, without punctuation and stopwords."""
    import rjieba

    text = unicodedata.normalize("NFKC", text).lower()
    return [t for t in rjieba.cut_for_search(text) if _WORD.search(t) and t not in STOPWORDS]


def generation_dir(index_dir: Path, generation: int) -> Path:
    return index_dir / _DIR.format(generation)


def _write_bm25(directory: Path, texts: list[str]) -> set[str]:
    """A bm25s index of `texts` (row order kept) saved in `directory`; its vocabulary."""
    import bm25s

    directory.mkdir(parents=True)
    tokens = [terms(t) for t in texts]
    if not tokens:
        return set()
    bm25 = bm25s.BM25(k1=SETTINGS["k1"], b=SETTINGS["b"], method=SETTINGS["method"])
    # bm25s needs a vocabulary: a corpus without words gets one empty term.
    bm25.index(tokens if any(tokens) else [[""]] * len(tokens), show_progress=False)
    bm25.save(str(directory), show_progress=False)
    return set(bm25.vocab_dict)


def write(index_dir: Path, generation: int, ids: np.ndarray, texts: list[str], docs: list[str],
          documents: dict[str, str]) -> None:
    """Write the keyword index of `generation` and sync it: BM25 over the passages (chunk
    ids in `ids` order, `docs` their documents) and over whole `documents` (path -> text),
    plus the translation table of the passage vocabulary."""
    from .translate import write_table

    final = generation_dir(index_dir, generation)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vocab = _write_bm25(tmp / "passages", texts)
    paths = sorted(documents)
    _write_bm25(tmp / "documents", [documents[p] for p in paths])
    row_of_doc = {p: i for i, p in enumerate(paths)}
    write_table(tmp, vocab)
    np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
    np.save(tmp / "chunk_documents.npy", np.array([row_of_doc[d] for d in docs], dtype=np.int64))
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def remove_old(index_dir: Path, generation: int) -> None:
    """Keep the current generation and the previous one (for readers switching now)."""
    for p in index_dir.glob("lexical-*"):
        try:
            n = int(p.name.split("-")[1].split(".")[0])
        except ValueError:
            continue
        if n < generation - 1 or n > generation or p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True)


@dataclass
class Bm25:
    """bm25s's saved arrays: the BM25 weight of every (row, term) pair, CSC by term."""

    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    rows: int

    @classmethod
    def load(cls, directory: Path, rows: int) -> "Bm25":
        if not (directory / "vocab.index.json").exists():
            return cls({}, np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int32), rows)
        return cls(
            vocab=json.loads((directory / "vocab.index.json").read_text(encoding="utf-8")),
            data=np.load(directory / "data.csc.index.npy", mmap_mode="r"),
            indices=np.load(directory / "indices.csc.index.npy", mmap_mode="r"),
            indptr=np.load(directory / "indptr.csc.index.npy"),
            rows=rows,
        )

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """BM25 score of every row for a query whose terms carry weights (1 for a plain
        query; translation alternatives share one term's weight)."""
        out = np.zeros(self.rows, dtype=np.float32)
        for term, weight in weighted_terms.items():
            col = self.vocab.get(term)
            if col is None or weight <= 0:
                continue
            lo, hi = self.indptr[col], self.indptr[col + 1]
            np.add.at(out, self.indices[lo:hi], weight * self.data[lo:hi])
        return out

    def rows_with(self, term: str) -> np.ndarray:
        col = self.vocab.get(term)
        return self.indices[self.indptr[col]:self.indptr[col + 1]] if col is not None else np.zeros(0, np.int32)


@dataclass
class LexicalIndex:
    """One generation's keyword index, read-only."""

    ids: np.ndarray  # passage row -> chunk id
    passages: Bm25
    documents: Bm25
    chunk_documents: np.ndarray  # passage row -> document row
    directory: Path
    _translations: dict[str, dict[str, float]] | None = None

    @classmethod
    def load(cls, index_dir: Path, generation: int) -> "LexicalIndex | None":
        """None when the generation has no keyword index (built before there was one)."""
        d = generation_dir(index_dir, generation)
        if not (d / "ids.npy").exists():
            return None
        ids = np.load(d / "ids.npy")
        chunk_documents = np.load(d / "chunk_documents.npy")
        n_docs = int(chunk_documents.max()) + 1 if len(chunk_documents) else 0
        return cls(ids, Bm25.load(d / "passages", len(ids)), Bm25.load(d / "documents", n_docs), chunk_documents, d)

    @property
    def translations(self) -> dict[str, dict[str, float]]:
        """English -> Chinese corpus terms (translate.py), read on first English question."""
        if self._translations is None:
            self._translations = load_table(self.directory) or {}
        return self._translations

    @functools.cached_property
    def row_of(self) -> dict[int, int]:
        """chunk id -> passage row"""
        return {int(c): r for r, c in enumerate(self.ids)}

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Passage BM25 scores, by row."""
        return self.passages.scores(weighted_terms)

    def document_scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Whole-document BM25 scores, by document row (see chunk_documents)."""
        return self.documents.scores(weighted_terms)

    def document_frequency(self, term: str) -> int:
        return len(self.passages.rows_with(term))

    def share_containing(self, term: str, rows: np.ndarray) -> float:
        """The share of passage `rows` whose text contains `term`."""
        if not len(rows):
            return 0.0
        return float(np.isin(rows, self.passages.rows_with(term)).mean())

    def coverage(self, weighted_terms: Mapping[str, float], chunk_id: int, unknown: int = 0) -> float:
        """The share of the query's information (IDF x weight) that the chunk contains.
        A term the corpus never uses counts as missing (a question about something else),
        and so does each of `unknown` further words (e.g. English words with no translation)."""
        row = self.row_of.get(int(chunk_id))
        n = len(self.ids)
        found = 0.0
        total = unknown * math.log(1 + (n + 0.5) / 0.5)
        for term, weight in weighted_terms.items():
            rows = self.passages.rows_with(term)
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            total += weight * idf
            if row is not None and len(rows):
                found += weight * idf * bool(np.any(rows == row))
        return found / total if total else 0.0
