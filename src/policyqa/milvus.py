"""The index kept in Milvus (`--store URI`): passages, vectors and metadata in Milvus
collections through pymilvus, for libraries that outgrow one machine.

Owns: the collections (NAME_chunks: passage, place in its document and vector;
NAME_documents: each document's hash, metadata and chunk-id range; NAME_meta: model,
generation, skipped files; NAME_pending: vectors embedded, or reused from a row of the
same text, and not committed yet, so an interrupted update resumes), the dense search
with Milvus filters, and the local cache of the keyword index. pymilvus is imported
here only, when a Milvus URI is used.

The same contracts as store.Store, by the same code above the seam (backend.IndexStore):
the indexer's content-hash diff, plan and commit; the Searcher's fusion over a dense and
a keyword component. What differs:
- Filters: policyqa decides which documents a filter admits (fnmatch on path or file
  name, a casefolded issuer substring: Milvus `like` can say neither exactly), and the
  dense search is restricted to their chunk ids, which are contiguous per document, so
  the Milvus filter is a short list of id ranges.
- Keywords: the BM25 indexes of lexical.py, fused as for a local index, are derived from
  the passages in Milvus and cached on this machine (beside a milvus-lite file, or in
  the user cache for a server); a commit adds a segment of its new passages to the
  writer's cache, and a reader whose cache is not of the current generation rebuilds it
  from Milvus. One ranking code path keeps both backends' answers alike,
  which Milvus's own BM25 (a different tokenizer and no whole-document score) would not.
- Commits: Milvus has no multi-collection transaction. New chunk rows are written first
  under new ids, then the documents' rows that point at them, then the generation;
  rows no document's range owns (of a replaced version, or of a writer that was
  stopped) are never returned and are deleted by the same or the next update
  (`needs_rewrite`). A search running during a commit may see a document's old or new
  passages. The writer lock is a file on this machine: one writer per machine, and a
  milvus-lite file is opened by one process at a time (milvus-lite's own lock).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import files, lexical
from .backend import MilvusLocation
from .embed import ModelInfo
from .records import Chunk, ChunkRow, Meta
from .store import (
    FORMAT,
    DocumentRow,
    KeywordTexts,
    NextChunk,
    NoIndex,
    Plan,
    SkippedRow,
    StoreError,
    Upsert,
    lock_held,
    now,
    pause_point,
)

if TYPE_CHECKING:
    from pymilvus import MilvusClient

PREFIX_ENV = "POLICYQA_MILVUS_PREFIX"  # collection names: PREFIX_chunks, ...
TOKEN_ENV = "POLICYQA_MILVUS_TOKEN"  # "user:password" or an API key
TIMEOUT_ENV = "POLICYQA_MILVUS_TIMEOUT"  # seconds to wait for a server to answer a connection
CONNECT_TIMEOUT_S = 10.0
BATCH = 1000  # ids or rows per request: Milvus caps a message at 64 MB and a query window at 16384
SCAN_BATCH = 4096
TEXT_MAX = 65535  # Milvus's largest VARCHAR, in bytes
DUMMY_DIM = 2  # every Milvus 2.5 collection needs a vector field; documents and meta have no use for one
NO_PAGE = -1
KEYWORD_DIR = "keywords"  # the cached keyword index: keywords-NNNNNN/ in the cache directory
KEYWORD_SEGMENTS = 8  # keyword cache segments a commit adds to before it writes the cache whole
FIELDS = ["id", "doc", "ordinal", "start", "end", "section", "text", "embed_hash", "page"]


class MilvusUnavailable(StoreError):
    """The Milvus server cannot be reached, or the URI names none."""


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _in(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{','.join(_quoted(v) for v in values)}]"


def id_ranges(ids: np.ndarray) -> str:
    """A Milvus filter admitting exactly these chunk ids: runs as ranges, the rest listed."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    if not len(ids):
        return "id < 0"
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    parts, singles = [], []
    for run in np.split(ids, breaks):
        if len(run) > 2:
            parts.append(f"(id >= {int(run[0])} and id <= {int(run[-1])})")
        else:
            singles += [str(int(i)) for i in run]
    if singles:
        parts.append(f"id in [{','.join(singles)}]")
    return " or ".join(parts)


class _Client:
    """MilvusClient whose failures are the user's one-line StoreError."""

    def __init__(self, client: MilvusClient, where: MilvusLocation):
        self._client = client
        self._where = where

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            from pymilvus.exceptions import MilvusException

            try:
                return method(*args, **kwargs)
            except MilvusException as exc:
                raise MilvusUnavailable(f"Milvus at {self._where} failed: {_first_line(exc)}") from None

        return call


def _first_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__


def is_lite(uri: str) -> bool:
    return uri.endswith(".db") and "://" not in uri


def connect(where: MilvusLocation, create: bool) -> _Client:
    """A client of the Milvus at `where`; a milvus-lite file that does not exist is only
    created when writing."""
    uri = where.uri
    if is_lite(uri):
        path = Path(uri)
        if not create and not path.exists():
            raise NoIndex(f"no index in {uri}")
        if not path.parent.is_dir():
            raise MilvusUnavailable(f"cannot create the Milvus file {uri}: {path.parent} is not a directory")
    with warnings.catch_warnings():
        # milvus-lite 2.5 imports pkg_resources (when a client first opens a file), which warns
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        # after the import, which configures its loggers: its connection errors are ours to say, once
        for name in ("pymilvus", "pymilvus.milvus_client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            client = MilvusClient(uri=str(Path(uri).resolve()) if is_lite(uri) else uri,
                                  token=os.environ.get(TOKEN_ENV, ""),
                                  timeout=float(os.environ.get(TIMEOUT_ENV) or CONNECT_TIMEOUT_S))
        except MilvusException as exc:
            raise MilvusUnavailable(f"cannot connect to Milvus at {uri}: {_first_line(exc)}") from None
    return _Client(client, where)


def cache_dir(where: MilvusLocation) -> Path:
    """This machine's folder for the store's keyword index and writer lock."""
    if is_lite(where.uri):
        path = Path(where.uri)
        return path.with_name(path.name + ".policyqa")
    from .embed import cache_dir as user_cache

    key = hashlib.sha256(f"{where.uri}\n{_prefix()}".encode()).hexdigest()[:16]
    return user_cache() / "milvus" / key


def _prefix() -> str:
    return os.environ.get(PREFIX_ENV) or "policyqa"


@contextmanager
def writer_lock(where: MilvusLocation, timeout: float, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """The store's writer lock, kept in this machine's cache folder for it (so it holds
    among the writers of one machine only)."""
    folder = cache_dir(where)
    if is_lite(where.uri) and not Path(where.uri).parent.is_dir():
        raise MilvusUnavailable(f"cannot create the Milvus file {where.uri}: "
                                f"{Path(where.uri).parent} is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    with lock_held(folder / "write.lock", str(where), timeout, on_wait):
        yield


class MilvusVectors:
    """A generation's vectors in the chunks collection (backend.Vectors)."""

    def __init__(self, client: _Client, collection: str, ntotal: int):
        self._client = client
        self._collection = collection
        self._ntotal = ntotal

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        found = self._client.search(
            self._collection, data=[row.tolist() for row in q], limit=k, anns_field="vector",
            filter=id_ranges(allowed) if allowed is not None else "", search_params={"metric_type": "IP"},
        )
        for i, hits in enumerate(found):
            for j, hit in enumerate(list(hits)[:k]):
                scores[i, j], ids[i, j] = hit["distance"], hit["id"]
        return scores, ids

    def scores(self, q: np.ndarray, ids: list[int]) -> np.ndarray:
        by_id: dict[int, np.ndarray] = {}
        for i in range(0, len(ids), BATCH):
            for row in self._client.get(self._collection, ids=[int(c) for c in ids[i:i + BATCH]],
                                        output_fields=["vector"]):
                by_id[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
        return np.array([float(by_id[int(c)] @ q) if int(c) in by_id else 0.0 for c in ids], dtype=np.float32)


class MilvusStore:
    """One Milvus-kept index (backend.IndexStore)."""

    def __init__(self, where: MilvusLocation, client: _Client):
        self.where = where
        self.client = client
        prefix = _prefix()
        self.chunks = f"{prefix}_chunks"
        self.docs = f"{prefix}_documents"
        self.meta_name = f"{prefix}_meta"
        self.pending = f"{prefix}_pending"
        self.dir = cache_dir(where)
        self._documents: tuple[str, dict[str, dict]] | None = None  # (build id, path -> row)

    # ---- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, where: MilvusLocation) -> MilvusStore:
        store = cls(where, connect(where, create=False))
        if not store.client.has_collection(store.meta_name):
            raise NoIndex(f"no index in {where}")
        for name in (store.meta_name, store.docs, store.chunks):  # a server may have released them
            if store.client.has_collection(name):
                store.client.load_collection(name)
        if store.meta().get("format") != str(FORMAT):
            raise StoreError(f"the index in {where} has an incompatible format; rebuild it with "
                             f"`policyqa index build --store {where}`")
        if store.generation() == 0:
            raise NoIndex(f"the index in {where} has never been completed")
        return store

    @classmethod
    def create_or_open(cls, where: MilvusLocation) -> MilvusStore:
        store = cls(where, connect(where, create=True))
        store._ensure(store.meta_name, store._meta_schema)
        store._ensure(store.docs, store._documents_schema)
        if "format" not in store.meta():
            store._set_meta({"format": str(FORMAT)})
        elif store.meta()["format"] != str(FORMAT):
            raise StoreError(f"the index in {where} has an incompatible format; drop its collections and run "
                             "`policyqa index build`")
        return store

    def close(self) -> None:
        self.client.close()

    # ---- collections -----------------------------------------------------------------
    def _ensure(self, name: str, schema: Callable[[], tuple[Any, Any]], dim: int | None = None) -> None:
        """Create `name` if missing; recreate it when its vectors have another dimension."""
        if self.client.has_collection(name):
            if dim is None or self._dim_of(name) == dim:
                return
            self.client.drop_collection(name)
        fields, index = schema() if dim is None else schema(dim)  # type: ignore[call-arg]
        self.client.create_collection(name, schema=fields, index_params=index, consistency_level="Strong")

    def _dim_of(self, name: str) -> int | None:
        for f in self.client.describe_collection(name)["fields"]:
            if f["name"] == "vector":
                return int(f["params"]["dim"])
        return None

    def _schema(self, key, key_type, extra: Callable[[Any], None], dim: int, metric: str = "IP") -> tuple[Any, Any]:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        if key_type == "int":
            schema.add_field(key, DataType.INT64, is_primary=True)
        else:
            schema.add_field(key, DataType.VARCHAR, is_primary=True, max_length=key_type)
        extra(schema)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = MilvusClient.prepare_index_params()
        # AUTOINDEX: the server picks (HNSW on a standalone or cluster); milvus-lite searches exactly.
        index.add_index("vector", index_type="AUTOINDEX", metric_type=metric)
        return schema, index

    def _meta_schema(self) -> tuple[Any, Any]:
        from pymilvus import DataType

        return self._schema("key", 256, lambda s: s.add_field("value", DataType.VARCHAR, max_length=TEXT_MAX),
                            DUMMY_DIM)

    def _documents_schema(self) -> tuple[Any, Any]:
        from pymilvus import DataType

        def extra(s: Any) -> None:
            for name in ("title", "encoding", "content_hash", "indexed_at", "meta"):
                s.add_field(name, DataType.VARCHAR, max_length=TEXT_MAX)
            for name in ("chars", "first_id", "last_id"):
                s.add_field(name, DataType.INT64)

        return self._schema("path", 4096, extra, DUMMY_DIM)

    def _chunks_schema(self, dim: int) -> tuple[Any, Any]:
        from pymilvus import DataType

        def extra(s: Any) -> None:
            s.add_field("doc", DataType.VARCHAR, max_length=4096)
            for name in ("ordinal", "start", "end", "page"):
                s.add_field(name, DataType.INT64)
            s.add_field("section", DataType.VARCHAR, max_length=TEXT_MAX)
            s.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX)
            s.add_field("embed_hash", DataType.VARCHAR, max_length=64)

        return self._schema("id", "int", extra, dim)

    def _pending_schema(self, dim: int) -> tuple[Any, Any]:
        return self._schema("hash", 64, lambda s: None, dim)

    def _scan(self, name: str, fields: list[str], expr: str = "") -> Iterator[dict]:
        it = self.client.query_iterator(name, batch_size=SCAN_BATCH, filter=expr, output_fields=fields)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    def _get(self, name: str, keys: list, fields: list[str]) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(keys), BATCH):
            out += self.client.get(name, ids=keys[i:i + BATCH], output_fields=fields)
        return out

    def _count(self, name: str) -> int:
        if not self.client.has_collection(name):
            return 0
        return int(self.client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])

    # ---- reading -------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._scan(self.meta_name, ["key", "value"])}

    def _max_id(self) -> int:
        """The largest chunk id ever given out (ids are never reused)."""
        stored = self._meta_value("next_chunk_id")
        if stored:
            return int(stored) - 1
        if not self.client.has_collection(self.chunks):
            return 0
        return max((r["id"] for r in self._scan(self.chunks, ["id"])), default=0)

    def _meta_value(self, key: str) -> str | None:
        rows = self.client.get(self.meta_name, ids=[key], output_fields=["value"])
        return rows[0]["value"] if rows else None

    def generation(self) -> int:
        return int(self._meta_value("generation") or 0)

    def model_info(self) -> ModelInfo | None:
        m = self.meta()
        if "model" not in m:
            return None
        return ModelInfo(name=m["model"], fingerprint=m["model_fingerprint"], dim=int(m["dim"]))

    def snapshot(self) -> nullcontext[None]:
        # No read transaction across collections: what a reader sees is bounded by the
        # document ranges instead (see the module's note on commits).
        return nullcontext()

    def renew_snapshot(self) -> None:
        return None

    def _document_rows(self) -> dict[str, dict]:
        """path -> documents row, read once per committed build."""
        build = self._meta_value("build_id") or ""
        if self._documents is None or self._documents[0] != build:
            fields = ["path", "title", "content_hash", "chars", "meta", "first_id", "last_id"]
            self._documents = (build, {r["path"]: r for r in self._scan(self.docs, fields)})
        return self._documents[1]

    def _live(self, row: dict, docs: dict[str, dict]) -> bool:
        d = docs.get(row["doc"])
        return d is not None and d["first_id"] <= row["id"] <= d["last_id"]

    def load_vectors(self, generation: int) -> MilvusVectors:
        ntotal = sum(d["last_id"] - d["first_id"] + 1 for d in self._document_rows().values())
        return MilvusVectors(self.client, self.chunks, ntotal)

    def load_lexical(self, generation: int) -> lexical.LexicalIndex | None:
        """The keyword index of this generation from this machine's cache, rebuilt from the
        passages in Milvus when the cache holds another (or none)."""
        from filelock import FileLock

        build = self._meta_value("build_id") or ""
        found = self._cached_lexical(generation, build)
        if found is not None:
            return found
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / "keywords.lock")):
            found = self._cached_lexical(generation, build)
            if found is None:
                from .indexer import keyword_texts

                self._write_lexical(generation, build, self._live_chunks()[0], keyword_texts)
                found = self._cached_lexical(generation, build)
        return found

    def _keyword_stamp(self, generation: int, build: str) -> dict | None:
        """What the keyword cache holds (its segments and the chunk ids deleted since they
        were written) if it is of this generation and build, else None."""
        try:
            stamp = json.loads((self.dir / "keywords.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(stamp, dict) or (stamp.get("generation"), stamp.get("build_id")) != (generation, build) \
                or not isinstance(stamp.get("segments"), list):
            return None
        return stamp

    def _cached_lexical(self, generation: int, build: str) -> lexical.LexicalIndex | None:
        stamp = self._keyword_stamp(generation, build)
        if stamp is None:
            return None
        dead = np.array(stamp.get("dead", []), dtype=np.int64)
        return lexical.LexicalIndex.load([(self.dir / name, dead) for name in stamp["segments"]])

    def _keyword_dir(self, generation: int) -> Path:
        return self.dir / f"{KEYWORD_DIR}-{generation:06d}"

    def _write_lexical(self, generation: int, build: str, chunks: Sequence[NextChunk],
                       texts_of: Callable[[Sequence[NextChunk]], KeywordTexts],
                       previous: dict | None = None, leaving: Sequence[int] = ()) -> None:
        """The keyword index of these chunks (in id order: a document's ids are one range) as
        a segment of lexical.py's, in bounded memory like a local one. With the `previous`
        stamp, the segment is added to its segments and the `leaving` chunk ids are deleted
        from them; else it is the whole index and older segments are removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segments = list(previous["segments"]) if previous else []
        if chunks or not previous:
            texts = texts_of(chunks)
            target = self._keyword_dir(generation)
            with files.replaced(target, sync=False) as tmp:  # a cache: rebuilt from Milvus when lost
                lexical.write(tmp, np.array([c.id for c in chunks], dtype=np.int64), texts.passages,
                              [c.chunk.doc for c in chunks], texts.documents)
            segments.append(target.name)
        dead = sorted(set(previous.get("dead", [])) | {int(i) for i in leaving}) if previous else []
        with files.replaced(self.dir / "keywords.json", sync=False) as tmp:
            tmp.write_text(json.dumps({"generation": generation, "build_id": build, "segments": segments,
                                       "dead": dead}), encoding="utf-8")
        for old in self.dir.glob(f"{KEYWORD_DIR}-*"):
            if old.name not in segments:
                files.remove(old)

    def _live_chunks(self) -> tuple[list[NextChunk], list[int]]:
        """The chunks of the current generation in id order, and the ids of chunk rows that
        no document owns (what a stopped writer left)."""
        docs = self._document_rows()
        live, stale = [], []
        for r in sorted(self._scan(self.chunks, FIELDS), key=lambda r: r["id"]) \
                if self.client.has_collection(self.chunks) else []:
            if self._live(r, docs):
                live.append(NextChunk(r["id"], docs[r["doc"]]["title"], _chunk(r), r["embed_hash"]))
            else:
                stale.append(r["id"])
        return live, stale

    def _rows(self, rows: Iterable[dict]) -> list[ChunkRow]:
        docs = self._document_rows()
        out = []
        for r in rows:
            if not self._live(r, docs):
                continue
            d = docs[r["doc"]]
            c = _chunk(r)
            out.append(ChunkRow(r["id"], c.doc, d["title"], c.section, c.start, c.end, c.text, page=c.page,
                                meta=_meta(d["title"], d["meta"])))
        return out

    def chunk_rows(self, ids: Iterable[int]) -> dict[int, ChunkRow]:
        wanted = [int(i) for i in ids]
        return {r.chunk_id: r for r in self._rows(self._get(self.chunks, wanted, FIELDS))}

    def chunks_of(self, doc: str) -> list[ChunkRow]:
        rows = self._rows(self.client.query(self.chunks, filter=f"doc == {_quoted(doc)}", output_fields=FIELDS))
        return sorted(rows, key=lambda r: r.start)

    def documents(self) -> list[DocumentRow]:
        return [DocumentRow(p, d["title"], d["content_hash"], d["chars"], d["last_id"] - d["first_id"] + 1,
                            _meta(d["title"], d["meta"])) for p, d in sorted(self._document_rows().items())]

    def document_meta(self) -> dict[str, Meta]:
        return {p: _meta(d["title"], d["meta"]) for p, d in self._document_rows().items()}

    def chunk_ids_of(self, docs: Iterable[str]) -> np.ndarray:
        rows = self._document_rows()
        ranges = [np.arange(rows[p]["first_id"], rows[p]["last_id"] + 1) for p in docs if p in rows]
        return np.sort(np.concatenate(ranges)).astype(np.int64) if ranges else np.zeros(0, dtype=np.int64)

    def document_hashes(self) -> dict[str, str]:
        return {r["path"]: r["content_hash"] for r in self._scan(self.docs, ["path", "content_hash"])}

    def file_stats(self) -> dict[str, str]:
        """None are kept: an update reads every file again and compares contents."""
        return {}

    def record_stats(self, stats: dict[str, tuple[str, str]]) -> None:
        return None

    def skipped(self) -> list[SkippedRow]:
        return [SkippedRow(d, r) for d, r in sorted(json.loads(self.meta().get("skipped") or "{}").items())]

    def counts(self) -> tuple[int, int]:
        rows = self._document_rows()
        return len(rows), sum(d["last_id"] - d["first_id"] + 1 for d in rows.values())

    def size_bytes(self) -> int:
        """Bytes on this machine: a milvus-lite file and the keyword cache (a server's own
        storage is not visible to a client)."""
        paths = [p for p in self.dir.rglob("*") if p.is_file()] if self.dir.is_dir() else []
        if is_lite(self.where.uri) and Path(self.where.uri).is_file():
            paths.append(Path(self.where.uri))
        return sum(p.stat().st_size for p in paths)

    def vector_layout(self) -> dict | None:
        stored = self.meta().get("vectors")
        return json.loads(stored) if stored else None

    def checksums(self) -> dict[str, str] | None:
        return {}  # Milvus checks its own segments; `damaged` reports what policyqa can see

    def damaged(self, full: bool = True, only: str | None = None) -> list[str]:
        """What a stopped writer left: an unfinished commit, or chunk rows no document owns."""
        out = []
        if self._meta_value("writing") == "1":
            out.append(f"{self.meta_name}: a commit that did not finish")
        extra = self._count(self.chunks) - self.counts()[1]
        if extra:
            out.append(f"{self.chunks}: {extra} rows that no document owns")
        return out

    # ---- writing ------------------------------------------------------------------
    def needs_rewrite(self) -> bool:
        return self.generation() == 0 or bool(self.damaged())

    def lost_vectors(self) -> list[NextChunk]:
        """None: Milvus keeps every vector it accepted (there are no files to damage)."""
        return []

    def cached_vectors(self, hashes: Iterable[str]) -> set[str]:
        """Which of these hashes have a vector: pending, or in a chunk row of the same text,
        whose vector is copied to the pending ones here so that commit() reads only those.
        (milvus-lite 2.5 can fail to return a vector from a growing segment that has seen
        deletes: those are reported missing and embedded again.)"""
        wanted = list(dict.fromkeys(hashes))
        found: set[str] = set()
        if self.client.has_collection(self.pending):
            found = {r["hash"] for r in self._get(self.pending, wanted, ["hash"])}
        rest = [h for h in wanted if h not in found]
        if rest and self.client.has_collection(self.chunks):
            for i in range(0, len(rest), BATCH):
                try:
                    rows = self.client.query(self.chunks, filter=_in("embed_hash", rest[i:i + BATCH]),
                                             output_fields=["embed_hash", "vector"])
                except MilvusUnavailable:
                    continue
                reused = {r["embed_hash"]: r["vector"] for r in rows}
                if reused:
                    self.cache_vectors(list(reused), np.array(list(reused.values()), dtype=np.float32))
                    found |= set(reused)
        return found

    def cache_vectors(self, hashes: list[str], vectors: np.ndarray) -> None:
        if not hashes:
            return
        self._ensure(self.pending, self._pending_schema, dim=int(vectors.shape[1]))  # type: ignore[arg-type]
        self.client.upsert(self.pending, [{"hash": h, "vector": np.asarray(v, dtype=np.float32).tolist()}
                                          for h, v in zip(hashes, vectors)])

    def plan(self, model: ModelInfo, upserts: list[Upsert], removed: list[str], replace_all: bool = False,
             keep: Iterable[str] = ()) -> Plan:
        """The next generation, as store.Store.plan makes it: the new chunks under ids above
        every id used before, and the ids of the current chunks it drops."""
        old = self.model_info()
        if old and not replace_all and (old.fingerprint != model.fingerprint or old.name != model.name):
            raise StoreError(f"the index was built with {old.name}; use `policyqa index build` to change model")
        docs = self._document_rows()
        top = self._max_id()
        next_id = max([top] + [d["last_id"] for d in docs.values()] + [0]) + 1
        new = []
        for u in upserts:
            for c, h in zip(u.chunks, u.embed_hashes):
                new.append(NextChunk(next_id, u.doc.title, c, h))
                next_id += 1
        going = [] if replace_all else [u.doc.path for u in upserts] + list(removed)
        leaving = np.array([i for p in going if p in docs for i in range(docs[p]["first_id"], docs[p]["last_id"] + 1)],
                           dtype=np.int64)
        return Plan(self.generation() + 1, model, upserts, list(removed), replace_all, frozenset(keep), new, leaving)

    def commit(self, plan: Plan, settings: dict, skipped: dict[str, str],
               keywords: Callable[[Sequence[NextChunk]], KeywordTexts], optimize: bool = False) -> int:
        """Make the planned generation current (in the order the module's note gives).
        `optimize` asks nothing more of Milvus, which merges its own segments, and writes
        the keyword cache whole."""
        generation, model = plan.generation, plan.model
        # The keyword cache of the generation this one follows, if this machine holds it
        # and nothing is left to repair: the commit then adds a segment of its new chunks
        # to it instead of reading every passage back from Milvus and indexing them again.
        previous = None if plan.replace_all or optimize or self.damaged() else \
            self._keyword_stamp(self.generation(), self._meta_value("build_id") or "")
        if previous is not None and len(previous["segments"]) >= KEYWORD_SEGMENTS:
            previous = None
        if previous is None:
            current, stale = self._live_chunks()
            leaving = set(plan.leaving.tolist())
            kept = [n for n in current if (n.chunk.doc in plan.keep if plan.replace_all else n.id not in leaving)]
        else:
            stale, kept = [], []
        new = plan.new
        # Recorded before any row is written: rows a stopped writer left stay below the
        # next plan's ids, so deleting them never deletes a new chunk.
        self._set_meta({"writing": "1", "next_chunk_id": str(max([n.id for n in new] + [self._max_id()]) + 1)})
        self._ensure(self.chunks, self._chunks_schema, dim=model.dim)  # type: ignore[arg-type]
        vectors = self._vectors_for(list(dict.fromkeys(n.embed_hash for n in new)))
        for i in range(0, len(new), BATCH):
            self.client.insert(self.chunks, [_chunk_row(n, vectors[n.embed_hash]) for n in new[i:i + BATCH]])
        pause_point("vectors-written")
        old_docs = self._document_rows()
        upserted = {u.doc.path for u in plan.upserts}
        going = upserted | (set(old_docs) - plan.keep if plan.replace_all else set(plan.removed))
        dropped = [p for p in old_docs if p in going]
        by_doc: dict[str, list[int]] = {}
        for n in new:
            by_doc.setdefault(n.chunk.doc, []).append(n.id)
        stamp = now()
        first = (new[0].id if new else 1)
        rows = []
        for u in plan.upserts:
            d, ids = u.doc, by_doc.get(u.doc.path, [])
            rows.append({
                "path": d.path, "title": d.title, "encoding": d.encoding, "content_hash": d.content_hash,
                "chars": len(d.text), "indexed_at": stamp, "meta": json.dumps(d.meta.as_dict() if d.meta else {},
                                                                              ensure_ascii=False),
                # a document without passages owns the empty range just below the new ids
                "first_id": ids[0] if ids else first, "last_id": ids[-1] if ids else first - 1,
                "vector": [0.0] * DUMMY_DIM,
            })
        if rows:
            self.client.upsert(self.docs, rows)
        gone = [p for p in dropped if p not in upserted]
        for i in range(0, len(gone), BATCH):
            self.client.delete(self.docs, ids=gone[i:i + BATCH])
        stale += [i for p in dropped for i in range(old_docs[p]["first_id"], old_docs[p]["last_id"] + 1)]
        for i in range(0, len(stale), BATCH):
            self.client.delete(self.chunks, ids=stale[i:i + BATCH])
        build = uuid.uuid4().hex
        if previous is None:
            self._write_lexical(generation, build, kept + new, keywords)
        else:
            self._write_lexical(generation, build, new, keywords, previous, plan.leaving.tolist())
        live = sum(d["last_id"] - d["first_id"] + 1 for p, d in old_docs.items() if p not in dropped) + len(new)
        pause_point("committing")
        meta = self.meta()
        self._set_meta({
            "generation": str(generation), "model": model.name, "model_fingerprint": model.fingerprint,
            "dim": str(model.dim), "chunker": json.dumps(settings, sort_keys=True), "built_at": stamp,
            "created_at": meta.get("created_at") or stamp, "build_id": build, "writing": "0",
            "skipped": json.dumps(skipped, ensure_ascii=False, sort_keys=True),
            "vectors": json.dumps({"kind": "milvus", "vectors": live, "collection": self.chunks}),
        })
        if self.client.has_collection(self.pending):
            self.client.delete(self.pending, filter='hash != ""')
        pause_point("committed")
        return generation

    def _set_meta(self, values: dict[str, str]) -> None:
        self.client.upsert(self.meta_name, [{"key": k, "value": v, "vector": [0.0] * DUMMY_DIM}
                                            for k, v in values.items()])

    def _vectors_for(self, hashes: list[str]) -> dict[str, list[float]]:
        """hash -> vector, from the pending ones (cached_vectors put reused ones there)."""
        out: dict[str, list[float]] = {}
        if hashes and self.client.has_collection(self.pending):
            out = {r["hash"]: r["vector"] for r in self._get(self.pending, hashes, ["hash", "vector"])}
        if len(out) < len(hashes):
            raise StoreError(f"{len(hashes) - len(out)} chunks have no stored vector; run `policyqa index update`")
        return out


def _chunk(r: dict) -> Chunk:
    return Chunk(r["doc"], r["ordinal"], r["start"], r["end"], r["text"], r["section"] or None,
                 None if r["page"] == NO_PAGE else r["page"])


def _chunk_row(n: NextChunk, vector: list[float]) -> dict:
    c = n.chunk
    return {"id": n.id, "doc": c.doc, "ordinal": c.ordinal, "start": c.start, "end": c.end,
            "section": c.section or "", "text": c.text, "embed_hash": n.embed_hash,
            "page": NO_PAGE if c.page is None else c.page, "vector": [float(x) for x in vector]}


def _meta(title: str, stored: str) -> Meta:
    fields = json.loads(stored or "{}")
    return Meta(title=fields.get("title") or title, issuer=fields.get("issuer"),
                doc_number=fields.get("doc_number"), date=fields.get("date"))

