"""The on-disk index: one SQLite database and versioned FAISS files beside it.

Owns: the schema, the embedding cache (content hash -> vector, so nothing is embedded
twice), the atomic switch from one index generation to the next, the single-writer lock,
and reading a consistent snapshot. The FAISS file and keyword index of generation N are
written and synced before the SQLite transaction that makes N current, and that
transaction records their checksums, so the database never points at a file that is
missing, damaged or disagrees with its chunks. What goes into the keyword index is the
indexer's to say: the store is handed its texts. Nothing is pickled.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import files, lexical
from .embed import ModelInfo
from .errors import DamagedIndex, DiskFull, UserError
from .records import Chunk, ChunkRow, Document, Meta

if TYPE_CHECKING:  # vectors.py imports faiss, which commands that search nothing never load
    from . import vectors as dense

FORMAT = 2  # 2: documents.meta (JSON) and chunks.page
DB_NAME = "policyqa.sqlite3"
LOCK_NAME = "write.lock"
PAUSE_ENV = "POLICYQA_PAUSE_AT"
FULL_CHECK_BYTES = 64 << 20  # vector files up to this size are checksummed whenever opened
VECTORS_PREFIX = "vectors"
FULL_DISK_FREE = 1 << 20  # bytes: less free space than this after a failed write means a full disk
BATCH = 500  # values per `IN (...)`: SQLite before 3.32 allows 999 parameters a statement

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


class StoreError(UserError):
    """An index that is missing, busy or unusable; the message is shown to the user."""


class NoIndex(StoreError):
    pass


class WriterBusy(StoreError):
    pass


class VectorsGone(StoreError):
    """A generation's vector file is missing: normally because two newer commits replaced it
    while a reader was switching, so the reader retries with the current generation."""


@dataclass(frozen=True)
class DocumentRow:
    doc: str
    title: str
    content_hash: str
    chars: int
    chunks: int
    meta: Meta


@dataclass(frozen=True)
class SkippedRow:
    doc: str
    reason: str


@dataclass(frozen=True)
class Upsert:
    """A document to (re)write, with its chunks and the hashes of their embedded text."""

    doc: Document
    chunks: list[Chunk]
    embed_hashes: list[str]


@dataclass(frozen=True)
class NextChunk:
    """A chunk of the next generation, under the id it has there."""

    id: int
    title: str
    chunk: Chunk
    embed_hash: str


@dataclass(frozen=True)
class Plan:
    """The next generation: which documents go and come, and its chunks in the order of
    its vector file (kept ones first, then the new ones)."""

    generation: int
    model: ModelInfo
    upserts: list[Upsert]
    removed: list[str]
    replace_all: bool
    keep: frozenset[str]
    chunks: list[NextChunk]


@dataclass(frozen=True)
class KeywordTexts:
    """What the keyword index of a generation is built over: the text of each of the
    plan's chunks, in its order, and of each whole document."""

    passages: list[str]
    documents: dict[str, str]


def _meta(title: str, stored: str) -> Meta:
    fields = json.loads(stored or "{}")
    return Meta(title=fields.get("title") or title, issuer=fields.get("issuer"),
                doc_number=fields.get("doc_number"), date=fields.get("date"))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        # Nobody can write here, so the database cannot change under us: "immutable" reads
        # it without the -shm file SQLite could not create; commits still in a -wal file
        # need the read-only WAL mode (and the -shm file a writer left beside it).
        wal = Path(f"{path}-wal")
        mode = "mode=ro" if wal.exists() and wal.stat().st_size else "immutable=1"
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _select_in(conn: sqlite3.Connection, sql: str, values: Iterable) -> Iterator[tuple]:
    """The rows of `sql`, whose `{marks}` is an IN list, for all `values`, in batches."""
    values = list(values)
    for i in range(0, len(values), BATCH):
        part = values[i:i + BATCH]
        yield from conn.execute(sql.format(marks=",".join("?" * len(part))), part)


def _check(conn: sqlite3.Connection) -> None:
    """Raises DatabaseError unless the database file reads as sound."""
    problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0])


def _readable_embeddings(db: Path) -> list[tuple[str, bytes]]:
    """The embedding cache rows of a damaged database that can still be read and look
    like vectors of the index's dimension (finite floats)."""
    rows: list[tuple[str, bytes]] = []
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        dim = int(conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()[0])
        for h, blob in conn.execute("SELECT hash, vector FROM embeddings"):
            if isinstance(h, str) and isinstance(blob, bytes) and len(blob) == 4 * dim \
                    and np.isfinite(np.frombuffer(blob, dtype=np.float32)).all():
                rows.append((h, blob))
    except (sqlite3.Error, TypeError, ValueError):
        pass  # what was read before the damaged page is kept
    finally:
        conn.close()
    return rows


def _start_over(db: Path) -> tuple[sqlite3.Connection, int]:
    """An empty database in place of a damaged one, with what of its embedding cache can
    still be read (a rebuild then embeds only what was lost)."""
    cache = _readable_embeddings(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = _connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?)", cache)
    conn.execute("COMMIT")
    return conn, len(cache)


def _disk_full(exc: BaseException, directory: Path) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    if not isinstance(exc, OSError):
        return False
    # numpy's writes report a short write without an errno
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return exc.errno is None and shutil.disk_usage(directory).free < FULL_DISK_FREE


def pause_point(name: str) -> None:
    """Where crash tests stop a writer (env POLICYQA_PAUSE_AT=name) to kill it at a known
    moment of its work: embedding, embedded, vectors-tmp, vectors-written, committing, committed."""
    if os.environ.get(PAUSE_ENV) == name:
        print(f"policyqa: paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def vectors_name(generation: int) -> str:
    return f"{VECTORS_PREFIX}-{generation:06d}.faiss"


class Store:
    """A connection to one index directory."""

    def __init__(self, index_dir: Path, conn: sqlite3.Connection):
        self.dir = index_dir
        self.conn = conn

    # ---- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: Path) -> Store:
        db = index_dir / DB_NAME
        if not db.exists():
            raise NoIndex(f"no index in {index_dir}")
        read_only = not os.access(index_dir, os.W_OK) or not os.access(db, os.W_OK)
        store = cls(index_dir, _connect(db, read_only))
        if store.meta().get("format") != str(FORMAT):
            raise StoreError(
                f"the index in {index_dir} has an incompatible format; rebuild it with `policyqa index build`"
            )
        if store.generation() == 0:
            raise NoIndex(f"the index in {index_dir} has never been completed")
        return store

    @classmethod
    def create_or_open(cls, index_dir: Path, start_over: Callable[[str], None] | None = None) -> Store:
        """The index for writing, created when missing. A damaged database fails (see
        errors.user_error); given `start_over`, it is instead replaced by an empty one that
        keeps what of its embedding cache can still be read, and `start_over` is told."""
        index_dir.mkdir(parents=True, exist_ok=True)
        db = index_dir / DB_NAME
        try:
            conn = _connect(db)
            if start_over and db.exists():
                _check(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            if not start_over or isinstance(exc, sqlite3.OperationalError):
                raise
            conn.close()
            conn, kept = _start_over(db)
            start_over(f"the index database was damaged ({exc}); starting over, {kept} cached vectors kept")
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

    def vector_layout(self) -> dict | None:
        """How the current generation's vectors are indexed (vectors.Layout), if recorded."""
        stored = self.meta().get("vectors")
        return json.loads(stored) if stored else None

    def model_info(self) -> ModelInfo | None:
        m = self.meta()
        if "model" not in m:
            return None
        return ModelInfo(name=m["model"], fingerprint=m["model_fingerprint"], dim=int(m["dim"]))

    def checksums(self) -> dict[str, str] | None:
        """Path (relative to the index directory) -> checksum of each file of the current
        generation; None for a generation written before checksums were kept."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'files'").fetchone()
        return json.loads(row[0]) if row else None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: everything read inside sees one committed generation."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def load_lexical(self, generation: int) -> lexical.LexicalIndex | None:
        """Inside snapshot(): the keyword index, or None when it is outdated, incomplete
        or damaged (search goes on with vectors alone; `index update` rewrites it). Sizes
        are checked here, contents by `index update` and `index status --verify`."""
        if self.damaged(full=False, only=lexical.PREFIX):
            return None
        return lexical.LexicalIndex.load(self.dir, generation)

    def renew_snapshot(self) -> None:
        """Inside snapshot(): move it to the latest committed generation."""
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def load_vectors(self, generation: int) -> dense.Vectors:
        """Inside snapshot(): the generation's FAISS index, its checksum verified."""
        from . import vectors as dense

        path = self.dir / vectors_name(generation)
        recorded = (self.checksums() or {}).get(path.name)
        try:
            # A generation's file is never changed in place, so what is checked is what is
            # read. A large (memory-mapped, approximate) index is checked by size here: its
            # CRC would read the whole file where a search reads a few lists; `index update`
            # and `index status --verify` check every byte.
            if recorded and not files.matches(path, recorded, full=files.size_of(recorded) <= FULL_CHECK_BYTES):
                raise DamagedIndex(f"{path.name} in {self.dir} is damaged; `policyqa index update` rewrites it")
            return dense.Vectors.open(path)
        except FileNotFoundError:
            raise VectorsGone(f"{path.name} is missing; run `policyqa index update`") from None
        except RuntimeError as exc:
            if not path.exists():
                raise VectorsGone(f"{path.name} is missing; run `policyqa index update`") from exc
            raise DamagedIndex(f"cannot read {path.name}; `policyqa index update` rewrites it") from exc

    def damaged(self, full: bool = True, only: str | None = None) -> list[str]:
        """The files of the current generation that are missing or differ from what was
        written (by size, or with `full` by checksum too); those under `only` if given.
        (None of a generation written before checksums were kept.)"""
        out = []
        for name, checksum in sorted((self.checksums() or {}).items()):
            if only and not name.startswith(only):
                continue
            path = self.dir / name
            try:
                ok = files.matches(path, checksum, full)
            except OSError:
                ok = False
            if not ok:
                out.append(name)
        return out

    def needs_rewrite(self) -> bool:
        """Whether the current generation's files must be written again from the database:
        never completed, an outdated keyword index, no checksums yet, or a file missing or
        damaged."""
        generation = self.generation()
        return (generation == 0 or not lexical.is_current(self.dir, generation) or self.checksums() is None
                or bool(self.damaged()))

    def chunk_rows(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {r.chunk_id: r for r in self._chunk_rows(f"c.id IN ({marks})", ids)}

    def chunks_of(self, doc: str) -> list[ChunkRow]:
        """Every chunk of one document, in document order."""
        return self._chunk_rows("c.doc = ? ORDER BY c.start", [doc])

    def _chunk_rows(self, where: str, args: list) -> list[ChunkRow]:
        rows = self.conn.execute(
            f'SELECT c.id, c.doc, d.title, c.section, c.start, c."end", c.text, c.page, d.meta '
            f"FROM chunks c JOIN documents d ON d.path = c.doc WHERE {where}",
            args,
        )
        return [ChunkRow(*r[:7], page=r[7], meta=_meta(r[2], r[8])) for r in rows]

    def documents(self) -> list[DocumentRow]:
        rows = self.conn.execute(
            "SELECT d.path, d.title, d.content_hash, d.chars, COUNT(c.id), d.meta FROM documents d "
            "LEFT JOIN chunks c ON c.doc = d.path GROUP BY d.path ORDER BY d.path"
        )
        return [DocumentRow(p, t, h, n, k, _meta(t, m)) for p, t, h, n, k, m in rows]

    def document_meta(self) -> dict[str, Meta]:
        return {p: _meta(t, m) for p, t, m in self.conn.execute("SELECT path, title, meta FROM documents")}

    def chunk_ids_of(self, docs: Iterable[str]) -> np.ndarray:
        ids = [i for (i,) in _select_in(self.conn, "SELECT id FROM chunks WHERE doc IN ({marks})", docs)]
        return np.array(sorted(ids), dtype=np.int64)

    def document_hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT path, content_hash FROM documents"))

    def skipped(self) -> list[SkippedRow]:
        return [SkippedRow(d, r) for d, r in self.conn.execute("SELECT doc, reason FROM skipped ORDER BY doc")]

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def size_bytes(self) -> int:
        """Bytes of the current generation: database, vector file and keyword index."""
        generation = self.generation()
        names = {DB_NAME, DB_NAME + "-wal", vectors_name(generation)}
        paths = [p for p in self.dir.iterdir() if p.name in names]
        paths += [p for p in lexical.generation_dir(self.dir, generation).rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in paths)

    # ---- writing ------------------------------------------------------------------
    def cached_vectors(self, hashes: Iterable[str]) -> set[str]:
        """Which of these embedding hashes are already stored."""
        return {h for (h,) in _select_in(self.conn, "SELECT hash FROM embeddings WHERE hash IN ({marks})", hashes)}

    def cache_vectors(self, hashes: list[str], vectors: np.ndarray) -> None:
        """Stored at once, in their own transaction, so interrupted embedding work resumes."""
        rows = [(h, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)]
        with self._disk_space(), self._transaction():
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

    @contextmanager
    def _disk_space(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.OperationalError) as exc:
            if _disk_full(exc, self.dir):
                raise DiskFull(f"no space left on the index's disk ({self.dir}); free some space and run the "
                               "command again") from exc
            raise

    def plan(
        self,
        model: ModelInfo,
        upserts: list[Upsert],
        removed: list[str],
        replace_all: bool = False,
        keep: Iterable[str] = (),
    ) -> Plan:
        """The next generation. `replace_all` drops every document but those in `keep`
        (files that can no longer be read keep their last indexed version)."""
        old = self.model_info()
        if old and not replace_all and (old.fingerprint != model.fingerprint or old.name != model.name):
            raise StoreError(f"the index was built with {old.name}; use `policyqa index build` to change model")
        changed = {u.doc.path for u in upserts}
        keep = frozenset(keep)
        rows = self.conn.execute(
            'SELECT c.id, c.doc, d.title, c.ordinal, c.start, c."end", c.text, c.section, c.page, c.embed_hash '
            "FROM chunks c JOIN documents d ON d.path = c.doc ORDER BY c.id"
        )
        chunks = [
            NextChunk(r[0], r[2], Chunk(r[1], *r[3:9]), r[9]) for r in rows
            if (r[1] in keep if replace_all else r[1] not in changed and r[1] not in removed)
        ]
        next_id = (self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0]) + 1
        for u in upserts:
            for c, h in zip(u.chunks, u.embed_hashes):
                chunks.append(NextChunk(next_id, u.doc.title, c, h))
                next_id += 1
        return Plan(self.generation() + 1, model, upserts, list(removed), replace_all, keep, chunks)

    def commit(self, plan: Plan, settings: dict, skipped: dict[str, str], keywords: KeywordTexts) -> int:
        """Make the planned generation current: write its vector file and keyword index,
        then switch in one transaction. Returns the new generation number. If anything
        fails before the switch, the new generation's files are removed."""
        generation, model = plan.generation, plan.model
        # Files of a writer that was stopped before its switch are no generation's.
        self._prune(generation - 1)
        ids = np.array([c.id for c in plan.chunks], dtype=np.int64)
        switched = False
        try:
            with self._disk_space():
                vectors, layout = self._write_vectors(
                    generation, ids, self._vectors_for([c.embed_hash for c in plan.chunks], model.dim), model.dim)
                lexical.write(self.dir, generation, ids, keywords.passages, [c.chunk.doc for c in plan.chunks],
                              keywords.documents)
                checksums = self._checksums(generation, vectors)
                pause_point("vectors-written")
                self._switch(plan, settings, skipped, checksums, layout)
                switched = True
        finally:
            if not switched:
                for path in (self.dir / vectors_name(generation), lexical.generation_dir(self.dir, generation)):
                    files.remove(path)
        pause_point("committed")
        self._prune(generation)
        return generation

    def _switch(self, plan: Plan, settings: dict, skipped: dict[str, str], checksums: dict[str, str],
                layout: dense.Layout) -> None:
        model = plan.model
        changed = [u.doc.path for u in plan.upserts]
        stamp = now()
        with self._transaction():
            if plan.replace_all:
                kept = sorted(plan.keep)
                self.conn.execute(f"DELETE FROM documents WHERE path NOT IN ({','.join('?' * len(kept))})", kept)
            for path in plan.removed + changed:
                self.conn.execute("DELETE FROM documents WHERE path = ?", (path,))
            for u in plan.upserts:
                d = u.doc
                self.conn.execute(
                    "INSERT INTO documents (path, title, encoding, content_hash, chars, indexed_at, meta) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (d.path, d.title, d.encoding, d.content_hash, len(d.text), stamp,
                     json.dumps(d.meta.as_dict() if d.meta else {}, ensure_ascii=False)),
                )
            old_ids = len(plan.chunks) - sum(len(u.chunks) for u in plan.upserts)
            self.conn.executemany(
                'INSERT INTO chunks (id, doc, ordinal, start, "end", section, text, embed_hash, page) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(n.id, c.doc, c.ordinal, c.start, c.end, c.section, c.text, n.embed_hash, c.page)
                 for n in plan.chunks[old_ids:] for c in [n.chunk]],
            )
            self.conn.execute("DELETE FROM skipped")
            self.conn.executemany("INSERT INTO skipped VALUES (?, ?)", sorted(skipped.items()))
            values = {
                "generation": str(plan.generation),
                "model": model.name,
                "model_fingerprint": model.fingerprint,
                "dim": str(model.dim),
                "chunker": json.dumps(settings, sort_keys=True),
                "built_at": stamp,
                "files": json.dumps(checksums, sort_keys=True),
                "vectors": json.dumps(layout.as_dict()),
            }
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (stamp,))
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())
            self.conn.execute("DELETE FROM embeddings WHERE hash NOT IN (SELECT embed_hash FROM chunks)")
            pause_point("committing")

    def _checksums(self, generation: int, vectors: str) -> dict[str, str]:
        keywords = lexical.generation_dir(self.dir, generation)
        out = {vectors_name(generation): vectors}
        for path in sorted(p for p in keywords.rglob("*") if p.is_file()):
            out[path.relative_to(self.dir).as_posix()] = files.file_checksum(path)
        return out

    def _vectors_for(self, hashes: list[str], dim: int) -> np.ndarray:
        out = np.empty((len(hashes), dim), dtype=np.float32)
        position: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            position.setdefault(h, []).append(i)
        found = _select_in(self.conn, "SELECT hash, vector FROM embeddings WHERE hash IN ({marks})", list(position))
        for h, blob in found:
            out[position.pop(h)] = np.frombuffer(blob, dtype=np.float32)
        if position:
            raise StoreError(f"{len(position)} chunks have no stored vector; run `policyqa index update`")
        return out

    def _write_vectors(self, generation: int, ids: np.ndarray, vectors: np.ndarray,
                       dim: int) -> tuple[str, dense.Layout]:
        """Write the generation's FAISS file; returns its checksum and how it indexes the vectors."""
        import faiss

        from . import vectors as dense

        index, layout = dense.build(ids, vectors, dim, previous=self.dir / vectors_name(generation - 1))
        data = faiss.serialize_index(index).tobytes()
        with files.replaced(self.dir / vectors_name(generation)) as tmp:
            tmp.write_bytes(data)
            pause_point("vectors-tmp")
        return files.checksum(data), layout

    def _prune(self, generation: int) -> None:
        """Keep `generation` and the one before it, for readers that are switching right now."""
        files.prune_generations(self.dir, VECTORS_PREFIX, generation)
        lexical.remove_old(self.dir, generation)


@contextmanager
def writer_lock(index_dir: Path, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Held while writing, from before the database is opened (a damaged one may be
    replaced). The OS drops the lock with its process, so a killed writer never leaves a
    stale lock behind."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(index_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait and timeout > 0:
            on_wait(f"another process is updating {index_dir}; waiting up to {timeout:g} s for it to finish")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise WriterBusy(
                f"another process is still updating {index_dir} after {timeout:g} s; "
                "try again when it has finished"
            ) from None
    try:
        yield
    finally:
        lock.release()
