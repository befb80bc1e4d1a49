"""A model that embeds instantly, for tests of the tuned parts (fusion, duplicates, the
found decision, answer sentences) that need vectors but not meaning: each text is the
normalised count vector of its character bigrams hashed into DIM buckets, so texts that
share words are near and others are not."""
from __future__ import annotations

import zlib

import numpy as np

from policyqa.embed import ModelInfo, register_model
from policyqa.terms import bigrams

NAME = "fake-bigrams"
DIM = 256


class FakeEncoder:
    info = ModelInfo(name=NAME, fingerprint="fake-bigrams-1", dim=DIM)

    def passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.vstack([self.query(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def query(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        for term in bigrams(text):
            v[zlib.crc32(term.encode()) % DIM] += 1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm else v


register_model(NAME, FakeEncoder)
