"""Rendering: hostile document text stays inert, and answers are readable at 80 columns."""
from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from policyqa.context import Context
from policyqa.records import Answer, AnswerSentence, Hit, Meta
from policyqa.render import print_answer, print_context, print_passages

# What a hostile file can hold: SGR, screen clearing, an OSC 8 hyperlink, an OSC title,
# backspace, a bidi override, DEL, a C1 CSI, and rich markup of every kind.
HOSTILE = (
    "补贴资金为每年3000万元。\x1b[5;41m闪烁\x1b[0m \x1b[2J清屏 "
    "\x1b]8;;http://evil.example\x07链接\x1b]8;;\x07 \x1b]0;pwned\x07 退格\x08 \u202e反转\u202c "
    "\x7f \x9b31m [bold red]警告[/] [link=http://evil.example]点击[/link] :smile: 结束。"
)
VISIBLE = ["\\x1b[5;41m", "\\x1b[2J", "\\x1b]8;;http://evil.example\\x07", "\\x1b]0;pwned\\x07", "\\x08",
           "\\u202e", "\\x7f", "\\x9b31m", "[bold red]警告[/]", "[link=http://evil.example]点击[/link]", ":smile:"]
# The only escape sequences rich may write for our own styles: SGR attributes.
OUR_SGR = re.compile(r"\x1b\[[0-9;]*m")


def hostile_answer() -> Answer:
    hit = Hit(
        chunk_id=1, doc="evil/[red]x[/red]\x1b[2J.txt", title="[bold]标题[/bold]\x1b]0;t\x07",
        section="一、[link=http://x]资金[/link]\x1b[1m", start=100, end=100 + len(HOSTILE), text=HOSTILE,
        score=0.9, scores={"dense": 0.9}, page=3,
        meta=Meta("t", issuer="[link=http://x]市政府[/link]\x1b]8;;http://x\x07", doc_number="成[2015]1号",
                  date="2015-01-02"),
    )
    sentence = AnswerSentence(text=HOSTILE[:14], citation=1, start=100, end=114)
    return Answer(question="q", found=True, sentences=[sentence], hits=[hit], searched="[blink]x[/blink]\x1b[8m 那呢")


def terminal(**kwargs) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    kwargs.setdefault("force_terminal", True)
    kwargs.setdefault("color_system", "truecolor")
    return Console(file=out, width=80, **kwargs), out


def assert_inert(raw: str) -> None:
    assert "\x1b]" not in raw, "no OSC sequence (hyperlink, title) may reach the terminal"
    stripped = OUR_SGR.sub("", raw)
    unsafe = re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", stripped)
    assert unsafe == [], f"control characters reached the terminal: {unsafe!r}"
    visible = re.sub(r"\s+", "", stripped)
    for text in VISIBLE:
        assert re.sub(r"\s+", "", text) in visible, f"{text!r} should be shown as visible text"
    for style in ("\x1b[5;41m", "\x1b[5m", "\x1b[8m", "\x1b[2J"):
        assert style not in raw, "document text must not choose styles"


def test_answer_with_hostile_text_is_inert():
    console, out = terminal()
    print_answer(console, hostile_answer(), explain=True)
    raw = out.getvalue()
    assert_inert(raw)
    visible = re.sub(r"\s+", "", OUR_SGR.sub("", raw))
    assert "evil/[red]x[/red]\\x1b[2J.txt" in visible
    assert "[bold]标题[/bold]\\x1b]0;t\\x07" in visible
    assert "[link=http://x]资金[/link]\\x1b[1m" in visible
    assert "[blink]x[/blink]\\x1b[8m" in visible
    assert "[link=http://x]市政府[/link]\\x1b]8;;http://x\\x07·成[2015]1号·2015-01-02" in visible
    assert "p.3" in visible


def test_context_and_more_with_hostile_text_are_inert():
    answer = hostile_answer()
    console, out = terminal()
    context = Context(before=HOSTILE, passage=HOSTILE, after=HOSTILE, from_file=False,
                      note="from the index: [red]x[/red]\x1b[2J", cut_before=True, cut_after=True)
    print_context(console, 1, answer.hits[0], context)
    print_passages(console, answer, first=6)
    raw = out.getvalue()
    assert_inert(raw)
    assert "[6]" in raw and "[red]x[/red]\\x1b[2J" in OUR_SGR.sub("", raw)


def test_not_a_terminal_gets_no_escape_sequences():
    out = io.StringIO()
    console = Console(file=out, width=80)
    print_answer(console, hostile_answer())
    assert "\x1b" not in out.getvalue()
    assert "[bold red]警告[/]" in out.getvalue()


def test_no_color_keeps_text_without_colours(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    console, out = terminal(color_system="standard")
    print_answer(console, hostile_answer())
    codes = {c for seq in OUR_SGR.findall(out.getvalue()) for c in seq[2:-1].split(";") if c}
    colours = {c for c in codes if c.startswith(("3", "4", "9", "10")) and c not in ("3", "4")}
    assert colours == set(), f"colour codes under NO_COLOR: {colours}"


@pytest.mark.parametrize("width", [80, 60])
def test_chinese_passages_wrap_within_width_with_hanging_indent(width):
    text = "设立1亿元科技企业债权融资风险补偿资金池资金，联合区县、金融机构，放大贷款资金规模，" * 4
    hit = Hit(7, "chengdu-sti-reform.txt", "成都市深化科技体制改革和机制创新" * 3, "一、成都市 › 一是“破藩篱”",
              2276, 2276 + len(text), text, 0.883)
    answer = Answer("q", True, [AnswerSentence(text[:20], 1, 2276, 2296)], [hit])
    out = io.StringIO()
    print_answer(Console(file=out, width=width, force_terminal=False), answer)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    assert all(cell_len(line) <= width for line in lines)
    block = lines[lines.index(next(line for line in lines if line.startswith("[1] "))):]
    body = [line for line in block if line]
    assert len(body) > 5 and all(line.startswith("    ") for line in body[1:]), "wrapped lines keep the indent"
    assert text in "".join(line.strip() for line in body[1:]), "the passage is shown whole"


def test_every_control_and_invisible_character_is_escaped():
    import sys
    import unicodedata

    from policyqa.render import safe

    hidden = [chr(c) for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert {"\u200b", "\ufeff", "\u202e", "\x1b", "\ud800"} <= set(hidden)
    for ch in hidden:
        lines_kept = ch in "\n\t"
        assert safe(ch, lines=True) == ch if lines_kept else safe(ch, lines=True) != ch, repr(ch)
        shown = safe(ch)
        assert shown != ch and shown.isascii() and shown.isprintable(), repr(ch)
    assert safe("a\nb\tc") == "a\\x0ab\\x09c" and safe("a\nb\tc", lines=True) == "a\nb\tc"
    assert safe("\U000e0041\u200b") == "\\U000e0041\\u200b"
