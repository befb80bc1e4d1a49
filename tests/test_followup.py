"""Which questions are follow-ups, and what is searched for them."""
from __future__ import annotations

import pytest

from policyqa.followup import Topic, follow_up_part


@pytest.mark.parametrize("typed, part", [
    ("what about debt financing?", "debt financing"),
    ("And what about universities?", "universities"),
    ("how about Chengdu", "Chengdu"),
    ("how much is it?", "how much is it"),
    ("那贷款呢？", "贷款"),
    ("那么高校呢", "高校"),
    ("还有哪些平台？", "哪些平台"),
    ("它的注册资本是多少", "它的注册资本是多少"),
])
def test_short_follow_ups_are_recognised(typed, part):
    assert follow_up_part(typed) == part


@pytest.mark.parametrize("typed", [
    "what financing support exists for seed-stage firms",
    "How many national-level university science parks are there?",
    "科技企业债权融资风险补偿资金池规模多大",
    "成都技术转移集团注册资本是多少",
    "debt financing",
    "贷款",
    "",
])
def test_standalone_questions_are_not_follow_ups(typed):
    assert follow_up_part(typed) is None


def _asked(topic: Topic, text: str) -> str | None:
    """What chat searches for `text`, once it has been answered."""
    searched = topic.query_for(text)
    topic.answered(text)
    return searched


def test_topic_stays_on_the_last_standalone_question():
    topic = Topic()
    assert _asked(topic, "what about debt financing?") is None, "no topic yet: it stands alone"
    assert _asked(topic, "天使投资引导资金规模多大") is None
    assert _asked(topic, "那贷款呢？") == "贷款（天使投资引导资金规模多大）"
    assert _asked(topic, "what about debt financing?") == "debt financing (天使投资引导资金规模多大)"
    assert _asked(topic, "成都技术转移集团注册资本是多少") is None
    assert topic.question == "成都技术转移集团注册资本是多少"
    topic.clear()
    assert _asked(topic, "那贷款呢？") is None


def test_a_question_not_answered_does_not_become_the_topic():
    topic = Topic()
    _asked(topic, "天使投资引导资金规模多大")
    assert topic.query_for("成都技术转移集团注册资本是多少") is None  # then cancelled: never answered
    assert topic.question == "天使投资引导资金规模多大"
    assert topic.query_for("那贷款呢？") == "贷款（天使投资引导资金规模多大）"
