"""The dense index of a generation (vectors.py) with real FAISS, and the bf16 parity check."""
from __future__ import annotations

import ctypes
import json
import mmap

import faiss
import numpy as np
import pytest
import torch

from policyqa import vectors as dense
from policyqa.embed import PARITY_COSINE, keeps_parity

from conftest import run_cli

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around the same 60 topics (whatever the seed), as passages of a corpus are."""
    centres = np.random.default_rng(0).standard_normal((60, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 60, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(x @ q))[:k]]


@pytest.fixture
def small_exact(monkeypatch):
    """IVF from 1,000 vectors on, so that tests stay fast."""
    monkeypatch.setattr(dense, "EXACT_UP_TO", 1000)


def written(tmp_path, ids, x, previous=None):
    index, layout = dense.build(ids, x, DIM, previous)
    path = tmp_path / f"v{len(list(tmp_path.iterdir()))}.faiss"
    faiss.write_index(index, str(path))  # the format store.py serializes
    return dense.Vectors.open(path), layout, path


def test_small_corpus_stays_exact(tmp_path):
    x = clustered(500)
    ids = np.arange(10, 510, dtype=np.int64) * 3
    vectors, layout, _ = written(tmp_path, ids, x)
    assert layout == dense.Layout("exact", 500)
    assert not vectors.ivf
    q = x[7]
    _, found = vectors.search(q[None, :], 10)
    assert found[0].tolist() == exact_top(x, ids, q, 10).tolist()
    assert np.allclose(vectors.scores(q, [30, 42]), x[[0, 4]] @ q, atol=1e-6)


def test_ivf_recall_is_measured_and_holds_for_other_questions(tmp_path, small_exact):
    x = clustered(6000)
    ids = np.arange(1, 6001, dtype=np.int64)
    vectors, layout, _ = written(tmp_path, ids, x)
    assert vectors.ivf and layout.kind == "ivf"
    assert layout.nlist == dense.nlist_for(6000) and layout.nlist < layout.vectors
    assert layout.recall_at_10 >= dense.RECALL_TARGET
    assert layout.recall_queries == dense.RECALL_QUERIES
    assert 0 < layout.nprobe < layout.nlist  # approximate: not every list is scanned
    # Questions that are not in the corpus: the recall carries over.
    questions = clustered(200, seed=1)
    _, found = vectors.search(questions, 10)
    recall = np.mean([len(set(f) & set(exact_top(x, ids, q, 10))) / 10 for f, q in zip(found.tolist(), questions)])
    assert recall >= 0.95


def test_ivf_is_memory_mapped_and_survives_its_file_being_replaced(tmp_path, small_exact):
    x = clustered(3000)
    ids = np.arange(1, 3001, dtype=np.int64)
    vectors, _, path = written(tmp_path, ids, x)
    assert isinstance(faiss.downcast_InvertedLists(vectors.index.invlists), faiss.OnDiskInvertedLists)
    before = vectors.search(x[:3], 10)
    path.unlink()  # what a commit two generations later does to a reader's file
    after = vectors.search(x[:3], 10)
    assert np.array_equal(before[1], after[1])


def test_ivf_filters_admit_exactly_their_ids(tmp_path, small_exact):
    x = clustered(5000)
    ids = np.arange(1, 5001, dtype=np.int64) * 2
    vectors, _, _ = written(tmp_path, ids, x)
    rng = np.random.default_rng(3)
    few = np.sort(rng.choice(ids, 40, replace=False))
    half = np.sort(rng.choice(ids, 2500, replace=False))
    for q in x[rng.choice(5000, 20, replace=False)]:
        _, found = vectors.search(q[None, :], 10, allowed=few)
        # A small filter scans every list: the exact best of what it admits.
        pos = np.searchsorted(ids, few)
        assert found[0].tolist() == exact_top(x[pos], few, q, 10).tolist()
        _, found = vectors.search(q[None, :], 10, allowed=half)
        assert set(found[0].tolist()) <= set(half.tolist())
        assert (found[0] >= 0).all()


def test_ivf_scores_are_exact_for_any_id(tmp_path, small_exact):
    x = clustered(3000)
    ids = np.arange(1, 3001, dtype=np.int64)
    vectors, _, _ = written(tmp_path, ids, x)
    q = clustered(1, seed=9)[0]
    far = [int(i) for i in np.argsort(x @ q)[:5] + 1]  # the least similar: in lists a search never probes
    assert np.allclose(vectors.scores(q, far), x[np.array(far) - 1] @ q, atol=1e-5)


def test_an_update_reuses_the_trained_lists(tmp_path, small_exact):
    x = clustered(4000)
    first, _, path = written(tmp_path, np.arange(1, 3001, dtype=np.int64), x[:3000])
    second, layout, _ = written(tmp_path, np.arange(1, 4001, dtype=np.int64), x, previous=path)
    assert layout.nlist == first.index.nlist != dense.nlist_for(4000)
    centroids = first.index.quantizer.reconstruct_n(0, first.index.nlist)
    assert np.array_equal(centroids, second.index.quantizer.reconstruct_n(0, layout.nlist))
    assert layout.recall_at_10 >= dense.RECALL_TARGET
    # Far outside the factor 2 the lists are trained afresh.
    _, fresh, _ = written(tmp_path, np.arange(1, 1301, dtype=np.int64), x[:1300], previous=path)
    assert fresh.nlist == dense.nlist_for(1300)


def test_parity_check_keeps_bf16_only_when_vectors_stay(tmp_path):
    rng = np.random.default_rng(0)
    notes: list[str] = []

    def encoder(inputs: torch.Tensor, weights: torch.Tensor):
        def encode(bf16: bool) -> np.ndarray:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return (inputs @ weights).float().numpy()
        return encode

    well = encoder(torch.tensor(rng.standard_normal((8, 64)), dtype=torch.float32),
                   torch.tensor(rng.standard_normal((64, 32)), dtype=torch.float32))
    assert keeps_parity(well, notes.append)
    assert notes == []
    # 1 + 2**-10 is 1 in bf16: the difference of the two columns vanishes, the vector turns.
    ill = encoder(torch.tensor([[1.0, 1.0 + 2 ** -10, 2 ** -10]] * 4),
                  torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    assert not keeps_parity(ill, notes.append)
    assert len(notes) == 1 and "fp32" in notes[0] and str(PARITY_COSINE) in notes[0]


def test_index_status_shows_how_vectors_are_indexed(seed_index):
    proc = run_cli("index", "status", "--json", "--index", str(seed_index))
    assert proc.returncode == 0, proc.stderr
    layout = json.loads(proc.stdout)["vectors"]
    assert layout["kind"] == "exact" and layout["recall_at_10"] == 1.0
    assert layout["vectors"] == json.loads(proc.stdout)["chunks"]


def test_segments_search_as_one_index_without_tombstoned_ids(tmp_path, small_exact):
    x = clustered(3000)
    ids = np.arange(1, 3001, dtype=np.int64)
    _, _, base_path = written(tmp_path, ids[:2500], x[:2500])  # IVF
    _, _, delta_path = written(tmp_path, ids[2500:], x[2500:])  # exact
    base_index = dense.Vectors.open(base_path).index
    held, positions = dense.list_positions(base_index)
    assert np.array_equal(held, ids[:2500])
    base = dense.Vectors.open(base_path, ids[:2500], positions)
    delta = dense.Vectors.open(delta_path, ids[2500:])
    dead = ids[:2500][::7]
    segments = dense.Segments([(base, dead), (delta, np.zeros(0, np.int64))])
    assert segments.ntotal == 3000 - len(dead)
    q = clustered(1, seed=5)[0]
    scores, found = segments.search(q[None, :], 20)
    assert not set(found[0].tolist()) & set(dead.tolist())
    live = np.setdiff1d(ids, dead)
    exact = exact_top(x[live - 1], live, q, 20)
    assert len(set(found[0].tolist()) & set(exact.tolist())) >= 16
    assert np.all(np.diff(scores[0]) <= 1e-6)  # best first across segments
    some = [int(live[3]), 2999, int(dead[2])]  # a tombstoned row still holds its vector
    assert np.array_equal(segments.vectors(np.array(some)), x[np.array(some) - 1])
    assert np.allclose(segments.scores(q, some), x[np.array(some) - 1] @ q, atol=1e-5)
    # without kept positions they are found from the lists themselves
    assert np.array_equal(dense.Vectors.open(base_path, ids[:2500]).vectors(np.array([7, 3, 2400])), x[[6, 2, 2399]])
    with pytest.raises(KeyError):
        segments.vectors(np.array([5000]))


def _resident_pages(path) -> tuple[int, int]:
    """(pages of the file in the page cache, pages of the file), by mincore(2)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as fh:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        finally:
            libc.munmap(addr, size)
    return sum(v & 1 for v in vec), pages


@pytest.mark.parametrize("dropped", [True, False])
def test_a_written_ivf_file_leaves_the_page_cache(tmp_path, monkeypatch, dropped):
    """Searches map an IVF file's lists; a writer's pages would be mapped whole (files.drop_cached)."""
    from policyqa import files, indexer
    from policyqa.store import Store

    from conftest import CORPUS
    from fakes import NAME as FAKE

    monkeypatch.setattr(dense, "EXACT_UP_TO", 8)
    if not dropped:  # what the test tells apart: the file as the writer left it
        monkeypatch.setattr(files, "drop_cached", lambda path: None)
    indexer.update(CORPUS, tmp_path / "index", model_name=FAKE)
    store = Store.open(tmp_path / "index")
    assert store.vector_layout()["kind"] == "ivf"
    store.close()
    path, = (tmp_path / "index").glob("segment-*/vectors.faiss")
    resident, pages = _resident_pages(path)
    assert pages > 1 and resident == (0 if dropped else pages)
