"""Web pages, Word, PDF and legacy-encoded text, indexed together by the real CLI:
each file's content is found with the right citation and metadata, page noise is not
indexed, unreadable files are skipped and reported while the build succeeds."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from policyqa.load import read_document
from policyqa.search import Filter

from conftest import ask_json, run_cli
from realfiles import HTML_NOISE, SKIPPED, write_corpus

TEXT_ENCODINGS = {"ip-pledge-gbk.txt": "gbk", "taipei-big5.txt": "big5", "voucher-utf16.md": "utf-16"}
CASES = [
    # question, doc, words in the top passage, page, meta
    ("债权融资风险补偿资金池的规模是多少", "notice.html", "5000万元", None,
     {"title": "关于促进科技金融发展的若干措施", "issuer": "成都市科学技术局",
      "doc_number": "成科字〔2015〕12号", "date": "2015-03-12"}),
    ("综合孵化器的最低场地面积是多少", "incubator.docx", "综合孵化器 | 3000平方米", None,
     {"title": "成都市科技企业孵化器认定管理办法", "issuer": "成都市科学技术局",
      "doc_number": "成科发〔2016〕8号", "date": "2016-05-20"}),
    ("技术合同登记奖励按交易额的多少比例给予", "pdf/transfer.pdf", "交易额的3%", 2,
     {"title": "关于支持技术转移的若干政策", "issuer": "成都市财政局",
      "doc_number": "成财教〔2017〕45号", "date": "2017-06-01"}),
    ("知识产权质押贷款贴息比例是多少", "ip-pledge-gbk.txt", "利息的50%给予贴息", None,
     {"title": "四川省人民政府办公厅关于推进知识产权质押融资的通知", "issuer": "四川省人民政府办公厅",
      "doc_number": "川办发〔2018〕20号", "date": "2018-03-09"}),
    ("研發補助上限是多少", "taipei-big5.txt", "新臺幣五百萬元", None,
     {"title": "臺北市產業發展獎勵補助要點", "issuer": "臺北市政府產業發展局", "doc_number": None,
      "date": "2019-07-01"}),
    ("科技创新券每张面额最高多少", "voucher-utf16.md", "最高为10万元", None,
     {"title": "重庆市科技创新券管理办法", "issuer": None, "doc_number": None, "date": None}),
]


@pytest.fixture(scope="session")
def formats_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    corpus = write_corpus(root / "corpus")
    index = root / "index"
    build = run_cli("index", "build", "--corpus", str(corpus), "--index", str(index))
    return corpus, index, build


def test_build_succeeds_and_warns_once_per_unreadable_file(formats_index):
    _, _, build = formats_index
    assert build.returncode == 0, build.stderr
    assert "6 skipped" in build.stdout
    warnings = [line for line in build.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == len(SKIPPED)
    for name, reason in SKIPPED.items():
        assert any(name in w and reason in w for w in warnings), (name, warnings)
    assert "Traceback" not in build.stderr


def test_status_lists_documents_with_metadata_and_the_skipped(formats_index):
    _, index, _ = formats_index
    proc = run_cli("index", "status", "--json", "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert {s["doc"]: s["reason"] for s in status["skipped"]}.keys() == SKIPPED.keys()
    for s in status["skipped"]:
        assert SKIPPED[s["doc"]] in s["reason"]
    docs = {d["doc"]: d for d in status["docs"]}
    assert set(docs) == {case[1] for case in CASES}
    assert status["documents"] == len(CASES)
    for _, doc, _, _, meta in CASES:
        assert docs[doc]["meta"] == meta
        assert docs[doc]["title"] == meta["title"] and docs[doc]["chunks"] > 0


@pytest.mark.parametrize("question, doc, words, page, meta", CASES, ids=[c[1] for c in CASES])
def test_each_format_is_found_with_its_citation(formats_index, question, doc, words, page, meta):
    corpus, index, _ = formats_index
    out = ask_json(index, question, "--top-k", "3")
    top = out["passages"][0]
    assert top["doc"] == doc and words in top["text"], out["passages"]
    assert top["page"] == page and top["meta"] == meta and top["title"] == meta["title"]
    # Offsets refer to the document's text: the decoded file, or what was extracted.
    text = read_document(corpus / doc, corpus).text
    assert text[top["start"]:top["end"]] == top["text"]
    if doc in TEXT_ENCODINGS:  # a text file's offsets are those of the file read in text mode
        assert (corpus / doc).open(encoding=TEXT_ENCODINGS[doc]).read()[top["start"]:top["end"]] == top["text"]


def test_word_headings_become_sections_and_pdf_pages_are_kept(formats_index):
    _, index, _ = formats_index
    with sqlite3.connect(index / "policyqa.sqlite3") as db:
        rows = db.execute("SELECT doc, section, page, text FROM chunks ORDER BY doc, ordinal").fetchall()
    docx_sections = {s for d, s, _, _ in rows if d == "incubator.docx"}
    assert "认定条件 › 场地要求" in docx_sections and "支持措施" in docx_sections
    pages = [(p, t) for d, _, p, t in rows if d == "pdf/transfer.pdf"]
    assert sorted({p for p, _ in pages}) == [1, 2, 3]
    assert all(p is None for d, _, p, _ in rows if d != "pdf/transfer.pdf")
    assert any(p == 3 and "成都市财政局" in t for p, t in pages)


def test_page_noise_is_not_indexed(formats_index):
    _, index, _ = formats_index
    with sqlite3.connect(index / "policyqa.sqlite3") as db:
        texts = "\n".join(t for (t,) in db.execute("SELECT text FROM chunks"))
    for noise in HTML_NOISE + ("- 2 -",):
        assert noise not in texts
    assert "天使投资引导资金" in texts


def test_human_citation_shows_page_and_metadata(formats_index):
    _, index, _ = formats_index
    proc = run_cli("ask", "技术合同登记奖励按交易额的多少比例给予", "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    assert "pdf/transfer.pdf · p. 2" in proc.stdout
    assert "成都市财政局 · 成财教〔2017〕45号 · 2017-06-01" in proc.stdout


@pytest.fixture(scope="module")
def searcher(formats_index):
    from policyqa.search import Searcher
    from policyqa.store import Store

    store = Store.open(formats_index[1])
    yield Searcher(store)
    store.close()


@pytest.mark.parametrize("where, allowed", [
    (Filter(doc="*.pdf"), {"pdf/transfer.pdf"}),
    (Filter(doc="transfer.pdf"), {"pdf/transfer.pdf"}),
    (Filter(doc="*gbk*"), {"ip-pledge-gbk.txt"}),
    (Filter(after="2017-01-01"), {"pdf/transfer.pdf", "ip-pledge-gbk.txt", "taipei-big5.txt"}),
    (Filter(before="2016-05-20"), {"notice.html", "incubator.docx"}),
    (Filter(after="2016-01-01", before="2018-12-31"), {"incubator.docx", "pdf/transfer.pdf", "ip-pledge-gbk.txt"}),
    (Filter(issuer="科学技术局"), {"notice.html", "incubator.docx"}),
    (Filter(issuer="财政局", after="2017-06-01"), {"pdf/transfer.pdf"}),
])
def test_filters_restrict_the_passages(searcher, where, allowed):
    hits = searcher.search("对科技企业的资金支持和奖励", 5, where=where).hits
    assert {h.doc for h in hits} <= allowed
    with sqlite3.connect(searcher.store.dir / "policyqa.sqlite3") as db:
        admitted = sum(db.execute("SELECT COUNT(*) FROM chunks WHERE doc = ?", (d,)).fetchone()[0] for d in allowed)
    # However few of the index the admitted documents are, k passages come back.
    assert len(hits) == min(5, admitted)
    unfiltered = searcher.search("对科技企业的资金支持和奖励", 5).hits
    assert {h.doc for h in unfiltered} - allowed, "the filter must have removed something"


def test_filters_on_the_command_line(formats_index):
    _, index, _ = formats_index
    out = ask_json(index, "对科技企业的资金支持和奖励", "--issuer", "财政局", "--after", "2017-01-01", "--doc", "pdf/*")
    assert out["passages"] and {p["doc"] for p in out["passages"]} == {"pdf/transfer.pdf"}


@pytest.mark.parametrize("options, message", [
    (["--after", "2020-13-01"], "YYYY-MM-DD"),
    (["--after", "2019-01-01", "--before", "2018-01-01"], "later than"),
    (["--issuer", "国务院"], "no indexed document matches"),
])
def test_bad_filters_are_bad_input(formats_index, options, message):
    _, index, _ = formats_index
    proc = run_cli("ask", "资金支持", "--index", str(index), *options)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_file_that_becomes_unreadable_keeps_its_last_version(tmp_path, formats_index):
    corpus, index, _ = formats_index
    corpus_copy, index_copy = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(corpus, corpus_copy)
    shutil.copytree(index, index_copy)
    (corpus_copy / "incubator.docx").write_bytes(b"PK\x03\x04 truncated by a failed download")
    proc = run_cli("index", "build", "--corpus", str(corpus_copy), "--index", str(index_copy))
    assert proc.returncode == 0, proc.stderr
    assert "skipped incubator.docx" in proc.stderr
    status = json.loads(run_cli("index", "status", "--json", "--index", str(index_copy)).stdout)
    reason = {s["doc"]: s["reason"] for s in status["skipped"]}["incubator.docx"]
    assert "not a readable Word document" in reason and "last indexed version is kept" in reason
    assert "incubator.docx" in {d["doc"] for d in status["docs"]}
    out = ask_json(index_copy, "综合孵化器的最低场地面积是多少", "--top-k", "1")
    assert out["passages"][0]["doc"] == "incubator.docx" and "3000平方米" in out["passages"][0]["text"]
