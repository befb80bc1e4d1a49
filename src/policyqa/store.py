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

from . import lexical
from .chunk import search_text
from .embed import ModelInfo
from .records import Chunk, Document, Meta

FORMAT = 2  # 2: documents.meta (JSON) and chunks.page
DB_NAME = "policyqa.sqlite3"
LOCK_NAME = "write.lock"
PAUSE_ENV = "POLICYQA_PAUSE_AT"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY, title TEXT NOT NULL, encoding TEXT NOT NULL,
    content_hash TEXT NOT NULL, chars INTEGER NOT NULL, indexed_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc TEXT NOT NULL REFERENCES documents(path) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    section TEXT, text TEXT NOT NULL, embed_hash TEXT NOT NULL, page INTEGER);
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
    page: int | None
    meta: Meta


@dataclass(frozen=True)
class Upsert:
    """A document to (re)write, with its chunks and the hashes of their embedded text."""

    doc: Document
    chunks: list[Chunk]
    embed_hashes: list[str]


def _meta(title: str, stored: str) -> Meta:
    fields = json.loads(stored or "{}")
    return Meta(title=fields.get("title") or title, issuer=fields.get("issuer"),
                doc_number=fields.get("doc_number"), date=fields.get("date"))


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

    def load_lexical(self, generation: int) -> "lexical.LexicalIndex | None":
        return lexical.LexicalIndex.load(self.dir, generation)

    def lexical_is_current(self) -> bool:
        return lexical.is_current(self.dir, self.generation())

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
        return {r.id: r for r in self._chunk_rows(f"c.id IN ({marks})", ids)}

    def chunks_of(self, doc: str) -> list[ChunkRow]:
        """Every chunk of one document, in document order."""
        return self._chunk_rows("c.doc = ? ORDER BY c.start", [doc])

    def _chunk_rows(self, where: str, args: list) -> list[ChunkRow]:
        rows = self.conn.execute(
            f'SELECT c.id, c.doc, d.title, c.ordinal, c.start, c."end", c.section, c.text, c.page, d.meta '
            f"FROM chunks c JOIN documents d ON d.path = c.doc WHERE {where}",
            args,
        )
        return [ChunkRow(*r[:9], meta=_meta(r[2], r[9])) for r in rows]

    def documents(self) -> list[dict]:
        rows = self.conn.execute(
            "SELECT d.path, d.title, d.content_hash, d.chars, COUNT(c.id), d.meta FROM documents d "
            "LEFT JOIN chunks c ON c.doc = d.path GROUP BY d.path ORDER BY d.path"
        )
        return [dict(doc=p, title=t, content_hash=h, chars=n, chunks=k, meta=_meta(t, m)) for p, t, h, n, k, m in rows]

    def document_meta(self) -> dict[str, Meta]:
        return {p: _meta(t, m) for p, t, m in self.conn.execute("SELECT path, title, meta FROM documents")}

    def chunk_ids_of(self, docs: Iterable[str]) -> np.ndarray:
        docs = list(docs)
        ids: list[int] = []
        for i in range(0, len(docs), 500):
            part = docs[i:i + 500]
            marks = ",".join("?" * len(part))
            ids.extend(r[0] for r in self.conn.execute(f"SELECT id FROM chunks WHERE doc IN ({marks})", part))
        return np.array(sorted(ids), dtype=np.int64)

    def document_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT path, content_hash FROM documents"))

    def skipped(self) -> list[dict]:
        return [dict(doc=d, reason=r) for d, r in self.conn.execute("SELECT doc, reason FROM skipped ORDER BY doc")]

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def size_bytes(self) -> int:
        """Bytes of the current generation: database, vector file and keyword index."""
        generation = self.generation()
        names = {DB_NAME, DB_NAME + "-wal", vectors_name(generation)}
        files = [p for p in self.dir.iterdir() if p.name in names]
        files += [p for p in lexical.generation_dir(self.dir, generation).rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)

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
        keep: Iterable[str] = (),
    ) -> int:
        """Make a new generation current: write its vector file, then switch in one
        transaction. `replace_all` drops every document but those in `keep` (files that
        can no longer be read keep their last indexed version). Returns the new
        generation number."""
        generation = self.generation() + 1
        old = self.model_info()
        if old and not replace_all and (old.fingerprint != model.fingerprint or old.name != model.name):
            raise StoreError(f"the index was built with {old.name}; use `policyqa index build` to change model")
        changed = {u.doc.path for u in upserts}
        next_id = (self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]) + 1
        keep = set(keep)
        keep_rows = [
            (cid, h) for cid, doc, h in self.conn.execute("SELECT id, doc, embed_hash FROM chunks")
            if (doc in keep if replace_all else doc not in changed and doc not in removed)
        ]
        new_rows = []
        for u in upserts:
            for c, h in zip(u.chunks, u.embed_hashes):
                new_rows.append((next_id, u.doc.path, c, h))
                next_id += 1
        ids = np.array([cid for cid, _ in keep_rows] + [r[0] for r in new_rows], dtype=np.int64)
        hashes = [h for _, h in keep_rows] + [r[3] for r in new_rows]
        self._write_vectors(generation, ids, self._vectors_for(hashes, model.dim), model.dim)
        self._write_lexical(generation, [cid for cid, _ in keep_rows], new_rows, upserts)
        pause_point("vectors-written")

        stamp = now()
        with self._transaction():
            if replace_all:
                kept = sorted(keep)
                self.conn.execute(f"DELETE FROM documents WHERE path NOT IN ({','.join('?' * len(kept))})", kept)
            for path in list(removed) + list(changed):
                self.conn.execute("DELETE FROM documents WHERE path = ?", (path,))
            for u in upserts:
                d = u.doc
                self.conn.execute(
                    "INSERT INTO documents (path, title, encoding, content_hash, chars, indexed_at, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (d.path, d.title, d.encoding, d.content_hash, len(d.text), stamp,
                     json.dumps(d.meta.as_dict() if d.meta else {}, ensure_ascii=False)),
                )
            self.conn.executemany(
                'INSERT INTO chunks (id, doc, ordinal, start, "end", section, text, embed_hash, page) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(cid, doc, c.ordinal, c.start, c.end, c.section, c.text, h, c.page) for cid, doc, c, h in new_rows],
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
        lexical.remove_old(self.dir, generation)
        return generation

    def _write_lexical(self, generation: int, keep_ids: list[int], new_rows: list, upserts: list[Upsert]) -> None:
        """The keyword index of the new generation, over the same contextual text that is
        embedded (title, section, passage), in the same id order as its vector file, and
        over whole documents (title and passages)."""
        rows = self.conn.execute(
            'SELECT c.id, c.doc, d.title, c.ordinal, c.start, c."end", c.text, c.section '
            "FROM chunks c JOIN documents d ON d.path = c.doc"
        )
        kept = {r[0]: (r[1], r[2], Chunk(r[1], *r[3:])) for r in rows}
        chunks = [kept[i] for i in keep_ids]
        titles = {u.doc.path: u.doc.title for u in upserts}
        chunks += [(doc, titles[doc], c) for _, doc, c, _ in new_rows]
        documents: dict[str, list[str]] = {}
        for doc, title, c in sorted(chunks, key=lambda x: (x[0], x[2].ordinal)):
            documents.setdefault(doc, [title]).append(c.text)
        lexical.write(
            self.dir, generation, np.array(keep_ids + [r[0] for r in new_rows], dtype=np.int64),
            [search_text(title, c) for _, title, c in chunks], [doc for doc, _, _ in chunks],
            {doc: "\n".join(parts) for doc, parts in documents.items()},
        )

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
