"""The tuned parts of search and answer, in milliseconds: z-scores and their fusion,
near-duplicate removal and diversity by document, the "relevant enough?" decision and
the answer sentences, and the whole search over a real index (real FAISS, SQLite and
BM25 files) embedded by a fake model (fakes.py)."""
from __future__ import annotations

import numpy as np
import pytest

from policyqa import indexer
from policyqa.answer import asked_words, compose
from policyqa.records import ChunkRow, Hit, Meta
from policyqa.search import Filter, Searcher, distinct, fuse, zscores
from policyqa.store import Store

from fakes import NAME as FAKE

DOCS = {
    "berries.txt": "甲市关于蓝莓种植补贴的通知\n一、对蓝莓种植户每亩补贴三百元。\n二、补贴资金由市财政局拨付。",
    "cold-chain.txt": "乙市关于猕猴桃冷链物流的通知\n一、猕猴桃冷链运输给予运费补助。"
                      "\n二、冷库建设按投资额的百分之十奖励。",
    "loans.txt": "丙市科技企业贷款贴息办法\n一、科技企业银行贷款按实际利息的一半给予贴息。"
                 "\n二、每家企业每年贴息不超过五十万元。",
}


@pytest.fixture(scope="module")
def fake_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text, encoding="utf-8")
    report = indexer.update(corpus, root / "index", model_name=FAKE)
    assert report.added == len(DOCS) and report.chunks_embedded > 0
    store = Store.open(root / "index")
    yield store
    store.close()


def test_zscores_standardise_by_the_reference_and_vanish_without_spread():
    reference = np.array([1.0, 2.0, 3.0])
    assert np.allclose(zscores(np.array([2.0, 3.0]), reference), [0.0, 1.0 / reference.std()])
    assert not zscores(np.array([5.0, 7.0]), np.array([4.0, 4.0])).any()
    assert not zscores(np.array([5.0]), np.array([4.0])).any()


def test_fusion_weighs_each_component_by_its_own_spread():
    lexical = (np.array([10.0, 0.0]), np.array([10.0, 0.0, 0.0, 0.0]))
    dense = (np.array([0.80, 0.81]), np.array([0.80, 0.81, 0.79, 0.78]))
    fused = fuse({"lexical": lexical, "dense": dense}, {"lexical": 1.0, "dense": 1.0})
    assert np.allclose(fused, zscores(*lexical) + zscores(*dense))
    assert fused[0] > fused[1]  # a keyword match outweighs a hundredth of cosine
    only_dense = fuse({"lexical": lexical, "dense": dense}, {"lexical": 0.0, "dense": 1.0})
    assert only_dense[1] > only_dense[0]


def _row(cid: int, doc: str, text: str) -> ChunkRow:
    return ChunkRow(cid, doc, doc, None, 0, len(text), text, meta=Meta(title=doc))


def test_near_duplicates_are_dropped_within_a_document_and_kept_across_documents():
    text = "对蓝莓种植户每亩补贴三百元，补贴资金由市财政局拨付。"
    ranked = [
        (_row(1, "a.txt", text), {"fused": 3.0}),
        (_row(2, "a.txt", text + "另"), {"fused": 2.5}),  # the same passage, reposted in the same file
        (_row(3, "b.txt", text), {"fused": 2.0}),  # a copy in another document is another source
        (_row(4, "a.txt", "猕猴桃冷链运输给予运费补助，冷库建设另有奖励。"), {"fused": 1.5}),
        (_row(5, "c.txt", "科技企业银行贷款按实际利息的一半给予贴息。"), {"fused": 1.0}),
    ]
    hits = distinct(ranked, 10)
    assert [h.chunk_id for h in hits] == [1, 3, 5, 4]  # a.txt's second passage waits for the other documents
    assert [h.chunk_id for h in distinct(ranked, 2)] == [1, 3]


def test_search_returns_its_hits_plan_and_evidence(fake_index):
    result = Searcher(fake_index).search("猕猴桃冷链运输补助", 3)
    assert result.hits[0].doc == "cold-chain.txt"
    assert set(result.hits[0].scores) == {"lexical", "dense", "document", "fused"}
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert not result.plan.translated and "冷链" in result.plan.terms
    assert {"load_ms", "embed_ms", "search_ms"} <= set(result.timings_ms)
    right, wrong = result.coverage(result.hits[0]), result.coverage(result.hits[-1])
    assert 0 <= wrong < right <= 1


def test_a_filter_restricts_both_searches(fake_index):
    result = Searcher(fake_index).search("猕猴桃冷链运输补助", 3, where=Filter(doc="loans.txt"))
    assert result.hits and {h.doc for h in result.hits} == {"loans.txt"}


def test_english_senses_are_chosen_in_a_new_plan(fake_index):
    searcher = Searcher(fake_index)
    planned = searcher.plan("bank loan interest subsidy")
    result = searcher.search("bank loan interest subsidy", 3)
    assert planned.translated and result.plan.translated
    assert "贷款" in result.plan.terms and result.hits[0].doc == "loans.txt"
    assert searcher.plan("bank loan interest subsidy") == planned  # searching changed no shared plan


def _hit(n: int, text: str, dense: float) -> Hit:
    return Hit(n, f"d{n}.txt", "标题", None, 100, 100 + len(text), text, dense, {"dense": dense, "fused": dense})


def test_the_found_decision_weighs_cosine_with_keyword_coverage():
    question = "蓝莓种植补贴多少"
    close = [_hit(1, "对蓝莓种植户每亩补贴三百元。补贴资金由市财政局拨付。", 0.86)]
    assert compose(question, close, coverage=lambda h: 0.9).found
    assert not compose(question, close, coverage=lambda h: 0.0).found  # the words are not there
    far = [_hit(1, close[0].text, 0.60)]
    assert not compose(question, far, coverage=lambda h: 0.9).found
    assert not compose(question, []).found


def test_a_passage_on_the_topic_that_does_not_say_what_is_asked_is_no_answer():
    on_topic = [_hit(1, "蓝莓种植技术培训由市农业局组织，每年举办两期。", 0.95)]
    asked = ["蓝莓", "种植", "技术培训", "组织"]
    assert compose("蓝莓种植技术培训由谁组织", on_topic, coverage=lambda h: 0.9, asked=asked).found
    # 蓝莓 and 种植 are there; 购买, 农机 and 补贴 are not
    asked = ["蓝莓", "种植", "购买", "农机", "补贴"]
    assert not compose("蓝莓种植户购买农机有多少补贴", on_topic, coverage=lambda h: 0.9, asked=asked).found
    assert compose("蓝莓种植户购买农机有多少补贴", on_topic, coverage=lambda h: 0.9).found  # no words: no test


def test_the_words_asked_about_are_the_longest_corpus_words_of_the_question(fake_index):
    result = Searcher(fake_index).search("科技企业银行贷款贴息多少", 3)
    asked = asked_words(result.keywords, "科技企业银行贷款贴息多少")
    assert "银行贷款" in asked and "贷款" not in asked and "贴息" in asked and "多少" not in asked
    assert not any(a != b and a in b for a in asked for b in asked)


def test_the_answer_is_the_sentence_that_shares_the_question_words():
    text = "补贴资金由市财政局拨付。对蓝莓种植户每亩补贴三百元。"
    answer = compose("蓝莓种植户每亩补贴多少", [_hit(1, text, 0.95)], coverage=lambda h: 1.0)
    assert [s.text for s in answer.sentences] == ["对蓝莓种植户每亩补贴三百元。"]
    s = answer.sentences[0]
    assert s.citation == 1 and text[s.start - 100:s.end - 100] == s.text  # document offsets


def test_question_words_are_not_words_the_corpus_lacks(fake_index):
    searcher = Searcher(fake_index)
    bare = searcher.search("科技企业贷款贴息", 3)
    asked = searcher.search("科技企业贷款贴息是什么政策", 3)
    assert bare.hits[0].doc == asked.hits[0].doc == "loans.txt"
    assert asked.coverage(asked.hits[0]) == pytest.approx(bare.coverage(bare.hits[0]))
    # a word the corpus does not use still counts against the passage
    other = searcher.search("科技企业贷款贴息网约车", 3)
    assert other.coverage(other.hits[0]) < bare.coverage(bare.hits[0])


def test_an_english_question_is_found_by_coverage_and_how_far_its_top_passage_stands_out():
    question = "how much is the subsidy for blueberry growers"
    text = "对蓝莓种植户每亩补贴三百元。"
    standing_out = [_hit(1, text, 0.88)] + [_hit(n, text, 0.86) for n in range(2, 6)]
    level = [_hit(n, text, 0.88) for n in range(1, 6)]
    assert compose(question, standing_out, coverage=lambda h: 0.2).found
    assert not compose(question, level, coverage=lambda h: 0.2).found  # nothing singles the top passage out
    assert compose(question, level, coverage=lambda h: 0.6).found  # its words are there
    low = [_hit(n, text, 0.80) for n in range(1, 6)]
    assert not compose(question, low, coverage=lambda h: 1.0).found  # below the cosine floor


def test_an_english_question_picks_the_sentence_with_its_weightier_translated_terms():
    text = "补贴资金由市财政局拨付。对蓝莓种植户每亩补贴三百元。"
    hit = _hit(1, text, 0.95)

    def picked(keywords: dict[str, float]) -> list[str]:
        answer = compose("blueberry growers finance bureau", [hit], keywords=keywords, coverage=lambda h: 1.0)
        return [s.text for s in answer.sentences]

    assert picked({"蓝莓": 2.0, "补贴": 1.0})[0] == "对蓝莓种植户每亩补贴三百元。"
    assert picked({"财政局": 2.0, "蓝莓": 0.5})[0] == "补贴资金由市财政局拨付。"


def test_a_chinese_question_asking_how_much_is_not_answered_by_sentences_stating_no_amount():
    asked = ["蓝莓", "补贴"]
    vague = [_hit(1, "市财政安排资金，对蓝莓种植户给予补贴。", 0.95)]
    stated = [_hit(1, "对蓝莓种植户每亩补贴三百元。", 0.95)]
    assert not compose("蓝莓种植户补贴多少钱", vague, coverage=lambda h: 1.0, asked=asked).found
    assert compose("蓝莓种植户补贴多少钱", stated, coverage=lambda h: 1.0, asked=asked).found
    assert compose("蓝莓种植户补贴由谁拨付", vague, coverage=lambda h: 1.0, asked=asked).found  # no amount asked
    # "有多少补贴" asks for a sum: a sentence with other numbers in it does not state one.
    counted = [_hit(1, "围绕蓝莓种植户实施10个重点项目，给予补贴。", 0.95)]
    assert not compose("蓝莓种植户有多少补贴", counted, coverage=lambda h: 1.0, asked=asked).found
    assert compose("蓝莓种植户有多少补贴", stated, coverage=lambda h: 1.0, asked=asked).found
    assert compose("蓝莓种植户有多少个项目", counted, coverage=lambda h: 1.0, asked=asked).found  # a count
