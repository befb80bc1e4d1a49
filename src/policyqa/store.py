"""The on-disk index: one SQLite database and versioned FAISS files beside it.

Owns: the schema, the embedding cache (content hash -> vector, so nothing is embedded
twice), the atomic switch from one index generation to the next, the single-writer lock,
and reading a consistent snapshot. The FAISS file of generation N is written and synced
before the SQLite transaction that makes N current, so the database never points at a
vector file that is missing or disagrees with its chunks. Nothing is pickled.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .embed import ModelInfo
from .records import Chunk, Document

FORMAT = 1
DB_NAME = "policyqa.sqlite3"
LOCK_NAME = "write.lock"
PAUSE_ENV = "POLICYQA_PAUSE_AT"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY, title TEXT NOT NULL, encoding TEXT NOT NULL,
    content_hash TEXT NOT NULL, chars INTEGER NOT NULL, indexed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc TEXT NOT NULL REFERENCES documents(path) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    section TEXT, text TEXT NOT NULL, embed_hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc);
CREATE TABLE IF NOT EXISTS embeddings (hash TEXT PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (doc TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


class StoreError(Exception):
    """An index that is missing, busy or unusable; the message is shown to the user."""


class NoIndex(StoreError):
    pass


class WriterBusy(StoreError):
    pass


class VectorsGone(StoreError):
    """A generation's vector file is missing: normally because two newer commits replaced it
    while a reader was switching, so the reader retries with the current generation."""


@dataclass(frozen=True)
class ChunkRow:
    id: int
    doc: str
    title: str
    ordinal: int
    start: int
    end: int
    section: str | None
    text: str


@dataclass(frozen=True)
class Upsert:
    """A document to (re)write, with its chunks and the hashes of their embedded text."""

    doc: Document
    chunks: list[Chunk]
    embed_hashes: list[str]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pause_point(name: str) -> None:
    """Where crash tests stop a writer (env POLICYQA_PAUSE_AT=name) to kill it at a known
    moment of its work: embedding, embedded, vectors-tmp, vectors-written, committing, committed."""
    if os.environ.get(PAUSE_ENV) == name:
        print(f"policyqa: paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def vectors_name(generation: int) -> str:
    return f"vectors-{generation:06d}.faiss"


class Store:
    """A connection to one index directory."""

    def __init__(self, index_dir: Path, conn: sqlite3.Connection):
        self.dir = index_dir
        self.conn = conn

    # ---- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: Path) -> "Store":
        db = index_dir / DB_NAME
        if not db.exists():
            raise NoIndex(f"no index in {index_dir}")
        store = cls(index_dir, _connect(db))
        if store.meta().get("format") != str(FORMAT):
            raise StoreError(
                f"the index in {index_dir} has an incompatible format; rebuild it with `policyqa index build`"
            )
        if store.generation() == 0:
            raise NoIndex(f"the index in {index_dir} has never been completed")
        return store

    @classmethod
    def create_or_open(cls, index_dir: Path) -> "Store":
        index_dir.mkdir(parents=True, exist_ok=True)
        conn = _connect(index_dir / DB_NAME)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (str(FORMAT),))
        store = cls(index_dir, conn)
        if store.meta()["format"] != str(FORMAT):
            raise StoreError(
                f"the index in {index_dir} has an incompatible format; remove it and run `policyqa index build`"
            )
        return store

    def close(self) -> None:
        self.conn.close()

    # ---- reading -------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def model_info(self) -> ModelInfo | None:
        m = self.meta()
        if "model" not in m:
            return None
        return ModelInfo(name=m["model"], fingerprint=m["model_fingerprint"], dim=int(m["dim"]))

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: everything read inside sees one committed generation."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def renew_snapshot(self) -> None:
        """Inside snapshot(): move it to the latest committed generation."""
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def load_vectors(self, generation: int):
        import faiss

        path = self.dir / vectors_name(generation)
        try:
            return faiss.read_index(str(path))
        except RuntimeError as exc:
            if not path.exists():
                raise VectorsGone(f"{path.name} is missing; run `policyqa index build`") from exc
            raise StoreError(f"cannot read {path.name}; run `policyqa index build`") from exc

    def chunk_rows(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            f'SELECT c.id, c.doc, d.title, c.ordinal, c.start, c."end", c.section, c.text '
            f"FROM chunks c JOIN documents d ON d.path = c.doc WHERE c.id IN ({marks})",
            ids,
        )
        return {r[0]: ChunkRow(*r) for r in rows}

    def documents(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT d.path, d.title, d.content_hash, d.chars, COUNT(c.id) FROM documents d "
            "LEFT JOIN chunks c ON c.doc = d.path GROUP BY d.path ORDER BY d.path"
        )
        return [dict(doc=p, title=t, content_hash=h, chars=n, chunks=k) for p, t, h, n, k in rows]

    def document_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT path, content_hash FROM documents"))

    def skipped(self) -> list[dict]:
        return [dict(doc=d, reason=r) for d, r in self.conn.execute("SELECT doc, reason FROM skipped ORDER BY doc")]

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def size_bytes(self) -> int:
        names = {DB_NAME, DB_NAME + "-wal", vectors_name(self.generation())}
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.name in names)

    # ---- writing ------------------------------------------------------------------
    def cached_vectors(self, hashes: Iterable[str]) -> set[str]:
        """Which of these embedding hashes are already stored."""
        hashes = list(hashes)
        found: set[str] = set()
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            marks = ",".join("?" * len(part))
            found.update(h for (h,) in self.conn.execute(f"SELECT hash FROM embeddings WHERE hash IN ({marks})", part))
        return found

    def cache_vectors(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Stored at once, in their own transaction, so interrupted embedding work resumes."""
        rows = [(h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)]
        with self._transaction():
            self.conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)", rows)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def commit(
        self,
        model: ModelInfo,
        settings: dict,
        upserts: list[Upsert],
        removed: list[str],
        skipped: dict[str, str],
        replace_all: bool = False,
    ) -> int:
        """Make a new generation current: write its vector file, then switch in one
        transaction. Returns the new generation number."""
        generation = self.generation() + 1
        old = self.model_info()
        if old and not replace_all and (old.fingerprint != model.fingerprint or old.name != model.name):
            raise StoreError(f"the index was built with {old.name}; use `policyqa index build` to change model")
        changed = {u.doc.path for u in upserts}
        next_id = (self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]) + 1
        keep_rows = [] if replace_all else [
            (cid, h) for cid, doc, h in self.conn.execute("SELECT id, doc, embed_hash FROM chunks")
            if doc not in changed and doc not in removed
        ]
        new_rows = []
        for u in upserts:
            for c, h in zip(u.chunks, u.embed_hashes):
                new_rows.append((next_id, u.doc.path, c, h))
                next_id += 1
        ids = np.array([cid for cid, _ in keep_rows] + [r[0] for r in new_rows], dtype=np.int64)
        hashes = [h for _, h in keep_rows] + [r[3] for r in new_rows]
        self._write_vectors(generation, ids, self._vectors_for(hashes, model.dim), model.dim)
        pause_point("vectors-written")

        stamp = now()
        with self._transaction():
            if replace_all:
                self.conn.execute("DELETE FROM documents")
            for path in list(removed) + list(changed):
                self.conn.execute("DELETE FROM documents WHERE path = ?", (path,))
            for u in upserts:
                d = u.doc
                self.conn.execute(
                    "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                    (d.path, d.title, d.encoding, d.content_hash, len(d.text), stamp),
                )
            self.conn.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cid, doc, c.ordinal, c.start, c.end, c.section, c.text, h) for cid, doc, c, h in new_rows],
            )
            self.conn.execute("DELETE FROM skipped")
            self.conn.executemany("INSERT INTO skipped VALUES (?, ?)", sorted(skipped.items()))
            values = {
                "generation": str(generation),
                "model": model.name,
                "model_fingerprint": model.fingerprint,
                "dim": str(model.dim),
                "chunker": json.dumps(settings, sort_keys=True),
                "built_at": stamp,
            }
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (stamp,))
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())
            self.conn.execute("DELETE FROM embeddings WHERE hash NOT IN (SELECT embed_hash FROM chunks)")
            pause_point("committing")
        pause_point("committed")
        self._remove_old_vectors(generation)
        return generation

    def _vectors_for(self, hashes: list[str], dim: int) -> np.ndarray:
        out = np.empty((len(hashes), dim), dtype=np.float32)
        position = {}
        for i, h in enumerate(hashes):
            position.setdefault(h, []).append(i)
        unique = list(position)
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            marks = ",".join("?" * len(part))
            for h, blob in self.conn.execute(f"SELECT hash, vector FROM embeddings WHERE hash IN ({marks})", part):
                out[position.pop(h)] = np.frombuffer(blob, dtype=np.float32)
        if position:
            raise StoreError(f"{len(position)} chunks have no stored vector; run `policyqa index update`")
        return out

    def _write_vectors(self, generation: int, ids: np.ndarray, vectors: np.ndarray, dim: int) -> None:
        import faiss

        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if len(ids):
            index.add_with_ids(vectors, ids)
        final = self.dir / vectors_name(generation)
        tmp = final.with_suffix(".tmp")
        faiss.write_index(index, str(tmp))
        pause_point("vectors-tmp")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.dir)

    def _remove_old_vectors(self, generation: int) -> None:
        """Keep the previous generation for readers that are switching right now."""
        for p in self.dir.glob("vectors-*"):
            try:
                n = int(p.name.split("-")[1].split(".")[0])
            except ValueError:
                continue
            if n < generation - 1 or (n > generation):
                p.unlink(missing_ok=True)

    @contextmanager
    def writer_lock(self, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Held while writing. The OS drops the lock with its process, so a killed writer
        never leaves a stale lock behind."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.dir / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait and timeout > 0:
                on_wait(f"another process is updating {self.dir}; waiting up to {timeout:g} s for it to finish")
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise WriterBusy(
                    f"another process is still updating {self.dir} after {timeout:g} s; "
                    "try again when it has finished (or wait longer with --wait SECONDS)"
                ) from None
        try:
            yield
        finally:
            lock.release()
