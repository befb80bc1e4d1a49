"""Finding the passages for a question.

Owns: the query plan (the question as embedded, and its weighted keyword terms: a
Chinese question's character bigrams, or an English question's translation into Chinese
words), the dense search (FAISS) and the keyword search (BM25, lexical.py) over the
current index generation (reloaded when another process commits a new one), restricting
both to the documents a Filter admits, their fusion, and dropping near-identical passages.

Fusion: each component's scores -- the passage's keyword BM25, its dense similarity, and
the keyword BM25 of its whole document -- are standardised over that component's top
CANDIDATES (z-scores) and summed with the weights of FUSION, tuned on NCPQA dev
(bench/retrieval.py prints each component's hit rate and the fused one).
"""
from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import numpy as np

from . import terms, translate
from .embed import BundledQueryEncoder, Encoder, ModelInfo, query_encoder
from .errors import InputError
from .lexical import BIGRAMS, WORDS, LexicalIndex
from .records import ChunkRow, Hit, Meta
from .store import VectorsGone

if TYPE_CHECKING:  # the seam to the stores (backend.py): a local index or a Milvus one
    from .backend import IndexStore, Vectors

FETCH_FACTOR = 4  # extra candidates so that near-duplicates can be dropped
DUPLICATE_JACCARD = 0.8
CANDIDATES = 50
# Weights of the components' z-scores, by how the question's keywords were cut.
FUSION = {
    BIGRAMS: {"lexical": 1.0, "dense": 0.4, "document": 0.6},  # a Chinese question
    WORDS: {"lexical": 0.6, "dense": 0.4, "document": 0.6},  # an English question's translation
}
SENSE_PASSAGES = 20  # top dense passages that vote on an English word's translation
SENSE_FLOOR = 0.1
PER_DOCUMENT = 1
SWITCH_RETRIES = 3  # a reader can lose its snapshot's vector file to two quick commits


def normalized(text: str) -> str:
    """NFKC without whitespace: how passages are compared for sameness."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _shingles(text: str) -> set[str]:
    t = normalized(text)
    return {t[i:i + 3] for i in range(max(1, len(t) - 2))}


def near_duplicate(a: set[str], b: set[str]) -> bool:
    return len(a & b) / max(1, min(len(a), len(b))) >= DUPLICATE_JACCARD


@dataclass(frozen=True)
class QueryPlan:
    text: str  # what is embedded
    terms: dict[str, float]  # keyword query: term -> weight
    translated: bool  # the keyword terms are a translation of the question
    cut: str  # lexical.WORDS or lexical.BIGRAMS: which keyword index the terms are for
    missing: int = 0  # words of the question that the corpus vocabulary cannot express
    groups: tuple[dict[str, float], ...] = ()  # translations per English word


@dataclass(frozen=True)
class SearchResult:
    """What one search found, and the evidence it was found by."""

    hits: list[Hit]
    plan: QueryPlan  # as searched: an English question's word senses chosen
    timings_ms: dict[str, float] = field(default_factory=dict)
    keywords: LexicalIndex | None = None  # the generation's keyword index that was searched

    def coverage(self, hit: Hit) -> float | None:
        """How much of the query's keyword information `hit` contains, in corpus words
        (lexical.Keywords.coverage); None without a keyword index. A "nothing relevant"
        decision separates answerable from unanswerable questions better by words than
        by bigrams (bench/found.py), so a Chinese question's words are the corpus words
        it contains, and the rest of its Han characters count as missing."""
        plan = self.plan
        if self.keywords is None or not plan.terms:
            return None
        weighted, missing = plan.terms, plan.missing
        if plan.cut != WORDS:
            found, missing = self.keywords.words.contained(plan.text, stopwords_known=True)
            weighted = {t: 1.0 for t in found}
        return self.keywords.words.coverage(weighted, self.keywords.row_of.get(hit.chunk_id), missing)


def zscores(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` standardised by the mean and spread of `reference` (a component's top
    candidates); all zero when the reference does not spread."""
    std = float(reference.std()) if len(reference) > 1 else 0.0
    if std < 1e-9:
        return np.zeros_like(values)
    return (values - float(reference.mean())) / std


def fuse(components: dict[str, tuple[np.ndarray, np.ndarray]], weights: dict[str, float]) -> np.ndarray:
    """The fused score of each candidate: the weighted sum of each component's z-scores.
    `components` maps a component name to (its scores of the candidates, its reference
    scores)."""
    total = np.zeros(len(next(iter(components.values()))[0]))
    for name, (values, reference) in components.items():
        total += weights[name] * zscores(values, reference)
    return total


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
        if self.after or self.before:
            if not meta.date:
                return False
            if self.after and meta.date < self.after:
                return False
            if self.before and meta.date > self.before:
                return False
        return not self.issuer or self.issuer.casefold() in (meta.issuer or "").casefold()

    def chunk_ids(self, store: IndexStore) -> np.ndarray:
        """The ids of every chunk of an admitted document (read inside a snapshot)."""
        return store.chunk_ids_of(p for p, m in store.document_meta().items() if self.admits(p, m))


class FilterError(InputError, ValueError):
    """Filter bounds that cannot be used; the message says why."""


def _iso_date(name: str, value: str | None) -> str | None:
    from datetime import date

    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise FilterError(f"{name} {value!r} is not a date as YYYY-MM-DD") from None


def checked_filter(
    store: IndexStore, doc: str | None = None, after: str | None = None, before: str | None = None,
    issuer: str | None = None,
) -> Filter | None:
    """The Filter for these bounds, or None when there are none. Refuses malformed dates,
    an empty date range, and bounds that admit no indexed document."""
    where = Filter(doc=doc, after=_iso_date("after date", after), before=_iso_date("before date", before),
                   issuer=issuer)
    if not where:
        return None
    if where.after and where.before and where.after > where.before:
        raise FilterError(f"after date {where.after} is later than before date {where.before}")
    if not where.chunk_ids(store).size:
        raise FilterError("no indexed document matches the filters (see `policyqa index status`)")
    return where


class Searcher:
    """Answers searches against one index directory; cheap to keep open (chat)."""

    def __init__(self, store: IndexStore, mode: str = "hybrid", translate: bool = True, chinese: str = BIGRAMS):
        self.store = store
        self.mode = mode
        self.translate = translate
        self.chinese = chinese  # how a Chinese question is cut (bench/retrieval.py compares)
        self.generation = 0
        # Set by _refresh, which every search runs first (encoder: unless mode is "lexical").
        self.vectors: Vectors | None = None
        self.lexical: LexicalIndex | None = None
        self.encoder: Encoder | BundledQueryEncoder | None = None
        self.model: ModelInfo | None = None
        self._last: tuple[str, np.ndarray] | None = None  # the last query's vector (chat's /more)

    def _refresh(self) -> None:
        """Inside a snapshot: the vectors of the snapshot's generation."""
        for attempt in range(SWITCH_RETRIES + 1):
            generation = self.store.generation()
            if generation == self.generation:
                return
            model = self.store.model_info()
            if self.mode != "lexical" and (self.encoder is None or model != self.model):
                assert model is not None, "a generation is written with the model that embedded it"
                self.encoder = query_encoder(model)
                self.model = model
                self._last = None
            try:
                self.vectors = self.store.load_vectors(generation)
            except VectorsGone:
                if attempt == SWITCH_RETRIES:
                    raise
                self.store.renew_snapshot()
                continue
            self.lexical = self.store.load_lexical(generation) if self.mode != "dense" else None
            self.generation = generation
            return

    def plan(self, query: str) -> QueryPlan:
        """How `query` would be searched in the current generation (before an English
        question's senses are chosen by its dense passages)."""
        with self.store.snapshot():
            self._refresh()
            return self._plan(query)

    def _plan(self, query: str) -> QueryPlan:
        if terms.has_han(query) or self.lexical is None or not self.translate:
            cut = terms.words if self.chinese == WORDS else terms.bigrams
            return QueryPlan(query, {t: 1.0 for t in cut(query)}, False, self.chinese)
        words = self.lexical.words
        groups, missing = translate.english_query(query, self.lexical.translations, words.document_frequency)
        return QueryPlan(query, translate.combine(groups), True, WORDS, len(missing), tuple(groups))

    def search(self, query: str, k: int, offset: int = 0, where: Filter | None = None) -> SearchResult:
        """The passages ranked offset..offset+k for `query` among those `where` admits."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with self.store.snapshot():
            self._refresh()
            timings["load_ms"] = (time.perf_counter() - t0) * 1000
            plan = self._plan(query)
            t1 = time.perf_counter()
            q = self._query_vector(query) if self.mode != "lexical" else None
            if q is not None and plan.translated and plan.groups:
                # e5 matches Chinese with Chinese far better than English with Chinese.
                words = "".join(max(g, key=g.__getitem__) for g in plan.groups)
                q = q + self._query_vector(words)
                q = q / np.linalg.norm(q)
            timings["embed_ms"] = (time.perf_counter() - t1) * 1000
            t2 = time.perf_counter()
            plan, ranked = self._rank(plan, q, max(CANDIDATES, (offset + k) * FETCH_FACTOR), where)
            rows = self.store.chunk_rows(cid for cid, _ in ranked)
        hits = distinct([(rows[cid], sc) for cid, sc in ranked if cid in rows], offset + k)
        timings["search_ms"] = (time.perf_counter() - t2) * 1000
        return SearchResult(hits[offset:offset + k], plan, timings, self.lexical)

    def _rank(self, plan: QueryPlan, q: np.ndarray | None, fetch: int,
              where: Filter | None) -> tuple[QueryPlan, list[tuple[int, dict[str, float]]]]:
        """The plan as searched, and (chunk id, component scores) best first: dense, then
        an English word's senses chosen by the dense passages, then keywords, then fused
        ("fused" orders them)."""
        vectors, lexical = self.vectors, self.lexical
        assert vectors is not None, "_refresh loads them"
        allowed = where.chunk_ids(self.store) if where else None
        fetch = min(vectors.ntotal if allowed is None else len(allowed), fetch)
        if not fetch:
            return plan, []
        dense: dict[int, float] = {}
        if q is not None:
            scores, ids = self._nearest(q[None, :], fetch, allowed)
            dense = {int(i): float(s) for s, i in zip(scores[0], ids[0]) if i >= 0}
        if plan.translated and dense:
            plan = self._choose_senses(plan, list(dense)[:SENSE_PASSAGES])
        keywords = lexical.keywords(plan.cut) if lexical is not None else None
        lex: dict[int, float] = {}
        dense_lex: dict[int, float] = {}  # the keyword scores of the dense candidates
        row_of = lexical.row_of if lexical is not None else None
        if lexical is not None and keywords is not None and row_of is not None and plan.terms:
            admitted = None
            if allowed is not None:
                admitted = np.zeros(keywords.passages.rows, dtype=bool)
                allowed_rows = row_of.rows(np.asarray(allowed, dtype=np.int64))
                admitted[allowed_rows[allowed_rows >= 0]] = True
            dense_ids = np.fromiter(dense, np.int64, len(dense))
            wanted = {int(r): int(c) for r, c in zip(row_of.rows(dense_ids), dense_ids) if r >= 0}
            rows = sorted(wanted)
            scored = keywords.top(plan.terms, fetch, np.array(rows, dtype=np.int64), admitted)
            lex = {int(c): float(sc) for c, sc in zip(lexical.ids.take(scored.rows), scored.scores)}
            dense_lex = {wanted[r]: float(sc) for r, sc in zip(rows, scored.wanted)}
        if not lex:
            return plan, [(cid, {"dense": s, "fused": s}) for cid, s in sorted(dense.items(), key=lambda kv: -kv[1])]
        if not dense:
            return plan, [(cid, {"lexical": s, "fused": s}) for cid, s in sorted(lex.items(), key=lambda kv: -kv[1])]
        assert lexical is not None and keywords is not None and row_of is not None and q is not None, \
            "lex is only filled from the keyword index, dense only from the query vector"
        union = list(dict.fromkeys(list(dense) + list(lex)))
        dense_u = self._dense_scores(q, union, dense)
        lex_u = np.array([lex[c] if c in lex else dense_lex.get(c, 0.0) for c in union])
        # Whole-document keyword evidence: a question often names the region or body in the
        # title and its subject in passages that never repeat them.
        doc_all = keywords.document_scores(plan.terms)
        union_rows = row_of.rows(np.array(union, dtype=np.int64))
        union_docs = lexical.chunk_documents.take(np.maximum(union_rows, 0))
        doc_u = np.where(union_rows >= 0, doc_all[union_docs].astype(np.float64), 0.0)
        live_docs = keywords.documents.live()  # a replaced document's row is not one of the library's
        fused = fuse({
            "lexical": (lex_u, np.array(list(lex.values()))),
            "dense": (dense_u, np.array(list(dense.values()))),
            "document": (doc_u, np.sort(doc_all if live_docs is None else doc_all[live_docs])[-CANDIDATES:]),
        }, FUSION[plan.cut])
        order = np.argsort(-fused, kind="stable")
        return plan, [(union[i], {"lexical": float(lex_u[i]), "dense": float(dense_u[i]), "document": float(doc_u[i]),
                            "fused": float(fused[i])}) for i in order]

    def _choose_senses(self, plan: QueryPlan, chunk_ids: list[int]) -> QueryPlan:
        """Among an English word's translations, prefer those the passages found by meaning
        use: the dictionary cannot tell which sense the question means, the dense pass can."""
        lexical = self.lexical
        assert lexical is not None, "a plan is only translated with a keyword index (_plan)"
        rows = lexical.row_of.rows(np.array(chunk_ids, dtype=np.int64))
        rows = np.sort(rows[rows >= 0])
        if not len(rows):
            return plan
        words = lexical.words

        def prior(term: str) -> float:
            return SENSE_FLOOR + words.share_containing(term, rows)

        return replace(plan, terms=translate.combine(plan.groups, prior))

    def _dense_scores(self, q: np.ndarray, ids: list[int], known: dict[int, float]) -> np.ndarray:
        missing = [c for c in ids if c not in known]
        extra: dict[int, float] = {}
        if missing:
            assert self.vectors is not None, "_refresh loads them"
            extra = dict(zip(missing, self.vectors.scores(q, missing).tolist()))
        return np.array([known.get(c, extra.get(c, 0.0)) for c in ids])

    def _nearest(self, q: np.ndarray, n: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search; a filter's chunk ids become an id selector, so the n best admitted
        chunks come back however few of the index they are."""
        assert self.vectors is not None, "_refresh loads them"
        fetch = min(self.vectors.ntotal if allowed is None else len(allowed), n)
        if not fetch:
            return np.zeros((1, 0), dtype=np.float32), np.zeros((1, 0), dtype=np.int64)
        return self.vectors.search(q, fetch, allowed)

    def _query_vector(self, query: str) -> np.ndarray:
        if self._last is None or self._last[0] != query:
            assert self.encoder is not None, "_refresh loads it unless the mode is lexical"
            self._last = (query, np.asarray(self.encoder.query(query), dtype=np.float32))
        return self._last[1]


def distinct(ranked: list[tuple[ChunkRow, dict[str, float]]], limit: int) -> list[Hit]:
    """Near-identical passages once; past PER_DOCUMENT passages of one document, the
    rest of it waits until other documents have had their turn (diversity by document)."""
    out: list[Hit] = []
    deferred: list[Hit] = []
    seen: list[tuple[str, set[str]]] = []
    per_doc: dict[str, int] = {}
    for row, scores in ranked:
        sh = _shingles(row.text)
        # Across documents a copy is another source (and reposted notices are common).
        if any(doc == row.doc and near_duplicate(sh, s) for doc, s in seen):
            continue
        seen.append((row.doc, sh))
        hit = Hit.of(row, scores["fused"], scores)
        per_doc[row.doc] = per_doc.get(row.doc, 0) + 1
        (out if per_doc[row.doc] <= PER_DOCUMENT else deferred).append(hit)
        if len(out) == limit:
            break
    return (out + deferred)[:limit]
