"""Building and updating an index from a corpus directory.

Owns: comparing the corpus with the index by content hash, deciding what to re-embed,
and wiring load -> clean -> chunk -> embed -> store for the documents that changed.
Embedding results are cached as they are produced, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, overload

from . import chunk as chunking
from .backend import MilvusLocation, writing
from .chunk import search_text
from .clean import clean
from .embed import BUNDLED, Encoder, ModelError, passage_encoder
from .load import CorpusError, Unreadable, corpus_files, read_document, relative_name
from .metadata import describe
from .records import Document
from .store import KeywordTexts, NextChunk, Store, Upsert, pause_point, writer_lock

if TYPE_CHECKING:
    from .backend import IndexStore, Location

EMBED_BATCH = 64
KEPT_NOTE = "; its last indexed version is kept"
WRITER_WAIT_S = 60.0
RACY_NS = 2_000_000_000
_encoders: dict[tuple[str, str | None], Encoder] = {}  # `index watch` updates many times


@dataclass
class Report:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0
    chunks: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, unchanged {self.unchanged}, removed {self.removed} "
            f"({self.chunks_embedded} chunks embedded) in {self.seconds:.1f} s"
        )


class Progress(Protocol):
    """What the indexer tells its caller as it goes (render.BuildProgress has the same
    methods); a subclass overrides those it shows, the rest say nothing."""

    def reading(self, total_files: int) -> None:
        return None

    def read_one(self, path: str) -> None:
        return None

    def embedding(self, total_chunks: int) -> None:
        return None

    def embedded(self, n: int) -> None:
        return None

    def warn(self, message: str) -> None:
        return None

    def note(self, message: str) -> None:
        return None


class _Silent(Progress):
    """The default: says nothing."""


def embed_hash(fingerprint: str, text: str) -> str:
    return hashlib.sha256(f"{fingerprint}\n{text}".encode()).hexdigest()


def update(
    corpus: Path,
    index_dir: Location,
    model_name: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
    writer_wait_s: float = WRITER_WAIT_S,
    engine: str | None = None,
    optimize: bool = False,
) -> Report:
    """Bring the index in line with the corpus. `full` re-reads everything and writes a new
    index from it (and may change the model; a damaged database is started over);
    otherwise only new and changed files are read again. Either way only passages whose
    vector is not cached are embedded.
    `engine` computes the passages (see embed.passage_encoder); a second writer waits up
    to `writer_wait_s` seconds for the first. `optimize` rewrites the index as one segment
    (store.merge_plan merges some at every commit), every file written again. `index_dir`
    may name a Milvus store instead (backend.MilvusLocation)."""
    progress = progress or _Silent()
    started = time.monotonic()
    if not corpus.is_dir():
        raise CorpusError(f"corpus directory not found: {corpus}")
    if isinstance(index_dir, MilvusLocation):
        with writing(index_dir, writer_wait_s, on_wait=progress.note) as milvus:
            report = _update_locked(milvus, corpus, model_name, full, progress, engine, optimize)
        report.seconds = time.monotonic() - started
        return report
    index_dir.mkdir(parents=True, exist_ok=True)
    with writer_lock(index_dir, writer_wait_s, on_wait=progress.note):
        store = Store.create_or_open(index_dir, start_over=progress.warn if full else None)
        try:
            report = _update_locked(store, corpus, model_name, full, progress, engine, optimize)
        finally:
            store.close()
    report.seconds = time.monotonic() - started
    return report


def _encoder(name: str, engine: str | None, progress: Progress) -> Encoder:
    key = (name, engine or os.environ.get("POLICYQA_ENGINE"))
    if key not in _encoders:
        _encoders[key] = passage_encoder(name, engine, progress.note)
    return _encoders[key]


def _update_locked(
    store: Store | IndexStore, corpus: Path, model_name: str | None, full: bool, progress: Progress,
    engine: str | None, optimize: bool = False,
) -> Report:
    current = store.model_info()
    if current and model_name and model_name != current.name and not full:
        raise ModelError(f"the index was built with {current.name}; use `policyqa index build --model` to change it")
    name = model_name or (current.name if current else BUNDLED)
    encoder: Encoder | None = None
    if full or not current:
        encoder = _encoder(name, engine, progress)
        model = encoder.info
    else:
        model = current

    indexed = store.document_hashes()
    known = {} if full else indexed
    # An update trusts a file whose size and modification time are what they were when
    # it was read (as make and git do) and does not read it again: at a province's
    # library, reading every file costs more than the rest of a one-document update.
    stats = {} if full else store.file_stats()
    restat: dict[str, tuple[str, str]] = {}
    stat_of: dict[str, str | None] = {}
    # A file that was indexed and can no longer be read keeps its last indexed version,
    # on a full rebuild too, as long as its vectors come from the same model.
    can_keep = current is not None and current == model
    files = corpus_files(corpus)
    progress.reading(len(files))
    report = Report()
    changed: list[Document] = []
    present: set[str] = set()
    for path in files:
        rel = relative_name(path, corpus)
        present.add(rel)
        stat = stat_of[rel] = file_stat(path)
        if stat is not None and rel in known and stats.get(rel) == stat:
            report.unchanged += 1
            progress.read_one(rel)
            continue
        try:
            doc = read_document(path, corpus)
        except Unreadable as exc:
            reason = str(exc) + (KEPT_NOTE if can_keep and rel in indexed else "")
            report.skipped[rel] = reason
            progress.warn(f"skipped {rel}: {reason}")
            progress.read_one(rel)
            continue
        if known.get(rel) == doc.content_hash:
            report.unchanged += 1
            if stat is not None:
                restat[rel] = (doc.content_hash, stat)
        else:
            changed.append(_described(clean(doc)))
        progress.read_one(rel)
    removed = [p for p in indexed if p not in present] if not full else []
    keep = [p for p in report.skipped if p in indexed] if can_keep else []

    upserts = []
    for doc in changed:
        chunks = chunking.chunk_document(doc)
        hashes = [embed_hash(model.fingerprint, search_text(doc.title, c)) for c in chunks]
        upserts.append(Upsert(doc, chunks, hashes, stat_of.get(doc.path)))
        if doc.path in known:
            report.updated += 1
        else:
            report.added += 1
    report.removed = len(removed)

    todo = _to_embed(store, upserts)
    if todo:
        encoder = encoder or _encoder(model.name, engine, progress)
        if encoder.info.fingerprint != model.fingerprint:
            raise ModelError(f"model {model.name} has changed since the index was built; run `policyqa index build`")
        report.chunks_embedded = _embed(store, encoder, todo, progress)
    if upserts or removed or full or optimize or store.needs_rewrite() or report.skipped != _skipped(store):
        plan = store.plan(model, upserts, removed, replace_all=full, keep=keep)
        store.commit(plan, chunking.SETTINGS, report.skipped, keyword_texts, optimize=optimize)
    if restat:
        store.record_stats(restat)
    report.chunks = store.counts()[1]
    return report


def file_stat(path: Path) -> str | None:
    """The file's size and modification time ("size:mtime_ns"), taken before it is read,
    or None while its modification time is within RACY_NS of now: a file changed again
    within the clock's granularity (2 s on FAT) after it was read could keep this stat,
    so it is read again next time."""
    try:
        st = path.stat()
    except OSError:
        return None
    if time.time_ns() - st.st_mtime_ns < RACY_NS:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _described(doc: Document) -> Document:
    meta = describe(doc)
    return replace(doc, meta=meta, title=meta.title)


def _skipped(store: Store | IndexStore) -> dict[str, str]:
    return {s.doc: s.reason for s in store.skipped()}


def keyword_texts(chunks: Sequence[NextChunk]) -> KeywordTexts:
    """The keyword index of a segment's chunks is over the same contextual text that is
    embedded (title, section, passage), and over their whole documents (title and passages
    in order; a segment holds every chunk of its documents)."""
    return KeywordTexts(_PassageTexts(chunks), _DocumentTexts(chunks))


class _PassageTexts(Sequence[str]):
    """Each chunk's contextual text, made when it is read."""

    def __init__(self, chunks: Sequence[NextChunk]):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [search_text(n.title, n.chunk) for n in self.chunks[i]]
        return search_text(self.chunks[i].title, self.chunks[i].chunk)


class _DocumentTexts(Mapping[str, str]):
    """Each document's text (its title and its chunks in order), made when it is read."""

    def __init__(self, chunks: Sequence[NextChunk]):
        self.chunks: dict[str, list[NextChunk]] = {}
        for n in chunks:
            self.chunks.setdefault(n.chunk.doc, []).append(n)

    def __getitem__(self, doc: str) -> str:
        parts = sorted(self.chunks[doc], key=lambda n: n.chunk.ordinal)
        return "\n".join([parts[0].title] + [n.chunk.text for n in parts])

    def __iter__(self) -> Iterator[str]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def _to_embed(store: Store | IndexStore, upserts: list[Upsert]) -> dict[str, str]:
    """hash -> text for every chunk whose vector is not stored yet, and for every kept
    chunk whose stored vector was lost with a damaged file. The hash covers the model's
    fingerprint and the text, so a cached vector is the one a rebuild would compute."""
    wanted = {n.embed_hash: search_text(n.title, n.chunk) for n in store.lost_vectors()}
    for u in upserts:
        for c, h in zip(u.chunks, u.embed_hashes):
            wanted[h] = search_text(u.doc.title, c)
    for h in store.cached_vectors(wanted):
        del wanted[h]
    return wanted


def _embed(store: Store | IndexStore, encoder: Encoder, todo: dict[str, str], progress: Progress) -> int:
    # Sorted by length so each batch pads little: this keeps build throughput at the
    # model's raw encode throughput.
    items = sorted(todo.items(), key=lambda kv: len(kv[1]))
    progress.embedding(len(items))
    for i in range(0, len(items), EMBED_BATCH):
        batch = items[i:i + EMBED_BATCH]
        pause_point("embedding")
        vectors = encoder.passages([t for _, t in batch], batch_size=EMBED_BATCH)
        store.cache_vectors([h for h, _ in batch], vectors)
        progress.embedded(len(batch))
        pause_point("embedded")
    return len(items)

