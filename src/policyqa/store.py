"""The on-disk index: one SQLite database and immutable segment directories beside it.

Owns: the schema, the embedding cache (content hash -> vector of what is embedded and
not yet committed, so an interrupted run resumes and nothing is embedded twice), the
atomic switch from one index generation to the next, the single-writer lock, and reading
a consistent snapshot.

A generation is a list of segments plus tombstones. A segment (`segment-NNNNNN/`, NNNNNN
the generation that wrote it) holds the vectors (FAISS), chunk ids, their embedding
hashes and keyword index (lexical.py) of the passages one commit wrote, and is never
changed. Its FAISS index is the only copy of a committed vector: a commit removes from the
embedding cache what it has written, and a vector reused (a moved or unchanged passage, a
rebuild, a merge) is read back from the segment that holds it; the generation's
manifest (meta `segments`) names its segments with the chunk ids deleted from each since
it was written. An update writes one small segment of its new passages and tombstones the
passages it replaced, so one changed document costs O(document), not O(corpus); MERGE
folds segments together (`index optimize` folds all). A new segment is written and synced
before the SQLite transaction that makes its generation current, and that transaction
records its files' checksums, so the database never points at a file that is missing,
damaged or disagrees with its chunks; a segment is removed only when neither the current
generation nor the one before it (readers switching now) names it. What goes into the
keyword index is the indexer's to say: the store is handed its texts. Nothing is pickled.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
VECTORS_PREFIX = "vectors"  # a generation's single vector file, before segments
SEGMENT_PREFIX = "segment"
VECTORS_FILE = "vectors.faiss"
IDS_FILE = "ids.npy"
HASHES_FILE = "hashes.npy"  # each row's embedding hash (32 bytes): a damaged database's vectors are found by it
POSITIONS_FILE = "positions.npy"  # IVF segments: where each row is in the lists (vectors.list_positions)
# Merge policy, checked at every commit (tiered, as Lucene's, in two tiers): the first
# segment is the base (a full write or a full merge); every later one is a delta. Past
# MAX_DELTAS deltas they are merged into one, which costs what they hold (a few updates'
# passages) and keeps a question's per-segment searches few; when the deltas hold more
# than DELTA_SHARE of the live passages, or tombstones more than DEAD_SHARE of the base,
# everything is merged into a new base, so a full rewrite (and IVF training) comes once
# per a tenth of the corpus changed, and exact deltas never grow large enough to slow a
# question.
MAX_DELTAS = 4
DELTA_SHARE = 0.10
DEAD_SHARE = 0.20
MERGE_ENV = "POLICYQA_MERGE"  # "MAX_DELTAS,DELTA_SHARE,DEAD_SHARE": tests keep deltas in small corpora
FULL_DISK_FREE = 1 << 20  # bytes: less free space than this after a failed write means a full disk
RECOVER_PART = 10_000  # vectors read back at a time when a damaged database is started over
WRITER_CACHE_KIB = 256 << 10  # a writer's SQLite page cache (at most this much, as it is used)
VACUUM_SHARE = 0.5  # a commit that leaves more of the database file free than this compacts it
VACUUM_BYTES = 64 << 20  # ... when that is more than this many bytes
BATCH = 500  # values per `IN (...)`: SQLite before 3.32 allows 999 parameters a statement

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    path TEXT PRIMARY KEY, title TEXT NOT NULL, encoding TEXT NOT NULL,
    content_hash TEXT NOT NULL, chars INTEGER NOT NULL, indexed_at TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}', stat TEXT);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, doc TEXT NOT NULL REFERENCES documents(path) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    section TEXT, text TEXT NOT NULL, embed_hash TEXT NOT NULL, page INTEGER);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(embed_hash);
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
    """A document to (re)write, with its chunks and the hashes of their embedded text, and
    its file's size and modification time as read (indexer.file_stat), if they can be trusted."""

    doc: Document
    chunks: list[Chunk]
    embed_hashes: list[str]
    stat: str | None = None


@dataclass(frozen=True)
class NextChunk:
    """A chunk of the next generation, under the id it has there."""

    id: int
    title: str
    chunk: Chunk
    embed_hash: str


@dataclass(frozen=True)
class Plan:
    """The next generation: which documents go and come, the chunks it adds (under new
    ids, above every id used before) and the ids of those it drops. The chunks it keeps
    are read from the database only when a segment is written with them (Store.commit):
    an update of one document at a million passages reads one document's worth."""

    generation: int
    model: ModelInfo
    upserts: list[Upsert]
    removed: list[str]
    replace_all: bool
    keep: frozenset[str]
    new: list[NextChunk]
    leaving: np.ndarray  # ids of the current chunks the generation drops (not after replace_all)


@dataclass(frozen=True)
class SegmentRef:
    """A segment of a generation and the chunk ids deleted from it since it was written."""

    name: str
    rows: int
    dead: tuple[int, ...] = ()

    @property
    def live(self) -> int:
        return self.rows - len(self.dead)

    def as_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows, "dead": list(self.dead)}


@dataclass(frozen=True)
class KeywordTexts:
    """What the keyword index of a generation is built over: the text of each of the
    plan's chunks, in its order, and of each whole document (made as the writer reads
    them: at a million passages, holding them all would be most of a GB)."""

    passages: Sequence[str]
    documents: Mapping[str, str]


NEXT_CHUNK_SQL = ('SELECT c.id, c.doc, d.title, c.ordinal, c.start, c."end", c.text, c.section, c.page, c.embed_hash '
                  "FROM chunks c JOIN documents d ON d.path = c.doc")


def _next_chunk(r: tuple) -> NextChunk:
    """A NextChunk of a NEXT_CHUNK_SQL row."""
    return NextChunk(r[0], r[2], Chunk(r[1], *r[3:9]), r[9])


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
        # A commit of a large corpus inserts into the chunks' indexes at random keys (hashes):
        # with SQLite's 2 MB default the pages it touches are read back again and again.
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
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


def _segment_vectors(directory: Path) -> Iterator[list[tuple[str, bytes]]]:
    """(hash, vector) rows of every segment in `directory` that can still be read, a part
    at a time, found by each segment's own files (the database that lists them is damaged).
    A vector must be finite and of unit length, as every stored vector is."""
    from . import vectors as dense

    for folder in sorted(directory.glob(f"{SEGMENT_PREFIX}-*")):
        try:
            ids = np.load(folder / IDS_FILE, mmap_mode="r")
            hashes = np.load(folder / HASHES_FILE, mmap_mode="r")
            positions = np.load(folder / POSITIONS_FILE, mmap_mode="r") if (folder / POSITIONS_FILE).exists() else None
            vectors = dense.Vectors.open(folder / VECTORS_FILE, ids, positions)
            if hashes.shape != (len(ids), 32):
                continue
            for i in range(0, len(ids), RECOVER_PART):
                part = vectors.vectors(np.asarray(ids[i:i + RECOVER_PART]))
                sound = np.isfinite(part).all(axis=1) & (np.abs(np.linalg.norm(part, axis=1) - 1) < 1e-3)
                yield [(bytes(h).hex(), v.tobytes()) for h, v, ok in zip(hashes[i:i + RECOVER_PART], part, sound) if ok]
        except (OSError, ValueError, RuntimeError, IndexError):
            continue  # what was read before a damaged part is kept


def _start_over(db: Path) -> tuple[sqlite3.Connection, int]:
    """An empty database in place of a damaged one, with the vectors that can still be read
    (its embedding cache, the segments beside it) in the new one's cache, so a rebuild
    embeds only what was lost."""
    cache = _readable_embeddings(db)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    conn = _connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?)", cache)
    for rows in _segment_vectors(db.parent):
        conn.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?)", rows)
    conn.execute("COMMIT")
    return conn, conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


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


def segment_name(generation: int) -> str:
    return f"{SEGMENT_PREFIX}-{generation:06d}"


def merge_plan(segments: list[SegmentRef], new_rows: int) -> int:
    """How many of `segments` (then a new one of `new_rows`) the commit rewrites into one:
    0 (none; the new rows become a delta), the deltas (all but the base), or all."""
    if not segments:
        return 0
    max_deltas, delta_share, dead_share = MAX_DELTAS, DELTA_SHARE, DEAD_SHARE
    if os.environ.get(MERGE_ENV):
        a, b, c = os.environ[MERGE_ENV].split(",")
        max_deltas, delta_share, dead_share = int(a), float(b), float(c)
    base, deltas = segments[0], segments[1:]
    live = sum(s.live for s in segments) + new_rows
    delta_rows = sum(s.live for s in deltas) + new_rows
    if delta_rows > delta_share * live or len(base.dead) > dead_share * max(1, base.rows):
        return len(segments)
    if len(deltas) + bool(new_rows) > max_deltas:
        return len(deltas)
    return 0


class Store:
    """A connection to one index directory."""

    def __init__(self, index_dir: Path, conn: sqlite3.Connection):
        self.dir = index_dir
        self.conn = conn
        self._committed_cache: tuple[int, dense.Segments, bool] | None = None

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
            if "stat" not in {r[1] for r in conn.execute("PRAGMA table_info(documents)")}:  # written before stats
                conn.execute("ALTER TABLE documents ADD COLUMN stat TEXT")
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

    def segments(self) -> list[SegmentRef] | None:
        """The current generation's segments; None for a generation written before segments."""
        stored = self.meta().get("segments")
        if stored is None:
            return None
        return [SegmentRef(d["name"], int(d["rows"]), tuple(int(c) for c in d["dead"])) for d in json.loads(stored)]

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
        segments = self.segments()
        if segments is None or self.damaged(full=False, only=lexical.KEYWORDS):
            return None
        return lexical.LexicalIndex.load(
            [(self.dir / s.name / lexical.KEYWORDS, np.array(s.dead, dtype=np.int64)) for s in segments])

    def renew_snapshot(self) -> None:
        """Inside snapshot(): move it to the latest committed generation."""
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def load_vectors(self, generation: int) -> dense.Segments:
        """Inside snapshot(): the generation's FAISS indexes, one per segment, checksums verified."""
        from . import vectors as dense

        segments = self.segments()
        if segments is None:  # written before segments: its one vector file
            return dense.Segments([(self._open_vectors(vectors_name(generation)), np.zeros(0, np.int64))])
        return dense.Segments([(self._open_segment(s.name), np.array(s.dead, dtype=np.int64)) for s in segments])

    def _open_segment(self, name: str) -> dense.Vectors:
        """A segment's vectors with its ids and (IVF segments) positions, memory-mapped."""
        recorded = self.checksums() or {}

        def array(file: str) -> np.ndarray:
            path, key = self.dir / name / file, f"{name}/{file}"
            try:
                if key in recorded and not files.matches(path, recorded[key], full=False):
                    raise DamagedIndex(f"{key} in {self.dir} is damaged; `policyqa index update` rewrites it")
                return np.load(path, mmap_mode="r")
            except (OSError, ValueError):
                raise VectorsGone(f"{key} is missing; run `policyqa index update`") from None

        positions = array(POSITIONS_FILE) if f"{name}/{POSITIONS_FILE}" in recorded else None
        return self._open_vectors(f"{name}/{VECTORS_FILE}", array(IDS_FILE), positions)

    def _open_vectors(self, name: str, ids: np.ndarray | None = None,
                      positions: np.ndarray | None = None) -> dense.Vectors:
        from . import vectors as dense

        path = self.dir / name
        recorded = (self.checksums() or {}).get(name)
        try:
            # A segment's file is never changed in place, so what is checked is what is
            # read. A large (memory-mapped, approximate) index is checked by size here: its
            # CRC would read the whole file where a search reads a few lists; `index update`
            # and `index status --verify` check every byte.
            if recorded and not files.matches(path, recorded, full=files.size_of(recorded) <= FULL_CHECK_BYTES):
                raise DamagedIndex(f"{name} in {self.dir} is damaged; `policyqa index update` rewrites it")
            return dense.Vectors.open(path, ids, positions)
        except FileNotFoundError:
            raise VectorsGone(f"{name} is missing; run `policyqa index update`") from None
        except RuntimeError as exc:
            if not path.exists():
                raise VectorsGone(f"{name} is missing; run `policyqa index update`") from exc
            raise DamagedIndex(f"cannot read {name}; `policyqa index update` rewrites it") from exc

    def damaged(self, full: bool = True, only: str | None = None, full_up_to: int | None = None) -> list[str]:
        """The files of the current generation that are missing or differ from what was
        written (by size, or with `full` by checksum too); those under `only` if given.
        (None of a generation written before checksums were kept.) `only` names a
        folder: files under such a folder of any segment. With `full_up_to`, only the files
        of segments up to that many bytes are checked by checksum (a large segment's files
        are many, each small)."""
        out = []
        recorded = self.checksums() or {}
        sizes: dict[str, int] = {}
        for name, checksum in recorded.items():
            top = name.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + files.size_of(checksum)
        for name, checksum in sorted(recorded.items()):
            if only and only not in name.split("/")[:-1]:
                continue
            path = self.dir / name
            try:
                every_byte = full and (full_up_to is None or sizes[name.split("/", 1)[0]] <= full_up_to)
                ok = files.matches(path, checksum, every_byte)
            except OSError:
                ok = False
            if not ok:
                out.append(name)
        return out

    def needs_rewrite(self, full_check: bool = False) -> bool:
        """Whether the current generation's files must be written again from the database:
        never completed, an outdated keyword index, no checksums yet, or a file missing or
        damaged. Segments over FULL_CHECK_BYTES are checked by size unless `full_check`:
        they are immutable, and reading every byte of a million passages' segments
        (gigabytes) on every update would cost an update O(corpus) again; `index status
        --verify` checks every byte and `index optimize` rewrites what it finds."""
        segments = self.segments()
        recorded = self.checksums()
        return (self.generation() == 0 or segments is None or recorded is None
                # written while the embedding cache still held every vector: rewritten with hashes
                or any(f"{s.name}/{HASHES_FILE}" not in recorded for s in segments)
                or not all(lexical.is_current(self.dir / s.name / lexical.KEYWORDS) for s in segments)
                or bool(self.damaged(full_up_to=None if full_check else FULL_CHECK_BYTES)))

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

    def file_stats(self) -> dict[str, str]:
        """Document -> its file's stat when it was read, where one was recorded."""
        return dict(self.conn.execute("SELECT path, stat FROM documents WHERE stat IS NOT NULL"))

    def record_stats(self, stats: dict[str, tuple[str, str]]) -> None:
        """Document -> (content hash, stat): a file found unchanged in content under a new
        stat (touched, copied back) is known by it, as long as it still holds that content."""
        with self._transaction():
            self.conn.executemany("UPDATE documents SET stat = ? WHERE path = ? AND content_hash = ?",
                                  [(stat, path, content) for path, (content, stat) in stats.items()])

    def skipped(self) -> list[SkippedRow]:
        return [SkippedRow(d, r) for d, r in self.conn.execute("SELECT doc, reason FROM skipped ORDER BY doc")]

    def counts(self) -> tuple[int, int]:
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def size_bytes(self) -> int:
        """Bytes of the current generation: database and the files of its segments."""
        names = [DB_NAME, DB_NAME + "-wal", *(self.checksums() or {})]
        return sum(p.stat().st_size for p in (self.dir / n for n in names) if p.is_file())

    # ---- writing ------------------------------------------------------------------
    def cached_vectors(self, hashes: Iterable[str]) -> set[str]:
        """Which of these embedding hashes have a vector that can be read: in the cache,
        or held by a committed chunk of a segment that can be read."""
        hashes = list(hashes)
        found = {h for (h,) in _select_in(self.conn, "SELECT hash FROM embeddings WHERE hash IN ({marks})", hashes)}
        return found | set(self._committed_sources([h for h in hashes if h not in found]))

    def lost_vectors(self) -> list[NextChunk]:
        """The committed chunks whose vector can no longer be read (their segment's files
        are missing or damaged, and the cache does not hold it): the indexer embeds them
        again before the rewrite that replaces the damaged files."""
        committed, complete = self._committed()
        if complete:
            return []
        ids = np.array([i for (i,) in self.conn.execute("SELECT id FROM chunks")], dtype=np.int64)
        chunks = self._chunks_by_id(ids[~committed.holds(ids)])
        cached = {h for (h,) in _select_in(self.conn, "SELECT hash FROM embeddings WHERE hash IN ({marks})",
                                           {n.embed_hash for n in chunks})}
        return [n for n in chunks if n.embed_hash not in cached]

    def _committed(self) -> tuple[dense.Segments, bool]:
        """The current generation's segments that can be read (checked as a reader checks
        them; a generation written before segments is its one vector file), tombstoned
        rows included; and whether that is all of them. Opened once per generation."""
        from . import vectors as dense

        generation = self.generation()
        if self._committed_cache is None or self._committed_cache[0] != generation:
            segments = self.segments()
            openers = ([functools.partial(self._open_segment, s.name) for s in segments] if segments is not None
                       else [functools.partial(self._open_vectors, vectors_name(generation))])
            opened = []
            for open_one in openers:
                try:
                    opened.append(open_one())
                except (DamagedIndex, VectorsGone):
                    pass
            none = np.zeros(0, np.int64)
            self._committed_cache = (generation, dense.Segments([(v, none) for v in opened]),
                                     len(opened) == len(openers))
        return self._committed_cache[1], self._committed_cache[2]

    def _committed_sources(self, hashes: Iterable[str]) -> dict[str, int]:
        """hash -> the id of a committed chunk with that embedding hash whose vector can be
        read, for those of these hashes that have one."""
        hashes = list(hashes)
        rows = list(_select_in(self.conn, "SELECT embed_hash, id FROM chunks WHERE embed_hash IN ({marks})", hashes))
        if not rows:
            return {}
        held = self._committed()[0].holds(np.array([i for _, i in rows], dtype=np.int64))
        return {h: i for (h, i), good in zip(rows, held.tolist()) if good}

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
        keep = frozenset(keep)
        # Ids are never reused: a deleted chunk's id may still be in a segment (tombstoned).
        next_id = max(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0] + 1,
                      int(self.meta().get("next_chunk_id", 1)))
        new = []
        for u in upserts:
            for c, h in zip(u.chunks, u.embed_hashes):
                new.append(NextChunk(next_id, u.doc.title, c, h))
                next_id += 1
        leaving = np.zeros(0, np.int64) if replace_all else self.chunk_ids_of([u.doc.path for u in upserts] + removed)
        return Plan(self.generation() + 1, model, upserts, list(removed), replace_all, keep, new, leaving)

    def _chunks_by_id(self, ids: np.ndarray) -> list[NextChunk]:
        rows = _select_in(self.conn, f"{NEXT_CHUNK_SQL} WHERE c.id IN ({{marks}})", [int(i) for i in ids])
        return sorted(map(_next_chunk, rows), key=lambda n: n.id)

    def _kept_chunks(self, plan: Plan, first_id: int = 0) -> list[NextChunk]:
        """The current chunks the plan keeps, from id `first_id` on, in id order."""
        changed = {u.doc.path for u in plan.upserts} | set(plan.removed)
        rows = self.conn.execute(f"{NEXT_CHUNK_SQL} WHERE c.id >= ? ORDER BY c.id", (first_id,))
        return [_next_chunk(r) for r in rows if (r[1] in plan.keep if plan.replace_all else r[1] not in changed)]

    def commit(self, plan: Plan, settings: dict, skipped: dict[str, str],
               keywords: Callable[[Sequence[NextChunk]], KeywordTexts], optimize: bool = False) -> int:
        """Make the planned generation current: write one new segment (the new chunks, or
        those of the segments merge_plan folds in with them; all of them after a full
        rebuild, with `optimize`, or when the current files must be rewritten), tombstone
        the replaced chunks in the kept segments, then switch in one transaction.
        `keywords` gives the keyword texts of a segment's chunks. Returns the new generation
        number. If anything fails before the switch, the new segment is removed."""
        generation = plan.generation
        # Segments of a writer that was stopped before its switch are no generation's.
        self._prune()
        previous = None if plan.replace_all or optimize or self.needs_rewrite() else self.segments()
        kept: list[SegmentRef] = []
        for ref in previous or []:
            ids = np.load(self.dir / ref.name / IDS_FILE, mmap_mode="r")
            gone = np.asarray(ids)[np.isin(ids, plan.leaving)]
            kept.append(SegmentRef(ref.name, ref.rows, tuple(sorted(set(ref.dead) | set(gone.tolist())))))
        new: list[NextChunk] = plan.new
        merged = merge_plan(kept, len(plan.new)) if kept else 0
        if not kept:
            new = self._kept_chunks(plan) + plan.new
        elif merged:
            # Segments hold ascending id ranges, so the folded ones (the last) are the ids from their first on.
            folded, kept = kept[-merged:], kept[:-merged]
            first = min((int(np.load(self.dir / f.name / IDS_FILE, mmap_mode="r")[0]) for f in folded if f.rows),
                        default=None)
            new = (self._kept_chunks(plan, first) if first is not None else []) + plan.new
        segments = [s for s in kept if s.live]
        name = segment_name(generation)
        checksums = {k: v for k, v in (self.checksums() or {}).items()
                     if k.split("/", 1)[0] in {s.name for s in segments}}
        layout = None
        switched = False
        try:
            with self._disk_space():
                if new or not segments:
                    fresh_from = plan.new[0].id if plan.new else None
                    written, layout = self._write_segment(name, list(new), keywords, plan.model.dim,
                                                          self._base_vectors(previous), fresh_from)
                    checksums.update(written)
                    segments.append(SegmentRef(name, len(new)))
                pause_point("vectors-written")
                self._switch(plan, settings, skipped, checksums, segments, layout)
                switched = True
        finally:
            if not switched:
                files.remove(self.dir / name)
        pause_point("committed")
        self._prune()
        self._compact()
        return generation

    def _compact(self) -> None:
        """Give back the pages a commit freed when they are most of the file: after a build
        the vectors it cached are in the segment, and their pages would stay in the
        database file as free space. Readers go on reading while it runs; a full disk
        leaves the file as it was."""
        page_size, pages, free = (self.conn.execute(f"PRAGMA {p}").fetchone()[0]
                                  for p in ("page_size", "page_count", "freelist_count"))
        if free > VACUUM_SHARE * pages and free * page_size > VACUUM_BYTES:
            try:
                self.conn.execute("VACUUM")
            except sqlite3.OperationalError as exc:
                if not _disk_full(exc, self.dir):
                    raise

    def _base_vectors(self, segments: list[SegmentRef] | None) -> Path | None:
        """The largest segment's vector file, whose IVF lists a new large segment may reuse."""
        if not segments:
            return None
        return self.dir / max(segments, key=lambda s: s.rows).name / VECTORS_FILE

    def _write_segment(self, name: str, chunks: list[NextChunk], keywords: Callable[[Sequence[NextChunk]],
                       KeywordTexts], dim: int, previous: Path | None,
                       fresh_from: int | None) -> tuple[dict[str, str], dense.Layout]:
        """Write a segment of these chunks (ascending ids; from id `fresh_from` on they are
        not committed yet) and sync it; returns the checksums of its files and how its
        vectors are indexed."""
        import faiss

        from . import vectors as dense

        ids = np.array([c.id for c in chunks], dtype=np.int64)
        with files.replaced(self.dir / name) as tmp:
            tmp.mkdir()
            index, layout = dense.build(ids, self._vectors_for(chunks, dim, fresh_from), dim, previous=previous)
            # Written from the index, not from a serialized copy: at a million vectors that
            # copy alone would be 1.5 GB.
            faiss.write_index(index, str(tmp / VECTORS_FILE))
            if isinstance(index, faiss.IndexIVF):
                held, positions = dense.list_positions(index)
                assert np.array_equal(held, ids), "an IVF index holds the ids it was given"
                np.save(tmp / POSITIONS_FILE, positions)
            del index
            pause_point("vectors-tmp")
            np.save(tmp / IDS_FILE, ids)
            np.save(tmp / HASHES_FILE, np.frombuffer(b"".join(bytes.fromhex(c.embed_hash) for c in chunks),
                                                      dtype=np.uint8).reshape(len(chunks), 32))
            texts = keywords(chunks)
            lexical.write(tmp / lexical.KEYWORDS, ids, texts.passages, [c.chunk.doc for c in chunks],
                          texts.documents)
            del texts
        final = self.dir / name
        out = {f"{name}/{p.relative_to(final).as_posix()}": files.file_checksum(p)
               for p in sorted(final.rglob("*")) if p.is_file()}
        if layout.kind == "ivf":  # searches map the lists they scan (an exact index is read whole)
            files.drop_cached(final / VECTORS_FILE)
        return out, layout

    def _switch(self, plan: Plan, settings: dict, skipped: dict[str, str], checksums: dict[str, str],
                segments: list[SegmentRef], layout: dense.Layout | None) -> None:
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
                    "INSERT INTO documents (path, title, encoding, content_hash, chars, indexed_at, meta, stat) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (d.path, d.title, d.encoding, d.content_hash, len(d.text), stamp,
                     json.dumps(d.meta.as_dict() if d.meta else {}, ensure_ascii=False), u.stat),
                )
            self.conn.executemany(
                'INSERT INTO chunks (id, doc, ordinal, start, "end", section, text, embed_hash, page) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(n.id, c.doc, c.ordinal, c.start, c.end, c.section, c.text, n.embed_hash, c.page)
                 for n in plan.new for c in [n.chunk]],
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
                "segments": json.dumps([s.as_dict() for s in segments]),
                "previous_segments": json.dumps([s.name for s in self.segments() or []]),
                "next_chunk_id": str(max([int(self.meta().get("next_chunk_id", 1))]
                                         + [c.id + 1 for c in plan.new[-1:]])),
            }
            vectors = json.loads(self.meta().get("vectors") or "null")
            if layout is not None and (vectors is None or layout.vectors >= max(s.rows for s in segments)):
                vectors = layout.as_dict()  # the largest segment's layout is what `index status` shows
            if vectors is not None:
                values["vectors"] = json.dumps(dict(vectors, vectors=sum(s.live for s in segments),
                                                    segments=len(segments)))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (stamp,))
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())
            # What is committed now has its one copy in a segment; what a rebuild leaves out
            # was embedded for nothing. The cache keeps only vectors embedded for documents
            # an interrupted run had not committed yet.
            committed = "EXISTS (SELECT 1 FROM chunks c WHERE c.embed_hash = embeddings.hash)"
            pending = self.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            if plan.replace_all or pending == self.conn.execute(
                    f"SELECT COUNT(*) FROM embeddings WHERE {committed}").fetchone()[0]:
                # without a WHERE SQLite frees the table's pages whole (a build's million rows
                # deleted one by one rewrite every page of them)
                self.conn.execute("DELETE FROM embeddings")
            else:
                self.conn.execute(f"DELETE FROM embeddings WHERE {committed}")
            pause_point("committing")

    def _vectors_for(self, chunks: list[NextChunk], dim: int, fresh_from: int | None) -> np.ndarray:
        """The vector of each chunk: a committed chunk's from its segment, a new one's (from
        id `fresh_from` on) by its hash (stored_vectors)."""
        out = np.empty((len(chunks), dim), dtype=np.float32)
        committed = self._committed()[0]
        ids = np.array([c.id for c in chunks], dtype=np.int64)
        held = (ids < fresh_from if fresh_from is not None else np.ones(len(ids), dtype=bool)) & committed.holds(ids)
        if held.any():
            out[held] = committed.vectors(ids[held])
        rest = np.flatnonzero(~held).tolist()
        found = self.stored_vectors({chunks[i].embed_hash for i in rest})
        missing = sum(chunks[i].embed_hash not in found for i in rest)
        if missing:
            raise StoreError(f"{missing} chunks have no stored vector; run `policyqa index update`")
        for i in rest:
            out[i] = found[chunks[i].embed_hash]
        return out

    def stored_vectors(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """hash -> vector, for those of these embedding hashes that have one that can be
        read: in the cache, or in the segment of a committed chunk with that hash."""
        hashes = list(dict.fromkeys(hashes))
        out = {h: np.frombuffer(blob, dtype=np.float32) for h, blob in
               _select_in(self.conn, "SELECT hash, vector FROM embeddings WHERE hash IN ({marks})", hashes)}
        sources = self._committed_sources([h for h in hashes if h not in out])
        if sources:
            out.update(zip(sources, self._committed()[0].vectors(np.array(list(sources.values()), dtype=np.int64))))
        return out

    def _prune(self) -> None:
        """Remove every segment that neither the current generation nor the one before it
        (readers switching right now may still open it) names, unfinished temporary ones,
        and the files of generations written before segments."""
        meta = self.meta()
        wanted = {s["name"] for s in json.loads(meta.get("segments") or "[]")}
        wanted |= set(json.loads(meta.get("previous_segments") or "[]"))
        for p in self.dir.glob(f"{SEGMENT_PREFIX}-*"):
            if p.name not in wanted:
                files.remove(p)
        generation = self.generation()
        if "segments" in meta:
            files.prune_generations(self.dir, VECTORS_PREFIX, generation)
            files.prune_generations(self.dir, lexical.OLD_PREFIX, generation)


@contextmanager
def writer_lock(index_dir: Path, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Held while writing, from before the database is opened (a damaged one may be
    replaced)."""
    with lock_held(index_dir / LOCK_NAME, str(index_dir), timeout, on_wait):
        yield


@contextmanager
def lock_held(lock_file: Path, what: str, timeout: float,
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """The one writer's lock of the index named `what`, waited for up to `timeout` seconds.
    The OS drops the lock with its process, so a killed writer never leaves a stale lock
    behind."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait and timeout > 0:
            on_wait(f"another process is updating {what}; waiting up to {timeout:g} s for it to finish")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise WriterBusy(
                f"another process is still updating {what} after {timeout:g} s; "
                "try again when it has finished"
            ) from None
    try:
        yield
    finally:
        lock.release()
