"""Where an index lives, and what the rest of policyqa needs of it.

Owns: the seam between the steps that use an index (search.Searcher, indexer.update,
context, the CLI and chat) and the stores that keep one: `IndexStore` is every method
those callers use, `Vectors` what a search asks of a generation's vectors; `Location`
names an index (a local directory, or a Milvus URI), and `open_store` / `writing` open it.
The local store (store.py) is the default and is used exactly as before; a Milvus URI
(--store, POLICYQA_STORE) opens milvus.MilvusStore, which imports pymilvus only then.
The seam is the store's reading and writing surface rather than a second Searcher:
search, fusion and the update diff stay one code path, so both backends rank alike.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .embed import ModelInfo
from .records import ChunkRow, Meta

if TYPE_CHECKING:
    from .lexical import LexicalIndex
    from .store import DocumentRow, KeywordTexts, NextChunk, Plan, SkippedRow, Upsert

STORE_ENV = "POLICYQA_STORE"


class Vectors(Protocol):
    """A generation's vectors as a search uses them (vectors.Vectors, milvus.MilvusVectors)."""

    @property
    def ntotal(self) -> int: ...

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def scores(self, q: np.ndarray, ids: list[int]) -> np.ndarray: ...


class IndexStore(Protocol):
    """One open index: what readers and the indexer call (store.Store, milvus.MilvusStore)."""

    # reading
    def snapshot(self) -> AbstractContextManager[None]: ...
    def renew_snapshot(self) -> None: ...
    def generation(self) -> int: ...
    def model_info(self) -> ModelInfo | None: ...
    def meta(self) -> dict[str, str]: ...
    def load_vectors(self, generation: int) -> Vectors: ...
    def load_lexical(self, generation: int) -> LexicalIndex | None: ...
    def chunk_rows(self, ids: Iterable[int]) -> dict[int, ChunkRow]: ...
    def chunks_of(self, doc: str) -> list[ChunkRow]: ...
    def documents(self) -> list[DocumentRow]: ...
    def document_meta(self) -> dict[str, Meta]: ...
    def chunk_ids_of(self, docs: Iterable[str]) -> np.ndarray: ...
    def document_hashes(self) -> dict[str, str]: ...
    def file_stats(self) -> dict[str, str]: ...
    def record_stats(self, stats: dict[str, tuple[str, str]]) -> None: ...
    def skipped(self) -> list[SkippedRow]: ...
    def counts(self) -> tuple[int, int]: ...
    def size_bytes(self) -> int: ...
    def vector_layout(self) -> dict | None: ...
    def checksums(self) -> dict[str, str] | None: ...
    def damaged(self, full: bool = True, only: str | None = None) -> list[str]: ...
    def close(self) -> None: ...

    # writing
    def needs_rewrite(self) -> bool: ...
    def cached_vectors(self, hashes: Iterable[str]) -> set[str]: ...
    def lost_vectors(self) -> list[NextChunk]: ...
    def cache_vectors(self, hashes: list[str], vectors: np.ndarray) -> None: ...
    def plan(self, model: ModelInfo, upserts: list[Upsert], removed: list[str], replace_all: bool = False,
             keep: Iterable[str] = ()) -> Plan: ...
    def commit(self, plan: Plan, settings: dict, skipped: dict[str, str],
               keywords: Callable[[Sequence[NextChunk]], KeywordTexts], optimize: bool = False) -> int: ...


@dataclass(frozen=True)
class MilvusLocation:
    """An index kept in Milvus: `uri` as pymilvus's MilvusClient takes it (a server's
    http(s)://HOST:PORT, or a milvus-lite NAME.db file)."""

    uri: str

    def __str__(self) -> str:
        return self.uri

    @property
    def flag(self) -> str:
        return f"--store {self.uri}"


Location = Path | MilvusLocation


def location(index_dir: Path, store_uri: str | None) -> Location:
    """The index a command uses: the Milvus store at `store_uri` if one is given, else the
    local index directory."""
    return MilvusLocation(store_uri) if store_uri else index_dir


def flag(where: Location) -> str:
    """The command-line option that names `where`."""
    return where.flag if isinstance(where, MilvusLocation) else f"--index {where}"


def open_store(where: Location) -> IndexStore:
    """The index at `where`, for reading; raises store.NoIndex when there is none."""
    if isinstance(where, MilvusLocation):
        from .milvus import MilvusStore

        return MilvusStore.open(where)
    from .store import Store

    return Store.open(where)


@contextmanager
def writing(where: MilvusLocation, timeout: float, on_wait: Callable[[str], None] | None = None,
            start_over: Callable[[str], None] | None = None) -> Iterator[IndexStore]:
    """The Milvus index at `where` for writing, created when missing, its writer lock held.
    (The local store keeps its own path through indexer.update, unchanged.)"""
    from .milvus import MilvusStore, writer_lock

    with writer_lock(where, timeout, on_wait):
        store = MilvusStore.create_or_open(where)
        try:
            yield store
        finally:
            store.close()
