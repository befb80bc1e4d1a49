"""Answers that answer: whole sentences of real law and policy text (../shared/bench), a
list's items with the sentence that introduces it, and the answer kept in view in chat
on a 40-row terminal."""
from __future__ import annotations

import re
import shutil

import pytest

from policyqa.answer import Stretch, compose, list_items, stretch_of, whole_sentences
from policyqa.chunk import chunk_document
from policyqa.clean import clean
from policyqa.load import read_document
from policyqa.records import Hit
from policyqa.store import ChunkRow

from conftest import CORPUS, SHARED
from test_chat import Terminal, compact

LAWS = SHARED / "bench" / "laws" / "DLC"
NCPQA = SHARED / "bench" / "ncpqa" / "docs"
# Laws whose articles introduce lists ("履行下列职责：" then （一）…；（二）…。), and the
# policy document of the bundled corpus (lines wrapped inside sentences, "1\n2\nN").
LAW_FILES = [
    "广东地方法规/地方性法规/广东/清远市住宅小区物业管理条例(2022-12-07).txt",
    "广东地方法规/地方性法规/广东/深圳经济特区人工智能产业促进条例(2022-09-05).txt",
    "重庆地方法规/地方性法规/重庆/重庆市查禁赌博条例(2011-11-29).txt",
]
SENTENCE_END = re.compile(r"[。！？!?…；;：:][”’」』\"'）)]*$")

needs_shared = pytest.mark.skipif(not LAWS.exists() or not NCPQA.exists(), reason="needs ../shared/bench")


def documents():
    docs = [read_document(LAWS / f, LAWS) for f in LAW_FILES]
    docs.append(read_document(CORPUS / "chengdu-sti-reform.txt", CORPUS))
    docs += [read_document(p, NCPQA) for p in sorted(NCPQA.glob("*.txt"))[:40]]
    return [clean(d) for d in docs]


def passages(doc) -> tuple[list[Hit], list[ChunkRow]]:
    chunks = chunk_document(doc)
    rows = [ChunkRow(i, doc.path, doc.title, c.section, c.start, c.end, c.text, page=c.page)
            for i, c in enumerate(chunks)]
    hits = [Hit(r.chunk_id, doc.path, doc.title, r.section, r.start, r.end, r.text, 0.95, {"dense": 0.95})
            for r in rows]
    return hits, rows


def stretches():
    """(document, passage, the document's passages, the stretch around the passage) for
    every passage of the real documents."""
    for doc in documents():
        hits, rows = passages(doc)
        for hit in hits:
            st = stretch_of(hit, rows)
            assert st.start <= hit.start and st.text[hit.start - st.start:hit.end - st.start] == hit.text
            yield doc, hit, rows, st


def sentence_start(text: str, at: int) -> bool:
    """`at` begins a sentence of `text`: after a sentence's end, a line break or a space."""
    before = text[:at].rstrip()
    return not before or text[at - 1].isspace() or bool(SENTENCE_END.search(before))


@needs_shared
def test_every_sentence_of_real_documents_is_whole_and_exact():
    checked = 0
    for doc, _hit, _rows, st in stretches():
        for s in whole_sentences(st.text):
            a, b = st.start + s.start, st.start + s.end
            assert not any(g0 < s.start < g1 or g0 < s.end < g1 for g0, g1 in st.gaps)
            if all(not (g0 < s.end and s.start < g1) for g0, g1 in st.gaps):  # no stored-passage gap inside
                assert doc.text[a:b] == st.text[s.start:s.end]
            # A sentence begins where one ends, and ends at its punctuation or its paragraph's end.
            if s.start > 0:
                assert sentence_start(doc.text, a), (doc.path, doc.text[a - 20:b])
            assert SENTENCE_END.search(doc.text[a:b]) or b == len(doc.text) or doc.text[b].isspace(), \
                (doc.path, doc.text[a:b + 20])
            checked += 1
    assert checked > 1000


@needs_shared
def test_answers_from_real_documents_are_slices_with_every_list_item():
    lists = 0
    for doc, hit, rows, st in stretches():
        sentences = whole_sentences(st.text)
        for i, s in enumerate(sentences):
            if not (s.intro and hit.start <= st.start + s.start < hit.end):
                continue
            question = st.text[s.start:s.end]
            answer = compose(question, [hit], coverage=lambda h: 1.0,
                             around=lambda h, rows=rows: stretch_of(h, rows))
            # An introduction whose list is not there (a document's last line) is never shown.
            if any(a.start == st.start + s.start for a in answer.sentences):
                assert list_items(st.text, sentences, i), (doc.path, question)
            for a in answer.sentences:
                assert doc.text[a.start:a.end] == a.text
            shown = [a for a in answer.sentences if a.text.endswith(("：", ":"))]
            for intro in shown:  # an introduction is followed, in the answer, by its first item
                after = [a for a in answer.sentences if a.start > intro.end]
                assert after, (doc.path, intro.text)
                assert doc.text[intro.end:after[0].start].strip() == "", "the first item comes next"
            lists += bool(shown)
    assert lists >= 20


@needs_shared
@pytest.mark.parametrize("law, article, question, items, after", [
    (LAW_FILES[0], "第五条", "市人民政府房地产行政主管部门履行哪些职责", 6, "第六条"),
    # Its first two items lost their numbers in the source; the list goes on after "；".
    (LAW_FILES[1], "第六十五条", "深圳市人工智能伦理委员会有哪些职责", 6, "市人工智能伦理委员会的日常工作"),
])
def test_a_law_article_introducing_duties_comes_with_all_of_them(law, article, question, items, after):
    doc = clean(read_document(LAWS / law, LAWS))
    hits, rows = passages(doc)
    at = doc.text.index(article)
    hit = next(h for h in hits if h.start <= at < h.end)
    answer = compose(question, [hit], coverage=lambda h: 1.0, around=lambda h: stretch_of(h, rows))
    texts = [a.text for a in answer.sentences]
    assert texts[0].startswith(article) and texts[0].endswith("履行下列职责：")
    assert len(texts) == 1 + items and texts[-1].endswith("。") and after not in "".join(texts)
    assert all(doc.text[a.start:a.end] == a.text for a in answer.sentences)


def test_a_sentence_cut_by_a_passage_edge_is_completed_from_its_neighbour():
    text = ("一、总则\n对蓝莓种植户每亩补贴三百元，补贴资金由市财政局拨付；"
            "对猕猴桃种植户每亩补贴二百元。\n二、附则")
    cut = text.index("对猕猴桃")
    rows = [ChunkRow(1, "d.txt", "t", None, 0, cut, text[:cut]),
            ChunkRow(2, "d.txt", "t", None, cut, len(text), text[cut:])]
    hit = Hit(2, "d.txt", "t", None, cut, len(text), text[cut:], 0.95, {"dense": 0.95})
    answer = compose("猕猴桃种植户每亩补贴多少", [hit], coverage=lambda h: 1.0,
                     around=lambda h: stretch_of(h, rows))
    assert "".join(a.text for a in answer.sentences) == text[text.index("对蓝莓"):text.index("\n二")]
    assert all(text[a.start:a.end] == a.text for a in answer.sentences)
    # Without the neighbouring passage only the passage's own text can be shown.
    alone = compose("猕猴桃种植户每亩补贴多少", [hit], coverage=lambda h: 1.0)
    assert [a.text for a in alone.sentences] == ["对猕猴桃种植户每亩补贴二百元。"]


def test_a_heading_is_never_the_answer_and_a_list_without_items_is_skipped():
    text = "二、补贴标准\n补贴包括：\n"
    hit = Hit(1, "d.txt", "t", None, 0, len(text), text, 0.95, {"dense": 0.95})
    st = Stretch(0, text)
    sentences = whole_sentences(text)
    assert [s.heading for s in sentences] == [True, False] and sentences[1].intro
    assert list_items(text, sentences, 1) == []
    assert compose("补贴标准包括什么", [hit], coverage=lambda h: 1.0, around=lambda h: st).sentences == []


def test_chat_keeps_the_answer_in_view_on_a_40_row_terminal(seed_index, tmp_path):
    corpus, index, home = tmp_path / "corpus", tmp_path / "index", tmp_path / "home"
    shutil.copytree(CORPUS, corpus)
    shutil.copytree(seed_index, index)
    term = Terminal(["chat", "--corpus", str(corpus), "--index", str(index)], home)
    term.child.setwinsize(40, 80)
    term.prompt()
    out = term.enter("科技企业债权融资风险补偿资金池规模多大", "1亿元科技企业债权融资")
    lines = out.splitlines()
    assert len(lines) > 40, "the passages fill more than a screen: the answer above them scrolls away"
    screen = lines[-40:]
    recap = [line for line in screen if line.startswith("answer: ")]
    assert len(recap) == 1 and len(recap[0]) <= 80, screen
    assert compact(recap[0]).startswith(compact("answer: 设立1亿元科技企业债权融资"))
    term.child.send("/quit\r")
    assert term.exit_code() == 0
