"""Hybrid retrieval: the keyword index kept with each generation, component scores,
English questions, and the `eval` command's contract."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import numpy as np

from conftest import CORPUS, ask_json, cli_env, run_cli

SEED = "chengdu-sti-reform.txt"


def _generations(index, prefix):
    return sorted(p.name for p in index.iterdir() if p.name.startswith(prefix))


def test_keyword_index_is_written_with_each_generation_and_follows_updates(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("甲市关于蓝莓种植补贴的通知\n对蓝莓种植户每亩补贴三百元。", encoding="utf-8")
    index = tmp_path / "index"
    assert run_cli("index", "build", "--corpus", str(corpus), "--index", str(index)).returncode == 0
    assert _generations(index, "segment-") == ["segment-000001"]
    with sqlite3.connect(index / "policyqa.sqlite3") as db:
        chunk_ids = [i for (i,) in db.execute("SELECT id FROM chunks ORDER BY id")]
    assert np.load(index / "segment-000001" / "keywords" / "part-000" / "ids.npy").tolist() == chunk_ids

    (corpus / "b.txt").write_text("乙市关于猕猴桃冷链物流的通知\n猕猴桃冷链运输给予运费补助。", encoding="utf-8")
    proc = run_cli("index", "update", "--corpus", str(corpus), "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    # a delta of half the corpus is merged at once (store.merge_plan): one segment again,
    # and the previous one kept for readers switching now
    assert _generations(index, "segment-") == ["segment-000001", "segment-000002"]
    assert np.load(index / "segment-000002" / "ids.npy").tolist() == chunk_ids + [chunk_ids[-1] + 1]
    out = ask_json(index, "猕猴桃冷链", "--explain", "--top-k", "1")
    assert out["passages"][0]["doc"] == "b.txt"
    assert out["passages"][0]["scores"]["lexical"] > 0


def test_a_question_reads_the_keyword_index_and_never_builds_one(seed_index):
    """The question path loads the persisted BM25 arrays: bm25s (and scipy) stay
    unimported, and a Chinese question is searched and judged without loading the word
    segmenter (bigrams, and the corpus words it contains)."""
    code = (
        "import sys, json; from pathlib import Path\n"
        "from policyqa.store import Store; from policyqa.search import Searcher; from policyqa.answer import ask\n"
        f"answer = ask(Searcher(Store.open(Path({str(seed_index)!r}))), '天使投资引导资金规模多大', 3)\n"
        "assert answer.found; hits = answer.hits\n"
        "print(json.dumps({'scores': hits[0].scores, 'bm25s': 'bm25s' in sys.modules,"
        " 'scipy': 'scipy' in sys.modules, 'torch': 'torch' in sys.modules, 'rjieba': 'rjieba' in sys.modules}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["scores"]["lexical"] > 0 and set(out["scores"]) == {"lexical", "dense", "document", "fused"}
    assert not out["bm25s"] and not out["scipy"] and not out["torch"] and not out["rjieba"]


def test_bigrams_cut_han_runs_and_keep_latin_words_and_numbers_whole():
    from policyqa.terms import bigrams

    assert bigrams("财政部公告2020年第8号") == ["财政", "政部", "部公", "公告", "2020", "年第", "8", "号"]
    assert bigrams("天使投资\n引导资金") == ["天使", "使投", "投资", "资引", "引导", "导资", "资金"]
    assert bigrams("Tax relief: 12.5万元") == ["tax", "relief", "12.5", "万元"]
    assert bigrams("ＡＢＣ　股权") == ["abc", "股权"]  # NFKC: full-width letters and space


def test_an_outdated_keyword_index_is_skipped_then_rewritten_without_embedding(tmp_path, seed_index):
    """An index written by an older release keeps answering (dense only), and the next
    `index update` rewrites its keyword index from the stored passages."""
    index = tmp_path / "index"
    shutil.copytree(seed_index, index)
    settings = index / "segment-000001" / "keywords" / "settings.json"
    settings.write_text('{"segmenter": "an older one"}', encoding="utf-8")
    before = ask_json(index, "天使投资引导资金规模多大", "--top-k", "1")
    assert "lexical" not in before["passages"][0]["scores"]

    proc = run_cli("index", "update", "--corpus", str(CORPUS), "--index", str(index), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chunks_embedded"] == 0
    assert _generations(index, "segment-") == ["segment-000001", "segment-000002"]
    after = ask_json(index, "天使投资引导资金规模多大", "--top-k", "1")
    assert after["passages"][0]["scores"]["lexical"] > 0
    assert after["found"] and "2亿元" in after["answer"][0]["text"]


def test_corpus_words_contained_in_a_question(tmp_path):
    from policyqa import lexical

    lexical.write(tmp_path / "k", np.array([1]), ["天使投资引导资金"], ["a.txt"], {"a.txt": "天使投资引导资金"})
    words = lexical.LexicalIndex.load([(tmp_path / "k", np.zeros(0, np.int64))]).words
    found, unknown = words.contained("天使投资引导资金规模多大？")
    assert {"天使", "投资", "引导", "资金"} <= set(found)
    assert all(w in "天使投资引导资金" for w in found)
    assert unknown == len("规模多大")
    # Asked of a question, its own words (多大, a stopword) are not what the corpus lacks.
    assert words.contained("天使投资引导资金规模多大？", stopwords_known=True)[1] == len("规模")


def test_a_term_longer_than_any_in_the_vocabulary_is_not_matched_by_its_prefix(tmp_path):
    from policyqa import lexical

    lexical.write(tmp_path / "k", np.array([7]), ["甲 ab"], ["a.txt"], {"a.txt": "甲 ab"})
    keywords = lexical.LexicalIndex.load([(tmp_path / "k", np.zeros(0, np.int64))]).bigrams
    assert keywords.scores({"ab": 1.0})[0] > 0
    assert keywords.scores({"abc": 1.0})[0] == 0 and keywords.scores({"a": 1.0})[0] == 0


def test_json_and_explain_show_component_scores(seed_index):
    out = ask_json(seed_index, "成都技术转移集团注册资本是多少", "--top-k", "2")
    for p in out["passages"]:
        assert set(p["scores"]) == {"lexical", "dense", "document", "fused"}
        assert p["score"] == p["scores"]["fused"]
    assert out["passages"][0]["scores"]["fused"] >= out["passages"][1]["scores"]["fused"]
    proc = run_cli("ask", "成都技术转移集团注册资本是多少", "--explain", "--index", str(seed_index))
    assert proc.returncode == 0 and "lexical=" in proc.stdout and "dense=" in proc.stdout


def test_english_question_is_searched_with_chinese_terms(seed_index):
    out = ask_json(seed_index, "How is the performance of fiscal science spending evaluated?", "--top-k", "3")
    assert out["passages"][0]["scores"]["lexical"] > 0, "the translation matched no Chinese word"
    assert any("绩效评价" in p["text"] for p in out["passages"])
    assert out["found"] and any("绩效" in a["text"] for a in out["answer"])


def test_repeated_paragraph_appears_once(seed_index):
    out = ask_json(seed_index, "成都市深化科技体制改革情况", "--top-k", "10")
    texts = [p["text"] for p in out["passages"]]
    assert len(set(texts)) == len(texts)


def _questions(tmp_path, rows):
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def test_eval_json_contract(tmp_path, seed_index):
    text = (CORPUS / SEED).open(encoding="utf-8").read()
    start = text.index("注册资本10亿元")
    questions = _questions(tmp_path, [
        {"question": "成都技术转移集团注册资本是多少", "lang": "zh", "doc": SEED,
         "answer_start": start, "answer_end": start + len("注册资本10亿元")},
        {"question": "科创通平台的核心功能是什么", "lang": "zh", "doc": SEED},
        {"question": "What incubation chain is the city building for startups?", "lang": "en", "doc": SEED},
        {"question": "what financing support exists for seed-stage firms", "lang": "en", "doc": "elsewhere.txt"},
    ])
    proc = run_cli("eval", str(questions), "--index", str(seed_index), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    keys = {"n", "doc_hit@1", "doc_hit@5", "span_hit@5", "mrr@10", "latency_ms",
            "found", "passage_answer@5", "answer_hit", "answer_overlap", "answer_chars"}
    assert set(out) == keys | {"by_lang"} and set(out["by_lang"]) == {"zh", "en"}
    assert out["n"] == 4 and out["by_lang"]["zh"]["n"] == 2 and out["by_lang"]["en"]["n"] == 2
    assert out["doc_hit@5"] == 0.75 and out["by_lang"]["en"]["doc_hit@5"] == 0.5  # the last is not in the corpus
    assert out["span_hit@5"] == 1.0 and out["by_lang"]["en"]["span_hit@5"] is None
    assert 0 < out["mrr@10"] <= 0.75 and out["doc_hit@1"] <= out["doc_hit@5"]
    for part in [out, *out["by_lang"].values()]:
        assert set(part) - {"by_lang"} == keys
        assert part["latency_ms"]["p95"] >= part["latency_ms"]["mean"] * 0.5 > 0

    table = run_cli("eval", str(questions), "--index", str(seed_index))
    assert table.returncode == 0 and "doc hit@5" in table.stdout and "worst misses" in table.stdout


def test_eval_rejects_a_malformed_question_file(tmp_path, seed_index):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "doc": "a.txt"}\n{"question": "an answer without its doc", "answer": "y"}\n',
                   encoding="utf-8")
    proc = run_cli("eval", str(bad), "--index", str(seed_index))
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_english_numbers_and_dates_are_written_the_chinese_way():
    from policyqa.translate import chinese_numbers

    assert "1240万" in chinese_numbers("Tianjin allocated 12.4 million yuan")
    assert "30亿" in chinese_numbers("a 3 billion fund")
    assert "2月17日" in chinese_numbers("As of February 17, how many")
    assert "2020" in chinese_numbers("From February 2020") and "2月" in chinese_numbers("From February 2020")
    assert "月" not in chinese_numbers("may I ask")


def test_an_english_word_is_translated_with_the_senses_of_all_its_forms():
    from policyqa.translate import english_query

    table = {"services": {"劳务": 1.0}, "service": {"服务": 1.0}, "incubate": {"孵化": 1.0},
             "financial service": {"金融服务": 1.0}}
    common = {"服务": 900, "劳务": 3, "孵化": 50, "金融服务": 40}
    groups, missing = english_query("services for incubation", table, common.__getitem__)
    assert missing == []
    assert set(groups[0]) == {"服务", "劳务"} and groups[0]["服务"] > groups[0]["劳务"], "the common sense leads"
    assert set(groups[1]) == {"孵化"}
    groups, _ = english_query("financial services", table, common.__getitem__)
    assert groups == [{"金融服务": groups[0]["金融服务"]}], "a phrase is found by its last word's base form too"


def test_translation_table_comes_the_same_from_the_dictionary_cache(tmp_path, monkeypatch):
    from policyqa.translate import build_table

    vocab = {"疫情", "融资", "云南", "贷款"}
    monkeypatch.setenv("POLICYQA_CACHE", str(tmp_path / "cache"))
    built = build_table(vocab)
    assert len(list((tmp_path / "cache").glob("cedict-table-*.json"))) == 1
    assert build_table(vocab) == built
    assert "疫情" in built["epidemic"] and "贷款" in built["loan"] and "云南" in built["yunnan"]
    (tmp_path / "not-a-dir").write_text("", encoding="utf-8")
    monkeypatch.setenv("POLICYQA_CACHE", str(tmp_path / "not-a-dir"))  # no writable cache
    assert build_table(vocab) == built
