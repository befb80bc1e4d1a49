"""Retrieval quality on the seed questions (../shared/eval/seed_dev.jsonl)."""
from __future__ import annotations

import json

import pytest

from policyqa.search import normalized

from conftest import SHARED, ask_json

SEED_DEV = SHARED / "eval" / "seed_dev.jsonl"


@pytest.mark.skipif(not SEED_DEV.exists(), reason="needs ../shared/eval")
def test_seed_questions_hit_at_3(seed_index):
    questions = [json.loads(line) for line in SEED_DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    misses = []
    for q in questions:
        out = ask_json(seed_index, q["question"], "--top-k", "3")
        texts = [normalized(p["text"]) for p in out["passages"]]
        if not any(normalized(e) in t for e in q["expect_any"] for t in texts):
            misses.append(q["id"])
    hits = len(questions) - len(misses)
    print(f"seed hit@3: {hits}/{len(questions)}; misses: {misses}")
    assert hits == len(questions), misses
