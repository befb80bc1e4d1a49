"""Keyword search: the BM25 indexes kept with each index segment.

Owns: writing the keyword index of an index segment (segments.py's unit: the passages
one commit added) into `keywords/` of its directory, streaming, in parts of at most
PART_CHUNKS passages so that memory is bounded by a part, not by the corpus, then merged
into one part, streaming too, so that a question reads each term once; and scoring
a weighted query over every part of every live segment as one BM25 index. Text is cut
into terms by terms.py, two ways: words for an English question's translation (weighted
alternative Chinese words, which bigrams would blur) and character bigrams for Chinese
questions; bench/retrieval.py compares the two.

What is stored is what Lucene stores: per part, the sorted term array, CSC postings
(rows, term frequency) per term and each row's length in terms. The collection
statistics BM25 needs -- the number of live rows N, their mean length and each query
term's document frequency -- are computed at query time over the live rows of all parts,
so that scores are comparable across segments and a passage scores exactly as it would in
one index rebuilt without the deleted passages. With one part the arithmetic is bm25s's
"lucene" method step for step (same dtypes, same order), so scores equal bm25s's bit for
bit (tests/test_segments.py checks it on real text).

The query side uses numpy alone, reading what a query needs by position (_Array): bm25s imports scipy, which
would cost a cold question about a second, and parsing a JSON vocabulary would cost more
than the search.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import unicodedata
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from .terms import STOPWORDS, bigrams, in_stopwords, is_han, words
from .translate import TABLE_NAME, TABLE_VERSION, build_table

TERMS_BLOCK = 64  # terms per block of the terms index: a lookup reads one block (a few KB)
SETTINGS = {"format": 3, "words": "rjieba-search", "characters": "han-bigrams", "k1": 1.2, "b": 0.75,
            "method": "lucene", "translations": TABLE_VERSION, "terms_block": TERMS_BLOCK}
WORDS, BIGRAMS = "words", "bigrams"
LONGEST_WORD = 8  # characters; Keywords.contained looks no further
KEYWORDS = "keywords"  # the keyword index's folder in a segment's directory
OLD_PREFIX = "lexical"  # a generation's keyword folder before segments (removed after the next commit)
# Passages a part holds. The writer's memory is one part's postings (about 12 bytes per
# (passage, term) pair, ~150 bigrams a passage: ~200 MB at 100k, measured by
# bench/scale.py) plus its vocabulary; the merge reads every part's postings once more.
PART_CHUNKS = 100_000
# Up to this many rows a question scores every row a term occurs in (a few milliseconds)
# and ranks ties as it always has; past it Bm25.top skips what cannot reach the k best.
SCAN_UP_TO = 100_000
POSTINGS_CACHE_BYTES = 32 << 20
# A part's deleted rows are looked up in a posting (a binary search each) when it is this
# many times longer; a shorter one is masked row by row (after large updates, mostly).
DEAD_LOOKUP = 32
MERGE_PAIRS = 1 << 22  # postings merged at a time (~100 MB of the merge's memory)
KNOWN_TERMS = 100_000  # vocabulary lookups remembered (a question asks a few hundred)
_PART = "part-{:03d}"


def _by_line(cut: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """`cut`, line by line with each distinct line cut once: a document's lines are its
    passages' lines, so documents cost nothing more. (The segmenter never joins words
    across a line break, so this cuts exactly as `cut` would; bigrams do join, and are
    cheap.) The cache lives as long as one part."""
    seen: dict[str, list[str]] = {}

    def cut_lines(text: str) -> list[str]:
        out = []
        for line in text.split("\n"):
            if line not in seen:
                seen[line] = cut(line)
            out += seen[line]
        return out

    return cut_lines


def _write_bm25(directory: Path, texts: Iterable[str], cut: Callable[[str], list[str]]) -> set[str]:
    """The postings of the texts (row order kept) in `directory`: sorted `terms`, `indptr`
    into `indices` (rows) and `tf` per term, `lengths` per row; returns the vocabulary.
    Pairs are packed in C arrays as they come, so a part costs its postings, not its
    token lists."""
    directory.mkdir(parents=True)
    vocab: dict[str, int] = {}
    cols, tfs, per_row, lengths = array("i"), array("i"), array("i"), array("i")
    for text in texts:
        tokens = cut(text)
        counts = Counter(tokens)
        cols.extend(vocab.setdefault(t, len(vocab)) for t in counts)
        tfs.extend(counts.values())
        per_row.append(len(counts))
        lengths.append(len(tokens))
    terms = np.array(list(vocab), dtype=str) if vocab else np.zeros(0, dtype="<U1")
    by_term = np.argsort(terms, kind="stable")
    rank = np.empty(len(terms), dtype=np.int64)
    rank[by_term] = np.arange(len(terms))
    col = rank[np.frombuffer(cols, dtype=np.int32)] if len(cols) else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(per_row), dtype=np.int32), np.frombuffer(per_row, dtype=np.int32)) \
        if len(per_row) else np.zeros(0, np.int32)
    order = np.argsort(col, kind="stable")  # rows stay ascending within a term
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    np.cumsum(np.bincount(col, minlength=len(terms)), out=indptr[1:])
    np.save(directory / "terms.npy", terms[by_term])
    np.save(directory / "terms_index.npy", terms[by_term][::TERMS_BLOCK])
    np.save(directory / "indptr.npy", indptr)
    np.save(directory / "indices.npy", rows[order])
    tf = np.frombuffer(tfs, dtype=np.int32)[order] if len(tfs) else np.zeros(0, np.int32)
    np.save(directory / "tf.npy", tf.astype(np.float32))
    np.save(directory / "lengths.npy", np.frombuffer(lengths, dtype=np.int32) if len(lengths)
            else np.zeros(0, np.int32))
    return set(vocab)


def _merge_bm25(sources: Sequence[Path], offsets: Sequence[int], directory: Path) -> None:
    """One BM25 directory, as _write_bm25 writes it, of several (rows numbered source after
    source from `offsets`), streaming: the postings of a few terms at a time, up to
    MERGE_PAIRS (row, tf) pairs."""
    directory.mkdir(parents=True)
    terms_of = [np.load(s / "terms.npy") for s in sources]
    indptr_of = [np.load(s / "indptr.npy") for s in sources]
    rows_of = [_Array(s / "indices.npy") for s in sources]
    tf_of = [_Array(s / "tf.npy") for s in sources]
    terms = np.unique(np.concatenate(terms_of))
    cols = [np.searchsorted(terms, t) for t in terms_of]  # each source's terms among all
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    for col, ptr in zip(cols, indptr_of):
        indptr[1:][col] += np.diff(ptr)
    np.cumsum(indptr, out=indptr)
    with open(directory / "indices.npy", "wb") as rows_out, open(directory / "tf.npy", "wb") as tf_out:
        for out, dtype in ((rows_out, np.int32), (tf_out, np.float32)):
            header = npformat.header_data_from_array_1_0(np.zeros(0, dtype))
            npformat.write_array_header_1_0(out, dict(header, shape=(int(indptr[-1]),)))
        start = 0
        while start < len(terms):
            end = int(np.searchsorted(indptr, indptr[start] + MERGE_PAIRS, side="right")) - 1
            end = max(start + 1, min(end, len(terms)))
            rows, tf, at = [], [], []
            for col, ptr, r, t, offset in zip(cols, indptr_of, rows_of, tf_of, offsets):
                t0, t1 = (int(x) for x in np.searchsorted(col, [start, end]))
                rows.append(r.read(int(ptr[t0]), int(ptr[t1])) + np.int32(offset))
                tf.append(t.read(int(ptr[t0]), int(ptr[t1])))
                at.append(np.repeat(col[t0:t1], np.diff(ptr[t0:t1 + 1])))
            order = np.argsort(np.concatenate(at), kind="stable")  # rows stay ascending within a term
            rows_out.write(np.concatenate(rows)[order].astype(np.int32).tobytes())
            tf_out.write(np.concatenate(tf)[order].astype(np.float32).tobytes())
            start = end
    np.save(directory / "terms.npy", terms)
    np.save(directory / "terms_index.npy", terms[::TERMS_BLOCK])
    np.save(directory / "indptr.npy", indptr)
    np.save(directory / "lengths.npy", np.concatenate([np.load(s / "lengths.npy") for s in sources]))


def _merge_parts(directory: Path, parts: int) -> None:
    """A keyword index's parts as one part-000: each part bounds the writer's memory, but a
    question would look each of its terms up in every part."""
    sources = [directory / _PART.format(k) for k in range(parts)]
    merged = directory / "merged"
    merged.mkdir()
    ids = [np.load(s / "ids.npy") for s in sources]
    docs = [np.load(s / "chunk_documents.npy") for s in sources]
    row_offsets = np.cumsum([0] + [len(i) for i in ids])[:-1].tolist()
    doc_offsets = np.cumsum([0] + [int(d.max()) + 1 if len(d) else 0 for d in docs])[:-1].tolist()
    for name in (WORDS, BIGRAMS):
        _merge_bm25([s / name / "passages" for s in sources], row_offsets, merged / name / "passages")
        _merge_bm25([s / name / "documents" for s in sources], doc_offsets, merged / name / "documents")
    np.save(merged / "ids.npy", np.concatenate(ids))
    np.save(merged / "chunk_documents.npy", np.concatenate([d + o for d, o in zip(docs, doc_offsets)]))
    for source in sources:
        shutil.rmtree(source)
    merged.rename(directory / _PART.format(0))


def write(directory: Path, ids: np.ndarray, texts: Sequence[str], docs: Sequence[str],
          documents: Mapping[str, str]) -> None:
    """Write a segment's keyword index into `directory` (which must not exist; the caller
    syncs and renames it): for words and for bigrams, BM25 postings over the passages
    (chunk ids in `ids` order, ascending; `docs` their documents) and over the whole
    `documents` (path -> text) they belong to; plus the translation table of the word
    vocabulary. Parts end at a document's end, so a document's row is in its passages' part."""
    directory.mkdir(parents=True)
    ids = np.asarray(ids, dtype=np.int64)
    vocab: set[str] = set()
    start, part = 0, 0
    while start < len(ids) or (part == 0 and not len(ids)):
        end = min(len(ids), start + PART_CHUNKS)
        while 0 < end < len(ids) and docs[end] == docs[end - 1]:
            end += 1
        d = directory / _PART.format(part)
        d.mkdir()
        paths = sorted(set(docs[start:end]))
        for name, cut in ((WORDS, _by_line(words)), (BIGRAMS, bigrams)):
            found = _write_bm25(d / name / "passages", texts[start:end], cut)
            _write_bm25(d / name / "documents", (documents[p] for p in paths), cut)
            if name == WORDS:
                vocab |= found
        row_of_doc = {p: i for i, p in enumerate(paths)}
        np.save(d / "ids.npy", ids[start:end])
        np.save(d / "chunk_documents.npy", np.array([row_of_doc[x] for x in docs[start:end]], dtype=np.int64))
        start, part = end, part + 1
    if part > 1:
        _merge_parts(directory, part)
        part = 1
    (directory / TABLE_NAME).write_text(json.dumps(build_table(vocab), ensure_ascii=False), encoding="utf-8")
    (directory / "settings.json").write_text(json.dumps(dict(SETTINGS, parts=part), sort_keys=True),
                                             encoding="utf-8")


def is_current(directory: Path) -> bool:
    """Whether a segment's keyword index was written with today's SETTINGS (an older one
    is rewritten by the next `index update`; no passage is embedded again)."""
    try:
        written = json.loads((directory / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and {k: v for k, v in written.items() if k != "parts"} == SETTINGS


class _Array:
    """A saved array read by position (pread) into private memory. A memory map would do
    as much on paper, but the kernel maps a large page-cache folio around every touched
    page, so a cold question's few postings per term mapped megabytes of each file
    (bench/scale.py's cold peak RSS)."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)
        # Only the header is read (np.load would map the file: a cold question opens a few
        # hundred of these at a million passages).
        lead = os.pread(self.fd, 12, 0)
        major = lead[6] if len(lead) == 12 else 0
        size = 10 + int.from_bytes(lead[8:10], "little") if major == 1 else 12 + int.from_bytes(lead[8:12], "little")
        head = io.BytesIO(os.pread(self.fd, size, 0))
        version = npformat.read_magic(head)
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, self.dtype = read(head)
        self.length, self.start = int(shape[0]), head.tell()

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def __len__(self) -> int:
        return self.length

    def read(self, lo: int, hi: int) -> np.ndarray:
        size = self.dtype.itemsize
        data = os.pread(self.fd, (hi - lo) * size, self.start + lo * size)
        if len(data) != (hi - lo) * size:
            raise ValueError("a keyword file is shorter than its header says")
        return np.frombuffer(data, dtype=self.dtype)


class _Postings:
    """One part's postings of one kind (passages or documents) and one cut."""

    def __init__(self, directory: Path, offset: int, live: np.ndarray | None):
        self.terms = _Array(directory / "terms.npy")
        # Every TERMS_BLOCK-th term, in memory: a lookup reads one block of the terms file.
        self.block = np.load(directory / "terms_index.npy")
        self.indptr = _Array(directory / "indptr.npy")
        self.indices = _Array(directory / "indices.npy")
        self.tf = _Array(directory / "tf.npy")
        self.lengths_file = _Array(directory / "lengths.npy")
        self.directory = directory
        self.offset = offset  # the part's first row among all parts'
        self.live = live  # by part-local row; None when every row is live

    @property
    def rows(self) -> int:
        return len(self.lengths_file)

    @functools.cached_property
    def dead(self) -> np.ndarray | None:
        """The deleted part-local rows, ascending; None when every row is live."""
        return np.flatnonzero(~self.live).astype(np.int32) if self.live is not None else None

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Each row's length, mapped: a question reads those of the rows its terms occur
        in (all of them once, for the mean)."""
        return np.load(self.directory / "lengths.npy", mmap_mode="r")

    def column(self, term: str) -> int | None:
        # The array's fixed width would silently truncate a longer term in the comparison.
        if not len(self.terms) or len(term) > self.terms.dtype.itemsize // 4:
            return None
        j = int(np.searchsorted(self.block, term, side="right")) - 1
        if j < 0:
            return None
        lo = j * TERMS_BLOCK
        block = self.terms.read(lo, min(lo + TERMS_BLOCK, len(self.terms)))
        i = int(np.searchsorted(block, term))
        return lo + i if i < len(block) and block[i] == term else None

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(part-local rows, tf) of the live rows that contain `term`."""
        col = self.column(term)
        if col is None:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        lo, hi = (int(x) for x in self.indptr.read(col, col + 2))
        rows, tf = self.indices.read(lo, hi), self.tf.read(lo, hi)
        live, dead = self.live, self.dead
        if live is None or dead is None:
            return rows, tf
        if len(dead) * DEAD_LOOKUP < len(rows):  # a few deleted rows: looked up, not every row tested
            at = np.searchsorted(rows, dead)
            gone = at[rows[np.minimum(at, len(rows) - 1)] == dead]
            return (np.delete(rows, gone), np.delete(tf, gone)) if len(gone) else (rows, tf)
        keep = live[rows]
        return rows[keep], tf[keep]


@dataclass(frozen=True)
class Scored:
    """Rows found by keywords with their scores (best first past SCAN_UP_TO rows); and
    the scores of the rows that were asked about (0 where none of the terms occurs)."""

    rows: np.ndarray
    scores: np.ndarray
    wanted: np.ndarray


@dataclass
class _Posting:
    """A term's live rows among all parts' (ascending), their term frequencies and its idf
    over every live row. What it adds to a row's score is computed for the rows asked
    about: a common term's rows are mostly only looked up (MaxScore scores it on the
    candidates alone, a passage's coverage asks which rows hold it)."""

    rows: np.ndarray
    tf: np.ndarray
    idf: np.float32
    norms: Callable[[np.ndarray], np.ndarray]  # Bm25.norms
    _adds: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + 2 * self.tf.nbytes  # with its adds, once computed

    def adds(self, at: np.ndarray | None = None) -> np.ndarray:
        """What the term adds at weight 1 to the score of each row (or of rows[at]):
        bm25s's float32(idf * tf / (norm + tf)), in float64 until then; the same float
        whichever rows are asked, as every step is elementwise."""
        if at is None:
            if self._adds is None:
                self._adds = self._adds_of(self.rows, self.tf)
            return self._adds
        if self._adds is not None:
            return self._adds[at]
        return self._adds_of(self.rows[at], self.tf[at])

    def _adds_of(self, rows: np.ndarray, tf: np.ndarray) -> np.ndarray:
        adds = self.norms(rows)
        adds += tf
        np.divide(tf, adds, out=adds)
        adds *= self.idf
        return adds.astype(np.float32)


@dataclass
class _Term:
    """A query term's posting (its admitted rows only) with the query's weight for it."""

    weight: float
    posting: _Posting

    @property
    def df(self) -> int:
        return len(self.posting.rows)

    @property
    def bound(self) -> float:
        """More than the term adds to any row's score (with a margin for float32 rounding)."""
        return float(self.weight * self.posting.idf) * 1.0001

    def add_to(self, out: np.ndarray) -> None:
        """Adds what the term adds to each row's score into `out` (by row)."""
        # A term's rows are distinct, so a fancy-indexed add adds each once (what
        # np.add.at would, at a fraction of its cost).
        out[self.posting.rows] += self.posting.adds() * self.weight

    def at(self, asked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of the `asked` rows, ascending, contain the term; what it adds to each)."""
        rows = self.posting.rows
        # In the rows' own dtype: searchsorted would otherwise copy them to the common one.
        pos = np.minimum(np.searchsorted(rows, asked.astype(rows.dtype, copy=False)), len(rows) - 1)
        hit = rows[pos] == asked
        return hit, self.posting.adds(pos[hit]) * self.weight


@dataclass
class Bm25:
    """BM25 ("lucene" variant, bm25s's arithmetic) over the live rows of several parts,
    rows numbered part after part."""

    parts: list[_Postings]
    rows: int  # all rows, live or not
    live_rows: int
    _mean_length: float | None = None
    _postings: OrderedDict[str, _Posting] = field(default_factory=OrderedDict)
    _postings_bytes: int = 0
    _known: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, parts: list[_Postings]) -> Bm25:
        rows = sum(p.rows for p in parts)
        live_rows = sum(p.rows if p.live is None else int(p.live.sum()) for p in parts)
        return cls(parts, rows, live_rows)

    @property
    def mean_length(self) -> float:
        """Of the live rows. Read when a question first scores a term: a question reads two
        of a generation's four keyword indexes' lengths (a million rows each at scale)."""
        if self._mean_length is None:
            total = sum(int(np.sum(p.lengths, dtype=np.int64)) for p in self.parts) - \
                sum(int(np.sum(p.lengths[p.dead], dtype=np.int64)) for p in self.parts if p.dead is not None)
            # bm25s: np.mean of the lengths, a float64 sum of integers (exact) over the count.
            self._mean_length = float(np.float64(total) / self.live_rows) if self.live_rows else 0.0
        return self._mean_length

    def norms(self, rows: np.ndarray) -> np.ndarray:
        """k1 * (1 - b + b * length / mean length) of these rows, as bm25s computes it for
        every row (elementwise: the same floats), here only for the rows a question reads."""
        k1, b = float(SETTINGS["k1"]), float(SETTINGS["b"])  # type: ignore[arg-type]
        return k1 * ((1 - b) + b * self.lengths.take(rows) / np.float64(self.mean_length))

    @functools.cached_property
    def lengths(self) -> ByRow:
        """Every row's length (parts not joined)."""
        return ByRow([p.lengths for p in self.parts])

    def live(self) -> np.ndarray | None:
        """Which rows are live (a bool per row); None when all are."""
        if all(p.live is None for p in self.parts):
            return None
        return np.concatenate([np.ones(p.rows, dtype=bool) if p.live is None else p.live for p in self.parts])

    def _found(self, term: str) -> _Posting:
        """The posting of `term`. Questions read the same terms many times (a question its
        ranking, then the coverage of each passage it may answer with; a chat the words
        its questions share), and a common term's posting is large: the latest terms' stay
        in memory, up to POSTINGS_CACHE_BYTES."""
        cached = self._postings.pop(term, None)
        if cached is None:
            found = [(p.offset, *p.postings(term)) for p in self.parts]
            # int32 as stored (an index holds far fewer than 2**31 passages): a common term's
            # rows are not copied to be widened.
            rows = _joined([r + np.int32(offset) if offset else r for offset, r, _ in found], np.int32)
            tf = _joined([t for _, _, t in found], np.float32)
            n, df = self.live_rows, len(rows)
            idf = np.float32(math.log(1 + (n - df + 0.5) / (df + 0.5)))
            cached = _Posting(rows, tf, idf, self.norms)
            self._postings_bytes += cached.nbytes
            while self._postings and self._postings_bytes > POSTINGS_CACHE_BYTES:
                _, dropped = self._postings.popitem(last=False)
                self._postings_bytes -= dropped.nbytes
        self._postings[term] = cached  # the most recent last
        return cached

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """BM25 score of every row (0 for a deleted one) for a query whose terms carry
        weights (1 for a plain query; translation alternatives share one term's weight)."""
        out = np.zeros(self.rows, dtype=np.float32)
        for t in self._terms(weighted_terms):
            t.add_to(out)
        return out

    def _terms(self, weighted_terms: Mapping[str, float], admitted: np.ndarray | None = None) -> list[_Term]:
        """The query's terms that occur in a live row (among the `admitted` ones if given),
        in the query's order, with their postings (admitted rows only; idf over every live
        row)."""
        out = []
        for term, weight in weighted_terms.items():
            if weight <= 0:
                continue
            posting = self._found(term)
            if admitted is not None:
                keep = admitted[posting.rows]
                posting = _Posting(posting.rows[keep], posting.tf[keep], posting.idf, posting.norms)
            if len(posting.rows):
                out.append(_Term(weight, posting))
        return out

    def top(self, weighted_terms: Mapping[str, float], k: int, wanted: np.ndarray,
            admitted: np.ndarray | None = None) -> Scored:
        """The k best rows (score > 0, among the `admitted` rows if given: a bool per row)
        and the scores of the `wanted` rows, each exactly what scores() gives it; past
        SCAN_UP_TO rows without scoring every row a common term occurs in. Terms are taken rarest first (as
        MaxScore takes them, Turtle & Flood 1995): once the k-th best score so far exceeds
        what all the terms not taken yet could add to a row (weight x idf each, as a
        term's tf / (tf + norm) is below 1), no other row can enter the k best, and those
        terms are scored only on the rows already found, each one dropping the rows that can
        no longer reach the k-th best. A row's score is summed in the query's term order, as
        scores() sums it, so that it is the same float."""
        if self.rows <= SCAN_UP_TO:
            every = self.scores(weighted_terms)
            if admitted is not None:
                every = np.where(admitted, every, np.float32(0))
            top = np.argpartition(-every, min(k, len(every)) - 1)[:k] if len(every) else np.zeros(0, np.int64)
            top = top[every[top] > 0]
            return Scored(top, every[top], every[wanted])
        taken = self._terms(weighted_terms, admitted)
        partial = np.zeros(self.rows, np.float32)  # what the terms taken so far add: for the stopping rule
        most = 0.0  # partial.max(), kept up to date from the rows each term adds to

        def kth_best(scores: np.ndarray) -> float:
            """The k-th best of these lower bounds: a floor under the k-th best score."""
            found = scores[scores > 0]
            return float(np.partition(found, len(found) - k)[len(found) - k]) if len(found) >= k else 0.0

        left = sum(t.bound for t in taken)
        rest = sorted(taken, key=lambda t: t.df)
        while rest:
            if left < most:
                kth = kth_best(partial)
                if left < kth:
                    break
            t = rest.pop(0)
            t.add_to(partial)
            most = max(most, float(partial[t.posting.rows].max()))
            left -= t.bound
        else:
            left, kth = 0.0, kth_best(partial)
        # Only a row whose partial score and all the terms not taken could reach the k-th
        # best can be among the k best (with a margin for the summing order's rounding).
        floor = max((kth - left) * (1 - 1e-5), float(np.finfo(np.float32).tiny))
        candidates = np.flatnonzero(partial >= floor)
        lower = partial[candidates]
        # The terms not taken, on the candidates only, rarest first: each one known narrows
        # what a candidate can still reach and may raise the floor under the k-th best.
        for t in rest:
            hit, data = t.at(candidates)
            lower[hit] += data
            left -= t.bound
            keep = lower + left >= kth_best(lower) * (1 - 1e-5)
            candidates, lower = candidates[keep], lower[keep]
        asked = _union(candidates, np.asarray(wanted, dtype=np.int64))
        exact = np.zeros(len(asked), np.float32)
        for t in taken:  # the query's order
            hit, data = t.at(asked)
            exact[hit] += data
        # Every row among the k best is a candidate, so the k best of what was asked are they.
        best = np.flatnonzero(exact > 0)
        best = best[np.lexsort((asked[best], -exact[best]))][:k]
        at = np.searchsorted(asked, wanted)
        return Scored(asked[best], exact[best], exact[at] if len(asked) else np.zeros(len(wanted), np.float32))

    def rows_with(self, term: str) -> np.ndarray:
        """The live rows that contain `term`, ascending."""
        return self._found(term).rows

    def knows(self, term: str) -> bool:
        """Whether some part's vocabulary has `term` (deleted rows may be all that use it).
        Remembered: a question asks it of every substring, twice (its coverage and its
        asked words), and in a large index each ask is a lookup in every part."""
        known = self._known.get(term)
        if known is None:
            if len(self._known) >= KNOWN_TERMS:
                self._known.clear()
            known = self._known[term] = any(p.column(term) is not None for p in self.parts)
        return known


def _joined(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """The arrays one after the other; the array itself when there is one (most segments
    have one part: its million rows are not copied)."""
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted distinct values of both arrays: np.union1d's result without its cost to
    a cold question (np.unique imports numpy.ma on first use, ~15-40 ms)."""
    out = np.concatenate([a, b])
    out.sort()
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if len(out) else out


@dataclass
class Keywords:
    """The passages and the whole documents of a generation, indexed by one way of
    cutting text into terms (WORDS or BIGRAMS)."""

    passages: Bm25
    documents: Bm25

    def scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Passage BM25 scores, by passage row."""
        return self.passages.scores(weighted_terms)

    def top(self, weighted_terms: Mapping[str, float], k: int, wanted: np.ndarray,
            admitted: np.ndarray | None = None) -> Scored:
        """The k best passage rows and the scores of the `wanted` ones (Bm25.top)."""
        return self.passages.top(weighted_terms, k, wanted, admitted)

    def document_scores(self, weighted_terms: Mapping[str, float]) -> np.ndarray:
        """Whole-document BM25 scores, by document row (LexicalIndex.chunk_documents)."""
        return self.documents.scores(weighted_terms)

    def document_frequency(self, term: str) -> int:
        return len(self.passages.rows_with(term))

    def contained(self, text: str, stopwords_known: bool = False) -> tuple[list[str], int]:
        """The vocabulary's terms that occur in `text`, overlapping ones included (jieba's
        full mode with the corpus vocabulary for dictionary, so no segmenter is loaded),
        stopwords left out; and how many of its Han characters lie in none of those of
        two or more characters: words of the question that the corpus never uses. With
        `stopwords_known`, characters of a stopword (是什么, 政策) are not counted either:
        they are the question's own words, not the corpus's missing ones."""
        text = unicodedata.normalize("NFKC", text).lower()
        found, covered = [], [False] * len(text)
        for i in range(len(text)):
            for j in range(i + 1, min(len(text), i + LONGEST_WORD) + 1):
                term = text[i:j]
                if term not in STOPWORDS and self.passages.knows(term):
                    found.append(term)
                    if j - i > 1:
                        covered[i:j] = [True] * (j - i)
        known = in_stopwords(text) if stopwords_known else [False] * len(text)
        unknown = sum(1 for ch, c, k in zip(text, covered, known) if not (c or k) and is_han(ch))
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
        n = self.passages.live_rows
        found = 0.0
        total = unknown * math.log(1 + (n + 0.5) / 0.5)
        for term, weight in weighted_terms.items():
            rows = self.passages.rows_with(term)
            idf = math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5))
            total += weight * idf
            if row is not None and len(rows):
                found += weight * idf * bool(np.any(rows == row))
        return found / total if total else 0.0


class ByRow:
    """A value per passage row, kept as each part's array (memory-mapped, plus the part's
    offset): a question reads a few hundred rows, and joining a million of each would cost
    a cold question more than its search. np.asarray joins them."""

    def __init__(self, parts: list[np.ndarray], adds: list[int] | None = None):
        self.parts = parts
        self.adds = adds or [0] * len(parts)
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, row: int) -> int:
        if not 0 <= row < len(self):
            raise IndexError(row)
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return int(self.parts[k][row - self.starts[k]]) + self.adds[k]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The values of these rows (a common term's rows, ascending, or a few in any order)."""
        if len(self.parts) == 1 and not self.adds[0]:
            return self.parts[0].take(rows)
        if len(rows) > 1 and not np.all(rows[1:] >= rows[:-1]):
            order = np.argsort(rows)
            out = np.empty(len(rows), np.int64)
            out[order] = self.take(rows[order])
            return out
        ends = np.searchsorted(rows, self.starts)
        return np.concatenate([np.zeros(0, np.int64)] + [
            part.take(rows[lo:hi] - start) + add
            for part, add, start, lo, hi in zip(self.parts, self.adds, self.starts, ends, ends[1:])])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        joined = np.concatenate([p + a for p, a in zip(self.parts, self.adds)]) if self.parts \
            else np.zeros(0, np.int64)
        return joined.astype(dtype) if dtype is not None else joined


class RowOf:
    """chunk id -> passage row, by binary search: rows are in ascending chunk id (each
    part's ids follow the previous part's), so no million-entry dict is built."""

    def __init__(self, ids: ByRow):
        self.ids = ids
        parts = [p for p in ids.parts if len(p)]
        self.sorted = all(bool(np.all(p[1:] > p[:-1])) for p in parts) and \
            all(a[-1] < b[0] for a, b in zip(parts, parts[1:]))
        self._dict = None if self.sorted else {int(c): r for r, c in enumerate(np.asarray(ids))}

    def get(self, cid: int, default: int | None = None) -> int | None:
        row = int(self.rows(np.array([cid], np.int64))[0])
        return row if row >= 0 else default

    def rows(self, cids: np.ndarray) -> np.ndarray:
        """The row of each chunk id; -1 for one the index does not hold."""
        if self._dict is not None:
            return np.array([self._dict.get(int(c), -1) for c in cids], np.int64)
        out = np.full(len(cids), -1, np.int64)
        for part, start in zip(self.ids.parts, self.ids.starts):
            if len(part):
                i = np.minimum(np.searchsorted(part, cids), len(part) - 1)
                found = part[i] == cids
                out[found] = start + i[found]
        return out


@dataclass
class LexicalIndex:
    """A generation's keyword index (every part of its segments), read-only. Rows of
    deleted passages (a segment's tombstones) stay in `ids` and score 0."""

    ids: ByRow  # passage row -> chunk id
    chunk_documents: ByRow  # passage row -> document row
    words: Keywords
    bigrams: Keywords
    directories: list[Path]
    _translations: dict[str, dict[str, float]] | None = None

    @classmethod
    def load(cls, segments: Sequence[tuple[Path, np.ndarray]]) -> LexicalIndex | None:
        """The keyword index of these segments (keyword folder, deleted chunk ids). None
        when one has no keyword index of today's kind (written before there was one, or
        with other SETTINGS) or a damaged one: `index update` rewrites it."""
        try:
            ids, chunk_documents, doc_offsets, doc_offset = [], [], [], 0
            postings: dict[tuple[str, str], list[_Postings]] = {}
            offset = 0
            for directory, dead in segments:
                if not is_current(directory):
                    return None
                parts = json.loads((directory / "settings.json").read_text(encoding="utf-8"))["parts"]
                for k in range(parts):
                    d = directory / _PART.format(k)
                    part_ids = np.load(d / "ids.npy", mmap_mode="r")
                    docs = np.load(d / "chunk_documents.npy", mmap_mode="r")
                    live = ~np.isin(part_ids, dead) if len(dead) else None
                    if live is not None and live.all():
                        live = None
                    n_docs = int(docs.max()) + 1 if len(docs) else 0
                    doc_live = None
                    if live is not None:  # a document is replaced whole: its row goes with its passages
                        doc_live = np.bincount(docs, minlength=n_docs) > np.bincount(docs[~live], minlength=n_docs)
                    for cut in (WORDS, BIGRAMS):
                        postings.setdefault((cut, "passages"), []).append(
                            _Postings(d / cut / "passages", offset, live))
                        postings.setdefault((cut, "documents"), []).append(
                            _Postings(d / cut / "documents", doc_offset, doc_live))
                    ids.append(part_ids)
                    chunk_documents.append(docs)
                    doc_offsets.append(doc_offset)
                    offset += len(part_ids)
                    doc_offset += n_docs
            if not ids:
                return None

            def keywords(cut: str) -> Keywords:
                return Keywords(Bm25.of(postings[(cut, "passages")]), Bm25.of(postings[(cut, "documents")]))

            return cls(ByRow(ids), ByRow(chunk_documents, doc_offsets), keywords(WORDS), keywords(BIGRAMS),
                       [d for d, _ in segments])
        except (OSError, ValueError, KeyError, IndexError, AssertionError):
            return None  # a damaged keyword index: searched without until `index update` rewrites it

    def keywords(self, cut: str) -> Keywords:
        return self.words if cut == WORDS else self.bigrams

    @property
    def translations(self) -> dict[str, dict[str, float]]:
        """English -> Chinese corpus words (translate.py) of every segment, read on the
        first English question: the table of the union of the segments' vocabularies is
        the union of their tables (each entry's strength does not depend on the vocabulary)."""
        if self._translations is None:
            merged: dict[str, dict[str, float]] = {}
            try:
                for directory in self.directories:
                    table = json.loads((directory / TABLE_NAME).read_text(encoding="utf-8"))
                    for key, found in table.items():
                        slot = merged.setdefault(key, {})
                        for term, strength in found.items():
                            slot[term] = max(slot.get(term, 0.0), strength)
            except (OSError, ValueError):  # damaged: English questions go without until `index update`
                merged = {}
            self._translations = merged
        return self._translations

    @functools.cached_property
    def row_of(self) -> RowOf:
        """chunk id -> passage row"""
        return RowOf(self.ids)
