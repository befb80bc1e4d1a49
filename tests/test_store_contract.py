"""The store contract, once for each backend: the local index directory and Milvus
(milvus-lite in a temporary file; a Milvus server on 127.0.0.1 where one is given by
POLICYQA_TEST_MILVUS_URI). The real CLI in subprocesses, with the instant fake model of
fakes.py registered by a launcher, builds, updates and searches; the same assertions
hold for every backend, and both backends rank a question's passages alike."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from policyqa import indexer
from policyqa.backend import location, open_store
from policyqa.search import Filter, FilterError, Searcher, checked_filter

from conftest import CLI_CWD, cli_env
from fakes import NAME as FAKE

TESTS = Path(__file__).resolve().parent
# `policyqa ARGS` with the fake model registered in the process (embed.register_model)
LAUNCH = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import fakes; "
          "from policyqa.__main__ import main; sys.exit(main())")
SERVER_ENV = "POLICYQA_TEST_MILVUS_URI"

DOCS = {
    "berries.txt": "甲市关于蓝莓种植补贴的通知\n发文机关：甲市农业农村局\n发布日期：2021年3月5日\n"
                   "一、对蓝莓种植户每亩补贴三百元。\n二、补贴资金由市财政局拨付。",
    "cold-chain.txt": "乙市关于猕猴桃冷链物流的通知\n发文机关：乙市商务局\n发布日期：2022年7月1日\n"
                      "一、猕猴桃冷链运输给予运费补助。\n二、冷库建设按投资额的百分之十奖励。",
    "sub/loans.txt": "丙市科技企业贷款贴息办法\n发文机关：丙市科学技术局\n发布日期：2023年9月20日\n"
                     "一、科技企业银行贷款按实际利息的一半给予贴息。\n二、每家企业每年贴息不超过五十万元。",
}
QUESTIONS = ["猕猴桃冷链运输补助", "蓝莓种植补贴多少", "科技企业贷款贴息", "冷库建设奖励"]

# without the `milvus` extra only the local store is tested (found, not imported: importing
# milvus-lite here would warn about pkg_resources in the test report)
HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))


@dataclass
class Backend:
    name: str
    args: list[str]  # what names the index on the command line
    root: Path

    def run(self, *args: str, corpus: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        corpus_args = ["--corpus", str(corpus)] if corpus else []
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCH, *args, *corpus_args, *self.args], cwd=CLI_CWD,
            env=cli_env(POLICYQA_CACHE=str(self.root / "cache")), capture_output=True, text=True,
            encoding="utf-8", timeout=300,
        )
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def json(self, *args: str, corpus: Path | None = None) -> dict:
        return json.loads(self.run(*args, "--json", corpus=corpus).stdout)

    def ask(self, question: str, *extra: str) -> dict:
        return self.json("ask", question, *extra)


def _backends() -> list:
    out = [pytest.param("local", id="local")]
    lite = pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus and milvus-lite (the milvus extra) not installed")
    out.append(pytest.param("milvus-lite", id="milvus-lite", marks=lite))
    server = pytest.mark.skipif(not (HAVE_MILVUS and os.environ.get(SERVER_ENV)),
                                reason=f"no Milvus server: set {SERVER_ENV}=http://127.0.0.1:PORT to test one")
    out.append(pytest.param("milvus-server", id="milvus-server", marks=server))
    return out


def make_backend(kind: str, root: Path) -> Backend:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        return Backend(kind, ["--index", str(root / "index")], root)
    if kind == "milvus-lite":
        return Backend(kind, ["--store", str(root / "policyqa.db")], root)
    # a server is shared: collections of a name no other test uses
    backend = Backend(kind, ["--store", os.environ[SERVER_ENV]], root)
    os.environ["POLICYQA_MILVUS_PREFIX"] = "t" + uuid.uuid4().hex[:12]
    return backend


def write_corpus(folder: Path, docs: dict[str, str]) -> Path:
    for name, text in docs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module", params=_backends())
def built(request, tmp_path_factory):
    """An index of DOCS in each backend, built once by `index build` (read-only tests)."""
    root = tmp_path_factory.mktemp(request.param)
    corpus = write_corpus(root / "corpus", DOCS)
    backend = make_backend(request.param, root)
    backend.run("index", "build", "--model", FAKE, corpus=corpus)
    return backend, corpus


@pytest.fixture(params=_backends())
def fresh(request, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    backend = make_backend(request.param, tmp_path / "store")
    backend.run("index", "build", "--model", FAKE, corpus=corpus)
    return backend, corpus


def test_build_and_status(built):
    backend, _ = built
    status = backend.json("index", "status")
    assert status["documents"] == 3 and status["model"] == FAKE
    docs = {d["doc"]: d for d in status["docs"]}
    assert sorted(docs) == sorted(DOCS)
    assert status["chunks"] == sum(d["chunks"] for d in docs.values()) > 0
    assert docs["sub/loans.txt"]["meta"]["issuer"] == "丙市科学技术局"
    assert docs["berries.txt"]["meta"]["date"] == "2021-03-05"
    verified = backend.json("index", "status", "--verify")
    assert verified["damaged"] == []


def test_ask_json_cites_the_document_and_its_characters(built):
    backend, corpus = built
    answer = backend.ask("猕猴桃冷链运输给予运费补助吗")
    assert set(answer) >= {"question", "found", "answer", "passages", "timings_ms", "generated"}
    top = answer["passages"][0]
    assert top["doc"] == "cold-chain.txt" and top["citation"] == 1 and top["rank"] == 1
    assert set(top) >= {"title", "section", "page", "meta", "start", "end", "text", "score", "scores"}
    for p in answer["passages"]:
        text = (corpus / p["doc"]).read_text(encoding="utf-8")
        assert text[p["start"]:p["end"]] == p["text"]
    assert top["meta"]["issuer"] == "乙市商务局"
    assert answer["answer"]
    for sentence in answer["answer"]:  # offsets in the cited document
        cited = answer["passages"][sentence["citation"] - 1]
        text = (corpus / cited["doc"]).read_text(encoding="utf-8")
        assert text[sentence["start"]:sentence["end"]] == sentence["text"]


@pytest.fixture(scope="module", params=_backends())
def opened(request, tmp_path_factory):
    """DOCS indexed and opened in this process, in each backend (searched in milliseconds)."""
    root = tmp_path_factory.mktemp(request.param + "-open")
    corpus = write_corpus(root / "corpus", DOCS)
    backend = make_backend(request.param, root)
    where = location(Path(backend.args[1]), backend.args[1] if backend.args[0] == "--store" else None)
    indexer.update(corpus, where, model_name=FAKE)
    store = open_store(where)
    yield request.param, store
    store.close()


def test_filters_admit_by_document_date_and_issuer(opened):
    _, store = opened
    searcher = Searcher(store)

    def docs(**bounds: str) -> set[str]:
        where = checked_filter(store, **bounds)
        return {h.doc for h in searcher.search("补贴补助贴息奖励", 10, where=where).hits}

    assert docs() == set(DOCS)
    assert docs(doc="loans.txt") == {"sub/loans.txt"}  # the file name alone
    assert docs(doc="sub/*") == {"sub/loans.txt"}
    assert docs(doc="*[!s].txt") == {"cold-chain.txt"}
    assert docs(after="2022-07-01") == {"cold-chain.txt", "sub/loans.txt"}  # inclusive bounds
    assert docs(before="2022-07-01", after="2021-03-06") == {"cold-chain.txt"}
    assert docs(issuer="农业农村") == {"berries.txt"}
    assert docs(issuer="丙市", doc="*.txt", before="2030-01-01") == {"sub/loans.txt"}
    with pytest.raises(FilterError, match="no indexed document matches"):
        checked_filter(store, issuer="海关")


@pytest.fixture(scope="module")
def local_searcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    indexer.update(write_corpus(root / "corpus", DOCS), root / "index", model_name=FAKE)
    store = open_store(root / "index")
    yield Searcher(store)
    store.close()


def test_every_backend_ranks_as_the_local_store(opened, local_searcher):
    """The same fusion over the same keyword index and (to float rounding) the same vectors."""
    kind, store = opened
    if kind == "local":
        pytest.skip("the reference itself")
    searcher = Searcher(store)
    for question in QUESTIONS:
        for where in (None, Filter(doc="*.txt", after="2021-06-01")):
            # passages of equal score may come in either order (a server's ANN index), and
            # which of them makes the cut is then arbitrary
            got, want = (
                sorted((-round(h.score, 3), h.doc, h.start, h.end) for h in s.search(question, 6, where=where).hits)
                for s in (searcher, local_searcher))
            last = want[-1][0]
            assert len(got) == len(want) and got[-1][0] == last, question
            assert [g for g in got if g[0] != last] == [w for w in want if w[0] != last], question
    # the keyword index is this machine's cache of what Milvus holds: without it, rebuilt
    shutil.rmtree(store.dir)
    fresh = Searcher(store)
    assert [h.text for h in fresh.search(QUESTIONS[0], 3).hits] == \
        [h.text for h in local_searcher.search(QUESTIONS[0], 3).hits]


def test_update_embeds_only_the_changed_document_and_removes_a_deleted_one(fresh):
    backend, corpus = fresh
    before = {d["doc"]: d["chunks"] for d in backend.json("index", "status")["docs"]}
    path = corpus / "sub/loans.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\n三、贴息资金实行专款专用，独立核算。", encoding="utf-8")
    (corpus / "berries.txt").unlink()
    (corpus / "new.txt").write_text("丁市关于茶叶加工的通知\n一、茶叶加工设备购置补贴两成。", encoding="utf-8")
    report = backend.json("index", "update", corpus=corpus)
    status = backend.json("index", "status", "--verify")
    assert status["damaged"] == []
    if backend.name != "local":
        # Milvus: this machine's keyword cache got a segment of the new passages and lost
        # the replaced ones, and ranks as one rebuilt from everything Milvus holds.
        stamp_file, = backend.root.rglob("keywords.json")
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
        assert len(stamp["segments"]) == 2 and stamp["dead"], stamp
        grown = backend.ask("猕猴桃冷链运输补助 贴息资金", "-k", "10")["passages"]
        shutil.rmtree(stamp_file.parent)
        assert backend.ask("猕猴桃冷链运输补助 贴息资金", "-k", "10")["passages"] == grown
        assert len(json.loads(stamp_file.read_text(encoding="utf-8"))["segments"]) == 1
    after = {d["doc"]: d["chunks"] for d in status["docs"]}
    assert sorted(after) == ["cold-chain.txt", "new.txt", "sub/loans.txt"]  # berries.txt removed
    assert after["cold-chain.txt"] == before["cold-chain.txt"]
    assert {k: report[k] for k in ("added", "updated", "unchanged", "removed")} == \
        {"added": 1, "updated": 1, "unchanged": 1, "removed": 1}
    # the loans passage with new text and the new file's passages; loans' unchanged ones are cached
    assert 1 + after["new.txt"] <= report["chunks_embedded"] <= after["sub/loans.txt"] + after["new.txt"]
    assert backend.json("index", "update", corpus=corpus)["chunks_embedded"] == 0
    found = backend.ask("专款专用独立核算", "-k", "10")["passages"]
    assert found[0]["doc"] == "sub/loans.txt" and "专款专用" in found[0]["text"]
    assert "berries.txt" not in {p["doc"] for p in found}


@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus and milvus-lite (the milvus extra) not installed")
def test_a_writer_killed_mid_commit_is_repaired_by_the_next_update(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    lite = make_backend("milvus-lite", tmp_path / "lite")
    lite.run("index", "build", "--model", FAKE, corpus=corpus)
    path = corpus / "sub/loans.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\n三、贴息资金实行专款专用。", encoding="utf-8")
    writer = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "index", "update", "--corpus", str(corpus), *lite.args], cwd=CLI_CWD,
        env=cli_env(POLICYQA_CACHE=str(tmp_path / "cache"), POLICYQA_PAUSE_AT="vectors-written"),
        stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stderr is not None and "paused at vectors-written" in writer.stderr.readline()
    finally:
        writer.kill()
        writer.wait()
    proc = lite.run("index", "status", "--verify", "--json", check=False)
    assert proc.returncode == 1 and "damaged" in proc.stderr
    damaged = json.loads(proc.stdout)
    assert damaged["damaged"], "new chunk rows without their document's row"
    assert damaged["chunks"] == sum(d["chunks"] for d in damaged["docs"])  # orphans are not counted
    report = lite.json("index", "update", corpus=corpus)
    assert report["updated"] == 1
    status = lite.json("index", "status", "--verify")
    assert status["damaged"] == []
    assert lite.ask("专款专用")["passages"][0]["doc"] == "sub/loans.txt"


@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus and milvus-lite (the milvus extra) not installed")
@pytest.mark.parametrize("uri, message", [
    ("http://127.0.0.1:9", "cannot connect to Milvus at http://127.0.0.1:9"),
    ("not-a-uri", "cannot connect to Milvus at not-a-uri"),
    ("{tmp}/missing.db", "no index in {tmp}/missing.db"),
    ("{tmp}/no/such/folder/x.db", "no index in {tmp}/no/such/folder/x.db"),
])
def test_an_unusable_store_is_one_line_and_a_failure(uri, message, tmp_path):
    uri, message = uri.format(tmp=tmp_path), message.format(tmp=tmp_path)
    proc = subprocess.run([sys.executable, "-m", "policyqa", "ask", "补贴", "--store", uri], cwd=CLI_CWD,
                          env=cli_env(POLICYQA_MILVUS_TIMEOUT="1"), capture_output=True, text=True, encoding="utf-8",
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"policyqa: error: {message}"), proc.stderr
    if "folder" in uri:  # a writer refuses it too (a missing milvus-lite file it creates)
        build = subprocess.run([sys.executable, "-m", "policyqa", "index", "build", "--corpus", str(tmp_path),
                                "--store", uri], cwd=CLI_CWD, env=cli_env(), capture_output=True, text=True,
                               encoding="utf-8", timeout=120)
        assert build.returncode == 1 and build.stderr.strip().splitlines() == \
            [f"policyqa: error: cannot create the Milvus file {uri}: {tmp_path}/no/such/folder is not a directory"]
