"""Finding the passages for a question.

Owns: the query embedding, the FAISS search over the current index generation (reloaded
when another process commits a new one), and dropping near-identical passages.
"""
from __future__ import annotations

import re
import time
import unicodedata

import numpy as np

from .embed import query_encoder
from .records import Hit
from .store import ChunkRow, Store, VectorsGone

FETCH_FACTOR = 4  # extra candidates so that near-duplicates can be dropped
DUPLICATE_JACCARD = 0.8
SWITCH_RETRIES = 3  # a reader can lose its snapshot's vector file to two quick commits


def normalized(text: str) -> str:
    """NFKC without whitespace: how passages are compared for sameness."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _shingles(text: str) -> set[str]:
    t = normalized(text)
    return {t[i:i + 3] for i in range(max(1, len(t) - 2))}


def near_duplicate(a: set[str], b: set[str]) -> bool:
    return len(a & b) / max(1, min(len(a), len(b))) >= DUPLICATE_JACCARD


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
        """Inside a snapshot: the vectors of the snapshot's generation."""
        for attempt in range(SWITCH_RETRIES + 1):
            generation = self.store.generation()
            if generation == self.generation:
                return
            model = self.store.model_info()
            if self.encoder is None or model != self.model:
                self.encoder = query_encoder(model)
                self.model = model
            try:
                self.vectors = self.store.load_vectors(generation)
            except VectorsGone:
                if attempt == SWITCH_RETRIES:
                    raise
                self.store.renew_snapshot()
                continue
            self.generation = generation
            return

    def search(self, query: str, k: int, offset: int = 0) -> tuple[list[Hit], dict[str, float]]:
        """The passages ranked offset..offset+k for `query`, with timings in ms."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with self.store.snapshot():
            self._refresh()
            timings["load_ms"] = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            q = self._query_vector(query)[None, :]
            timings["embed_ms"] = (time.perf_counter() - t1) * 1000
            t2 = time.perf_counter()
            fetch = min(self.vectors.ntotal, (offset + k) * FETCH_FACTOR)
            scores, ids = self.vectors.search(q, fetch) if fetch else (np.zeros((1, 0)), np.zeros((1, 0), int))
            rows = self.store.chunk_rows(i for i in ids[0] if i >= 0)
        hits = self._distinct(
            [(rows[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if int(i) in rows], offset + k
        )
        timings["search_ms"] = (time.perf_counter() - t2) * 1000
        return hits[offset:offset + k], timings

    def _query_vector(self, query: str) -> np.ndarray:
        if self._last is None or self._last[0] != query:
            self._last = (query, np.asarray(self.encoder.query(query), dtype=np.float32))
        return self._last[1]

    def similarity(self, query: str, texts: list[str]) -> np.ndarray:
        """Cosine of each text, embedded as a passage, with the query."""
        return np.asarray(self.encoder.passages(texts), dtype=np.float32) @ self._query_vector(query)

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
                Hit(row.id, row.doc, row.title, row.section, row.start, row.end, row.text, score, {"dense": score})
            )
            if len(out) == limit:
                break
        return out
