"""Keyword search: the BM25 indexes kept with each generation.

Owns: writing the BM25 indexes of a generation (built by bm25s) into `lexical-NNNNNN/`
beside that generation's vector file before the generation becomes current, and scoring
a weighted query against them. Text is cut into terms by terms.py, two ways: words for
an English question's translation (weighted alternative Chinese words, which bigrams
would blur) and character bigrams for Chinese questions; bench/retrieval.py compares the
two.

The query side reads the arrays bm25s computes with numpy alone: bm25s imports scipy,
which would cost a cold question about a second. bm25s holds the BM25 weight of every
(document, term) pair as a sparse matrix in CSC form, so a query's scores are the weighted
sums of its terms' columns. Terms are looked up in a sorted array rather than bm25s's JSON
vocabulary: parsing a bigram vocabulary would cost a cold question more than the search,
and writing it a noticeable share of a commit.
"""
from __future__ import annotations

import functools
import json
import math
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import prune_generations, replaced
from .terms import STOPWORDS, bigrams, is_han, words
from .translate import TABLE_VERSION, load_table

SETTINGS = {"format": 2, "words": "rjieba-search", "characters": "han-bigrams", "k1": 1.2, "b": 0.75,
            "method": "lucene", "translations": TABLE_VERSION}
WORDS, BIGRAMS = "words", "bigrams"
LONGEST_WORD = 8  # characters; Keywords.contained looks no further
PREFIX = "lexical"
_DIR = PREFIX + "-{:06d}"


def _by_line(cut: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """`cut`, line by line with each distinct line cut once: a document's lines are its
    passages' lines, so documents cost nothing more. (The segmenter never joins words
    across a line break, so this cuts exactly as `cut` would; bigrams do join, and are
    cheap.)"""
    seen: dict[str, list[str]] = {}

    def cut_lines(text: str) -> list[str]:
        out = []
        for line in text.split("\n"):
            if line not in seen:
                seen[line] = cut(line)
            out += seen[line]
        return out

    return cut_lines


def generation_dir(index_dir: Path, generation: int) -> Path:
    return index_dir / _DIR.format(generation)


def _write_bm25(directory: Path, tokens: list[list[str]]) -> set[str]:
    """A bm25s index of the token lists (row order kept) saved in `directory`, with its
    vocabulary as sorted arrays (Bm25.column); returns the vocabulary."""
    import bm25s

    directory.mkdir(parents=True)
    if not tokens:
        return set()
    bm25 = bm25s.BM25(k1=SETTINGS["k1"], b=SETTINGS["b"], method=SETTINGS["method"])
    # bm25s needs a vocabulary: a corpus without words gets one empty term.
    bm25.index(tokens if any(tokens) else [[""]] * len(tokens), show_progress=False)
    for name in ("data", "indices", "indptr"):
        np.save(directory / f"{name}.csc.index.npy", bm25.scores[name])
    vocab = sorted(bm25.vocab_dict)
    np.save(directory / "terms.npy", np.array(vocab, dtype=str))
    np.save(directory / "columns.npy", np.array([bm25.vocab_dict[t] for t in vocab], dtype=np.int64))
    return set(vocab)


def write(index_dir: Path, generation: int, ids: np.ndarray, texts: list[str], docs: list[str],
          documents: dict[str, str]) -> None:
    """Write the keyword index of `generation` and sync it: for words and for bigrams,
    BM25 over the passages (chunk ids in `ids` order, `docs` their documents) and over
    whole `documents` (path -> text); plus the translation table of the word vocabulary."""
    from .translate import write_table

    paths = sorted(documents)
    with replaced(generation_dir(index_dir, generation)) as tmp:
        for name, cut in ((WORDS, _by_line(words)), (BIGRAMS, bigrams)):
            vocab = _write_bm25(tmp / name / "passages", [cut(t) for t in texts])
            _write_bm25(tmp / name / "documents", [cut(documents[p]) for p in paths])
            if name == WORDS:
                write_table(tmp, vocab)
        row_of_doc = {p: i for i, p in enumerate(paths)}
        np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
        np.save(tmp / "chunk_documents.npy", np.array([row_of_doc[d] for d in docs], dtype=np.int64))
        (tmp / "settings.json").write_text(json.dumps(SETTINGS, sort_keys=True), encoding="utf-8")


def is_current(index_dir: Path, generation: int) -> bool:
    """Whether the generation's keyword index was written with today's SETTINGS (an
    older one is rewritten by the next `index update`; no passage is embedded again)."""
    try:
        written = json.loads((generation_dir(index_dir, generation) / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return written == SETTINGS


def remove_old(index_dir: Path, generation: int) -> None:
    """Keep the current generation and the previous one (for readers switching now)."""
    prune_generations(index_dir, PREFIX, generation)


@dataclass
class Bm25:
    """bm25s's arrays: the BM25 weight of every (row, term) pair, CSC by term."""

    terms: np.ndarray  # sorted vocabulary
    columns: np.ndarray  # the CSC column of each of `terms`
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    rows: int

    @classmethod
    def load(cls, directory: Path, rows: int) -> Bm25:
        if not (directory / "terms.npy").exists():
            empty = np.zeros(0, np.int32)
            return cls(np.zeros(0, dtype=str), empty, np.zeros(0, np.float32), empty, np.zeros(1, np.int32), rows)
        return cls(
            terms=np.load(directory / "terms.npy", mmap_mode="r"),
            columns=np.load(directory / "columns.npy", mmap_mode="r"),
            data=np.load(directory / "data.csc.index.npy", mmap_mode="r"),
            indices=np.load(directory / "indices.csc.index.npy", mmap_mode="r"),
            indptr=np.load(directory / "indptr.csc.index.npy"),
            rows=rows,
        )

    def column(self, term: str) -> int | None:
        i = int(np.searchsorted(self.terms, term))
        # The array's fixed width would silently truncate a longer term in the comparison.
        if i == len(self.terms) or len(term) > self.terms.itemsize // 4 or self.terms[i] != term:
            return None
        return int(self.columns[i])

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """BM25 score of every row for a query whose terms carry weights (1 for a plain
        query; translation alternatives share one term's weight)."""
        out = np.zeros(self.rows, dtype=np.float32)
        for term, weight in weighted_terms.items():
            col = self.column(term)
            if col is None or weight <= 0:
                continue
            lo, hi = self.indptr[col], self.indptr[col + 1]
            np.add.at(out, self.indices[lo:hi], weight * self.data[lo:hi])
        return out

    def rows_with(self, term: str) -> np.ndarray:
        col = self.column(term)
        return self.indices[self.indptr[col]:self.indptr[col + 1]] if col is not None else np.zeros(0, np.int32)


@dataclass
class Keywords:
    """The passages and the whole documents of a generation, indexed by one way of
    cutting text into terms (WORDS or BIGRAMS)."""

    passages: Bm25
    documents: Bm25

    @classmethod
    def load(cls, directory: Path, passages: int, documents: int) -> Keywords:
        return cls(Bm25.load(directory / "passages", passages), Bm25.load(directory / "documents", documents))

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Passage BM25 scores, by passage row."""
        return self.passages.scores(weighted_terms)

    def document_scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Whole-document BM25 scores, by document row (LexicalIndex.chunk_documents)."""
        return self.documents.scores(weighted_terms)

    def document_frequency(self, term: str) -> int:
        return len(self.passages.rows_with(term))

    def contained(self, text: str) -> tuple[list[str], int]:
        """The vocabulary's terms that occur in `text`, overlapping ones included (jieba's
        full mode with the corpus vocabulary for dictionary, so no segmenter is loaded),
        stopwords left out; and how many of its Han characters lie in none of those of
        two or more characters: words of the question that the corpus never uses."""
        text = unicodedata.normalize("NFKC", text).lower()
        found, covered = [], [False] * len(text)
        for i in range(len(text)):
            for j in range(i + 1, min(len(text), i + LONGEST_WORD) + 1):
                term = text[i:j]
                if term not in STOPWORDS and self.passages.column(term) is not None:
                    found.append(term)
                    if j - i > 1:
                        covered[i:j] = [True] * (j - i)
        unknown = sum(1 for ch, c in zip(text, covered) if not c and is_han(ch))
        return list(dict.fromkeys(found)), unknown

    def share_containing(self, term: str, rows: np.ndarray) -> float:
        """The share of passage `rows` whose text contains `term`."""
        if not len(rows):
            return 0.0
        return float(np.isin(rows, self.passages.rows_with(term)).mean())

    def coverage(self, weighted_terms: Mapping[str, float], row: int | None, unknown: int = 0) -> float:
        """The share of the query's information (IDF x weight) that passage `row` contains.
        A term the corpus never uses counts as missing (a question about something else),
        and so does each of `unknown` further words (e.g. English words with no translation)."""
        n = self.passages.rows
        found = 0.0
        total = unknown * math.log(1 + (n + 0.5) / 0.5)
        for term, weight in weighted_terms.items():
            rows = self.passages.rows_with(term)
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            total += weight * idf
            if row is not None and len(rows):
                found += weight * idf * bool(np.any(rows == row))
        return found / total if total else 0.0


@dataclass
class LexicalIndex:
    """One generation's keyword index, read-only."""

    ids: np.ndarray  # passage row -> chunk id
    chunk_documents: np.ndarray  # passage row -> document row
    words: Keywords
    bigrams: Keywords
    directory: Path
    _translations: dict[str, dict[str, float]] | None = None

    @classmethod
    def load(cls, index_dir: Path, generation: int) -> LexicalIndex | None:
        """None when the generation has no keyword index of today's kind (written before
        there was one, or with other SETTINGS) or a damaged one: `index update` rewrites it."""
        if not is_current(index_dir, generation):
            return None
        d = generation_dir(index_dir, generation)
        try:
            ids = np.load(d / "ids.npy")
            chunk_documents = np.load(d / "chunk_documents.npy")
            n_docs = int(chunk_documents.max()) + 1 if len(chunk_documents) else 0
            return cls(ids, chunk_documents, Keywords.load(d / WORDS, len(ids), n_docs),
                       Keywords.load(d / BIGRAMS, len(ids), n_docs), d)
        except (OSError, ValueError):
            return None  # a damaged keyword index: searched without until `index update` rewrites it

    def keywords(self, cut: str) -> Keywords:
        return self.words if cut == WORDS else self.bigrams

    @property
    def translations(self) -> dict[str, dict[str, float]]:
        """English -> Chinese corpus words (translate.py), read on first English question."""
        if self._translations is None:
            try:
                self._translations = load_table(self.directory) or {}
            except ValueError:  # damaged: English questions go without until `index update`
                self._translations = {}
        return self._translations

    @functools.cached_property
    def row_of(self) -> dict[int, int]:
        """chunk id -> passage row"""
        return {int(c): r for r, c in enumerate(self.ids)}
