"""Finding the passages for a question.

Owns: the query embedding, the FAISS search over the current index generation (reloaded
when another process commits a new one), restricting it to the documents a Filter
admits, and dropping near-identical passages.
"""
from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from fnmatch import fnmatchcase

import numpy as np

from .embed import query_encoder
from .records import Hit, Meta
from .store import ChunkRow, Store

FETCH_FACTOR = 4  # extra candidates so that near-duplicates can be dropped
DUPLICATE_JACCARD = 0.8


def normalized(text: str) -> str:
    """NFKC without whitespace: how passages are compared for sameness."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _shingles(text: str) -> set[str]:
    t = normalized(text)
    return {t[i:i + 3] for i in range(max(1, len(t) - 2))}


def near_duplicate(a: set[str], b: set[str]) -> bool:
    return len(a & b) / max(1, min(len(a), len(b))) >= DUPLICATE_JACCARD


@dataclass(frozen=True)
class Filter:
    """Which documents a search may return. `doc` is a glob matched against the
    corpus-relative path (`*` crosses folders) or the file name; `after`/`before` are inclusive YYYY-MM-DD bounds on the
    document's date (a document without a date never passes a date bound); `issuer` is
    a case-insensitive substring of the issuing authority."""

    doc: str | None = None
    after: str | None = None
    before: str | None = None
    issuer: str | None = None

    def __bool__(self) -> bool:
        return any((self.doc, self.after, self.before, self.issuer))

    def admits(self, path: str, meta: Meta) -> bool:
        if self.doc and not (fnmatchcase(path, self.doc) or fnmatchcase(path.rsplit("/", 1)[-1], self.doc)):
            return False
        if (self.after or self.before) and not meta.date:
            return False
        if self.after and meta.date < self.after:
            return False
        if self.before and meta.date > self.before:
            return False
        return not self.issuer or self.issuer.casefold() in (meta.issuer or "").casefold()

    def chunk_ids(self, store: Store) -> np.ndarray:
        """The ids of every chunk of an admitted document (read inside a snapshot)."""
        return store.chunk_ids_of(p for p, m in store.document_meta().items() if self.admits(p, m))


class Searcher:
    """Answers searches against one index directory; cheap to keep open (chat)."""

    def __init__(self, store: Store):
        self.store = store
        self.generation = 0
        self.vectors = None
        self.encoder = None
        self.model = None
        self._last: tuple[str, np.ndarray] | None = None

    def _refresh(self) -> None:
        generation = self.store.generation()
        if generation == self.generation:
            return
        model = self.store.model_info()
        if self.encoder is None or model != self.model:
            self.encoder = query_encoder(model)
            self.model = model
            self._last = None
        self.vectors = self.store.load_vectors(generation)
        self.generation = generation

    def search(
        self, query: str, k: int, offset: int = 0, where: Filter | None = None
    ) -> tuple[list[Hit], dict[str, float]]:
        """The passages ranked offset..offset+k for `query` among those `where` admits,
        with timings in ms."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with self.store.snapshot():
            self._refresh()
            timings["load_ms"] = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            q = self._query_vector(query)[None, :]
            timings["embed_ms"] = (time.perf_counter() - t1) * 1000
            t2 = time.perf_counter()
            scores, ids = self._nearest(q, (offset + k) * FETCH_FACTOR, where)
            rows = self.store.chunk_rows(i for i in ids[0] if i >= 0)
        hits = self._distinct(
            [(rows[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in rows], offset + k
        )
        timings["search_ms"] = (time.perf_counter() - t2) * 1000
        return hits[offset:offset + k], timings

    def _nearest(self, q: np.ndarray, n: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search; a filter becomes an id selector, so the n best admitted chunks
        come back however few of the index they are."""
        params, total = None, self.vectors.ntotal
        if where:
            import faiss

            allowed = where.chunk_ids(self.store)
            params, total = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)), len(allowed)
        fetch = min(total, n)
        if not fetch:
            return np.zeros((1, 0), dtype=np.float32), np.zeros((1, 0), dtype=np.int64)
        return self.vectors.search(q, fetch, params=params)

    def _query_vector(self, query: str) -> np.ndarray:
        if self._last is None or self._last[0] != query:
            self._last = (query, np.asarray(self.encoder.query(query), dtype=np.float32))
        return self._last[1]

    @staticmethod
    def _distinct(ranked: list[tuple[ChunkRow, float]], limit: int) -> list[Hit]:
        out: list[Hit] = []
        seen: list[set[str]] = []
        for row, score in ranked:
            sh = _shingles(row.text)
            if any(near_duplicate(sh, s) for s in seen):
                continue
            seen.append(sh)
            out.append(
                Hit(row.id, row.doc, row.title, row.section, row.start, row.end, row.text, score, {"dense": score},
                    page=row.page, meta=row.meta)
            )
            if len(out) == limit:
                break
        return out
