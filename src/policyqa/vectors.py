"""The dense vectors of one index generation: which FAISS index holds them, and searching it.

Owns: exact search (a flat index) while the corpus is small; past EXACT_UP_TO vectors an IVF
index trained on the corpus, whose nprobe is chosen on every build for RECALL_TARGET against
exact search on questions made of the corpus's own vectors (the Layout records the recall
measured, for `index status`); opening an IVF file memory-mapped, so a reader maps it instead of copying
it; and searching only among a filter's chunk ids (what is admitted stays exact). The sizes
and recall are printed by bench/scale.py.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

# Past this many vectors an exhaustive scan costs more per question than an IVF index's
# training costs per build, and the flat file copied into every reader dominates a cold start.
# POLICYQA_EXACT_UP_TO sets it lower, so that the kill -9 harness runs on IVF segments.
EXACT_UP_TO = int(os.environ.get("POLICYQA_EXACT_UP_TO", "50000"))
# Midpoint questions (see _tune) are a proxy: at a million passages real questions got about
# 0.01 less recall than they did (bench/scale.py), so the build aims 0.01 above the 0.98
# that real questions should get.
RECALL_TARGET = 0.99
RECALL_K = 10
RECALL_QUERIES = 500
TRAIN_PER_LIST = 64  # k-means points per list: faiss warns below 39
NPROBES = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
SEED = 0  # the sample and the training are reproducible
# faiss's stub declares the SearchParameters classes without the keyword arguments their SWIG
# constructors take (sel=, nprobe=): hence the call-arg ignores where they are made.


@dataclass(frozen=True)
class Layout:
    """What a build chose, and the recall@10 it measured against exact search (1.0 when exact)."""

    kind: str  # "exact" or "ivf"
    vectors: int
    nlist: int = 0
    nprobe: int = 0
    recall_at_10: float = 1.0
    recall_queries: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def nlist_for(n: int) -> int:
    # n // 4 only binds for the tiny IVF indexes of tests (POLICYQA_EXACT_UP_TO)
    return max(1, min(n // 4, int(4 * math.sqrt(n))))


def build(ids: np.ndarray, vectors: np.ndarray, dim: int, previous: Path | None = None) -> tuple[faiss.Index, Layout]:
    """The index for these vectors (unit length, one per chunk id). An IVF index reuses the
    lists of the `previous` generation's file while the corpus is within a factor 2 of its
    size, so that a small update does not retrain."""
    n = len(ids)
    if n <= EXACT_UP_TO:
        exact = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            exact.add_with_ids(vectors, ids)
        return exact, Layout("exact", n)
    quantizer = faiss.IndexFlatIP(dim)
    prior = _ivf(previous) if previous is not None else None
    if prior is not None and prior.d == dim and n / 2 <= prior.ntotal <= 2 * n:
        quantizer.add(prior.quantizer.reconstruct_n(0, prior.nlist))
        index = faiss.IndexIVFFlat(quantizer, dim, prior.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist_for(n), faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(SEED)
        sample = np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * index.nlist), replace=False))
        index.cp.seed = SEED
        index.train(vectors[sample])
    index.add_with_ids(vectors, ids)
    nprobe, recall, queries = _tune(index, vectors)
    index.nprobe = nprobe
    return index, Layout("ivf", n, index.nlist, nprobe, recall, queries)


def _ivf(path: Path) -> faiss.IndexIVF | None:
    try:
        opened = Vectors.open(path)
    except RuntimeError:  # the first generation, or one a rebuild removed
        return None
    return opened.index if isinstance(opened.index, faiss.IndexIVF) else None


def _tune(index: faiss.IndexIVF, vectors: np.ndarray) -> tuple[int, float, int]:
    """The smallest nprobe of NPROBES whose recall@10 reaches RECALL_TARGET, with that recall.
    The questions are midpoints of two random corpus vectors: a corpus vector itself lies
    inside its own list and overstates recall for real questions by far more than midpoints,
    which lie between lists as questions do (bench/scale.py prints both). A result counts
    when it scores at least the exact tenth neighbour's score, so that duplicates (copies of
    one passage) count whichever of them comes back."""
    rng = np.random.default_rng(SEED)
    pairs = rng.integers(0, len(vectors), size=(2, min(len(vectors), RECALL_QUERIES)))
    queries = vectors[pairs[0]] + vectors[pairs[1]]
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    exact_scores, _ = faiss.knn(queries, vectors, RECALL_K, metric=faiss.METRIC_INNER_PRODUCT)
    floor = exact_scores[:, RECALL_K - 1] - 1e-5
    recall = 0.0
    for nprobe in NPROBES + (index.nlist,):
        nprobe = min(nprobe, index.nlist)
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        scores, found = index.search(queries, RECALL_K, params=params)
        recall = float(((scores >= floor[:, None]) & (found >= 0)).sum() / (RECALL_K * len(queries)))
        if recall >= RECALL_TARGET or nprobe == index.nlist:
            return nprobe, recall, len(queries)
    raise AssertionError("unreachable: the last nprobe scans every list")


class Vectors:
    """One segment's vectors, opened for search: an exact index read into memory as
    before, an IVF index memory-mapped (its lists stay in the page cache, shared by
    every reader). `ids` (ascending) are the chunk ids it holds, `positions` where an IVF
    index keeps each of them (list_positions); None when not known."""

    def __init__(self, index: faiss.Index, ids: np.ndarray | None = None, positions: np.ndarray | None = None):
        self.index = index
        self.ivf = isinstance(index, faiss.IndexIVF)
        self.ids = ids
        self.positions = positions

    @classmethod
    def open(cls, path: Path, ids: np.ndarray | None = None, positions: np.ndarray | None = None) -> Vectors:
        """Raises RuntimeError (faiss's) when the file is missing or unreadable."""
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        if isinstance(index, faiss.IndexIVF):
            # Mapped lists prefetch with 32 threads before every search by default: on a
            # few cores that costs more than the scan itself (bench/scale.py).
            assert index.invlists is not None, "an IVF index has its lists"
            mapped = faiss.downcast_InvertedLists(index.invlists)
            assert isinstance(mapped, faiss.OnDiskInvertedLists), "what IO_FLAG_MMAP makes of them"
            mapped.prefetch_nthread = 0
            # A question is one query: faiss's default spreads queries over the cores, so
            # one query's lists would be scanned by one core; these are spread instead.
            index.parallel_mode = 1
        return cls(index, ids, positions)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) for each row of q, among `allowed` ids only if given.
        With a filter an IVF search probes as many more lists as the filter is smaller than
        the index, so that it scans as many admitted vectors as an unfiltered search scans
        vectors; a filter of a few documents thus scans every list and is exact."""
        if allowed is None:
            return self.index.search(q, k)
        selector = faiss.IDSelectorBatch(allowed)
        index = self.index
        if not isinstance(index, faiss.IndexIVF):
            return index.search(q, k, params=faiss.SearchParameters(sel=selector))  # type: ignore[call-arg]
        nprobe = min(index.nlist, math.ceil(index.nprobe * self.ntotal / max(1, len(allowed))))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)  # type: ignore[call-arg]
        return index.search(q, k, params=params)

    def search_excluding(self, q: np.ndarray, k: int, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) for each row of q among the vectors not in `dead`."""
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        params: faiss.SearchParameters
        if isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)  # type: ignore[call-arg]
        else:
            params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        return self.index.search(q, k, params=params)

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Which of these ids the index holds (a generation's one vector file, written
        before segments kept ids, holds every chunk of it)."""
        if self.ids is None:
            return np.asarray(ids) >= 0
        held = self.ids
        if not len(held):
            return np.zeros(len(ids), dtype=bool)
        at = np.minimum(np.searchsorted(held, ids), len(held) - 1)
        return np.asarray(held)[at] == ids

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these ids (all in the index), in their order: the index is
        the only copy of a committed vector."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.ivf:
            return self.index.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.index.d), np.float32)
        index = self.index
        assert isinstance(index, faiss.IndexIVF)
        if self.positions is None:  # a segment written before positions were kept
            self.ids, self.positions = list_positions(index)
        held = self.ids
        assert held is not None, "an IVF segment's positions come with its ids"
        at = np.searchsorted(held, ids)
        return _from_lists(index, np.asarray(self.positions)[at])

    def scores(self, q: np.ndarray, ids: list[int]) -> np.ndarray:
        """The exact similarity of q to each of these ids (all in the index)."""
        return self.vectors(np.asarray(ids, dtype=np.int64)) @ q


def list_positions(index: faiss.IndexIVF) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending, where each is: list number << 32 | offset in the list) of every
    vector of an IVF index. Kept beside a segment's ids, so that a reader finds a few
    vectors by position instead of scanning every list or mapping ids in memory (faiss's
    direct map is a hash table for ids that are not 0..n-1)."""
    lists = index.invlists
    assert lists is not None, "an IVF index has its lists"
    ids, where = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for number in range(index.nlist):
        size = lists.list_size(number)
        if size:
            ids.append(faiss.rev_swig_ptr(lists.get_ids(number), size).copy())
            where.append((np.int64(number) << 32) | np.arange(size, dtype=np.int64))
    all_ids, all_where = np.concatenate(ids), np.concatenate(where)
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], all_where[order]


def _from_lists(index: faiss.IndexIVF, positions: np.ndarray) -> np.ndarray:
    """The vectors at these positions of an IVFFlat index's lists (whose codes are the
    float32 vectors themselves), read list by list from what is mapped."""
    lists = index.invlists
    assert lists is not None and isinstance(index, faiss.IndexIVFFlat), "flat codes are the vectors"
    out = np.empty((len(positions), index.d), dtype=np.float32)
    numbers, offsets = positions >> 32, positions & 0xFFFFFFFF
    order = np.argsort(numbers, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(numbers[order])) + 1):
        if not len(group):
            continue
        number = int(numbers[group[0]])
        size = lists.list_size(number)
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size)
        out[group] = codes.view(np.float32).reshape(size, index.d)[offsets[group]]
    return out


class Segments:
    """A generation's vectors: one index per segment, each with the chunk ids deleted since
    it was written (tombstones), searched as one index of the live vectors. A search asks
    each segment for its k best live vectors and keeps the k best of all; with one segment
    and no tombstones it is that segment's search, unchanged."""

    def __init__(self, segments: list[tuple[Vectors, np.ndarray]]):
        self.segments = [(v, np.asarray(dead, dtype=np.int64)) for v, dead in segments]
        self.ivf = any(v.ivf for v, _ in self.segments)

    @property
    def index(self) -> faiss.Index:
        """The largest segment's index (what `index status` describes)."""
        return max(self.segments, key=lambda s: s[0].ntotal)[0].index

    @property
    def ntotal(self) -> int:
        return sum(v.ntotal - len(dead) for v, dead in self.segments)

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) for each row of q among the live vectors, among
        `allowed` ids only if given (those are live: the caller reads them from the chunks)."""
        if len(self.segments) == 1 and not len(self.segments[0][1]):
            return self.segments[0][0].search(q, k, allowed)
        found_scores, found_ids = [], []
        for vectors, dead in self.segments:
            live = vectors.ntotal - len(dead)
            if live <= 0:
                continue
            if allowed is not None:
                scores, ids = vectors.search(q, min(k, live), allowed)
            elif len(dead):
                scores, ids = vectors.search_excluding(q, min(k, live), dead)
            else:
                scores, ids = vectors.search(q, min(k, live))
            found_scores.append(scores)
            found_ids.append(ids)
        if not found_scores:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, ids = np.hstack(found_scores), np.hstack(found_ids)
        scores = np.where(ids >= 0, scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return np.where(best_ids >= 0, best_scores, -3.4e38).astype(np.float32), best_ids

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of these ids, in their order; each is read from a segment
        that holds it (a tombstoned row still holds its vector)."""
        wanted = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(wanted), self.index.d), dtype=np.float32)
        todo = np.ones(len(wanted), dtype=bool)
        for vectors, _ in self.segments:
            here = todo & vectors.holds(wanted)
            if here.any():
                out[here] = vectors.vectors(wanted[here])
                todo &= ~here
        if todo.any():
            raise KeyError(f"{int(todo.sum())} ids are in no segment")
        return out

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Which of these ids some segment holds (live or tombstoned)."""
        found = np.zeros(len(ids), dtype=bool)
        for vectors, _ in self.segments:
            found |= vectors.holds(ids)
        return found

    def scores(self, q: np.ndarray, ids: list[int]) -> np.ndarray:
        """The exact similarity of q to each of these (live) ids."""
        return self.vectors(np.asarray(ids, dtype=np.int64)) @ q
