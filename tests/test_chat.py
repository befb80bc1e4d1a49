"""`policyqa chat` driven like a person drives it: the real program in a pseudo-terminal
(80x24), keys sent one line at a time, the screen read back without escape sequences.
Also the hostile-document check for chat and `ask`."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from conftest import CORPUS, cli_env, run_cli

TIMEOUT = 120  # generous: the test machine is shared; the waits end as soon as text appears
SEED_QUESTION = "科技企业债权融资风险补偿资金池规模多大"
PANDA_QUESTION = "熊猫基地专项补贴资金每年多少"
PANDA_FILE = "[red]dir/panda[bold] x.txt"
# A document written to attack the terminal: SGR, screen clearing, an OSC 8 hyperlink, an
# OSC window title, backspace, a bidi override, a C1 CSI, and rich markup.
PANDA_TEXT = (
    "# 熊猫基地[bold red]专项[/]补贴办法\x1b]0;pwned\x07\n\n"
    "一、[link=http://evil.example]资金安排[/link]\n\n"
    "熊猫基地专项补贴资金为每年3000万元，由市财政安排。 \x1b[5;41m闪烁\x1b[0m [bold red]警告[/] "
    "[link=http://evil.example]点击[/link] \x1b]8;;http://evil.example\x07链接\x1b]8;;\x07 \x1b[2J清屏 "
    "退格\x08 \u202e反转\u202c \x9b31m 熊猫基地专项补贴资金用于大熊猫保护研究和科普。\n"
)
VISIBLE_ESCAPES = ["\\x1b[5;41m", "\\x1b]8;;http://evil.example\\x07", "\\x1b[2J", "\\x08", "\\u202e", "\\x9b31m",
                   "[bold red]警告[/]", "[link=http://evil.example]点击[/link]"]
# Sequences the terminal must never receive from a document. (prompt-toolkit itself moves
# the cursor with backspaces, so a raw \x08 on a pty is not evidence of a leak.)
RAW_LEAKS = ["\x1b]8;", "\x1b]0;pwned", "\x1b[5;41m", "\x1b[2J", "\u202e", "\x9b"]
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")

UPDATE = "import sys; from pathlib import Path; from policyqa import indexer; " \
         "print(indexer.update(Path(sys.argv[1]), Path(sys.argv[2])).summary())"


def update_index(corpus: Path, index: Path) -> str:
    """Another process bringing the index up to date, as `index` commands do."""
    proc = subprocess.run([sys.executable, "-c", UPDATE, str(corpus), str(index)], env=cli_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory, seed_index) -> tuple[Path, Path]:
    """The seed corpus plus the hostile panda document, indexed once (from a copy of the
    seed index, so only the new document is embedded)."""
    base = tmp_path_factory.mktemp("chat")
    corpus, index = base / "corpus", base / "index"
    shutil.copytree(CORPUS, corpus)
    (corpus / PANDA_FILE).parent.mkdir()
    (corpus / PANDA_FILE).write_text(PANDA_TEXT, encoding="utf-8")
    shutil.copytree(seed_index, index)
    assert "added 1" in update_index(corpus, index)
    return corpus, index


@pytest.fixture
def files(built, tmp_path) -> tuple[Path, Path, Path]:
    """A private copy of corpus and index, and a chat home for the history."""
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(built[0], corpus)
    shutil.copytree(built[1], index)
    return corpus, index, tmp_path / "home"


def compact(text: str) -> str:
    """Text without spaces and line breaks: lines wrap at 80 columns, anywhere in Chinese."""
    return "".join(text.split())


class Terminal:
    """A program on a pseudo-terminal, and what a person would see of its output."""

    # prompt-toolkit turns bracketed paste on when a prompt starts and off when the line
    # is accepted, which tells exactly where one command's output begins and ends.
    PROMPT_ON, PROMPT_OFF = "\x1b[?2004h", "\x1b[?2004l"

    def __init__(self, args: list[str], home: Path, colour: bool = False, **extra_env: str):
        env = cli_env(TERM="xterm", POLICYQA_HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", **extra_env)
        if colour:
            env.pop("NO_COLOR")
        # Run beside the test's files, so that a default ./index is never the checkout's.
        self.child = pexpect.spawn(sys.executable, ["-m", "policyqa", *args], env=env, dimensions=(24, 80),
                                   cwd=str(home.parent), encoding="utf-8", codec_errors="replace")
        self.raw = ""

    def visible(self, raw: str | None = None) -> str:
        return ESCAPES.sub("", self.raw if raw is None else raw).replace("\r", "")

    def _until(self, found, what: str) -> int:
        deadline = time.monotonic() + TIMEOUT
        while (at := found()) < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not appear; the screen ended with:\n{self.visible()[-3000:]}")
            try:
                self.raw += self.child.read_nonblocking(1 << 16, timeout=0.2)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                raise AssertionError(f"exited before {what} appeared:\n{self.visible()[-3000:]}") from None
        return at

    def prompt(self, after: int = 0) -> int:
        return self._until(lambda: self.raw.find(self.PROMPT_ON, after), "a prompt")

    def shows(self, text: str, after: int) -> None:
        self._until(lambda: self.visible(self.raw[after:]).find(text), repr(text))

    def enter(self, keys: str, *expect: str) -> str:
        """Type keys and Enter; see `keys`."""
        return self.keys(keys + "\r", *expect)

    def keys(self, keys: str, *expect: str) -> str:
        """Type keys that end the line (Enter, Ctrl-C); returns the output up to the next
        prompt, which must show each of `expect` in order (spaces and line breaks aside)."""
        start = len(self.raw)
        self.child.send(keys)
        end = self._until(lambda: self.raw.find(self.PROMPT_OFF, start), "the end of the line")
        next_prompt = self.prompt(end)
        out = self.visible(self.raw[end:next_prompt])
        at, shown = 0, compact(out)
        for text in expect:
            at = shown.find(compact(text), at)
            assert at >= 0, f"{text!r} is not in the output of {keys!r}:\n{out}"
        return out

    def exit_code(self) -> int:
        self.child.expect(pexpect.EOF, timeout=TIMEOUT)
        self.raw += self.child.before or ""
        self.child.close()
        return self.child.exitstatus


def chat(corpus: Path, index: Path, home: Path, colour: bool = False) -> Terminal:
    return started(Terminal(["chat", "--corpus", str(corpus), "--index", str(index)], home, colour))


def started(term: Terminal) -> Terminal:
    at = term.prompt()
    banner = " ".join(term.visible(term.raw[:at]).split())
    assert re.search(r"policyqa chat · \S*corpus · 2 documents, \d+ chunks · multilingual-e5-small", banner), banner
    term.shows("policyqa>", at)  # its trailing space is drawn as a cursor move
    return term


def test_question_open_ctrl_c_and_quit(files):
    corpus, index, home = files
    term = chat(corpus, index, home)
    out = term.enter(SEED_QUESTION, "1亿元科技企业债权融资", "[1]", "chengdu-sti-reform.txt", "chars ")
    assert "searched:" not in out, "a first question is searched as typed"
    out = term.enter("/open 1", "[1]", "from ", "┃")
    assert "1亿元科技企业" in compact(out.split("┃", 1)[1]), "the cited passage is the marked one"
    assert str(corpus) in compact(out), "the text comes from the corpus file"
    out = term.keys("half a question\x03")  # Ctrl-C drops the line, not the session
    assert out.strip() == ""
    term.enter("/k 2", "2 passages per answer.")
    out = term.enter("成都技术转移集团注册资本是多少", "注册资本10亿元", "[2]")
    assert "[3]" not in out
    term.keys("\x03")  # at an empty prompt too
    term.enter("/nonsense", "unknown command /nonsense")
    term.child.send("/quit\r")
    assert term.exit_code() == 0
    assert "half a question" not in (home / "history").read_text(encoding="utf-8")


def test_bare_command_opens_chat_on_a_terminal_and_help_otherwise(files):
    corpus, index, home = files
    term = started(Terminal([], home, POLICYQA_CORPUS=str(corpus), POLICYQA_INDEX=str(index)))
    term.enter("/help", "/open N", "/reindex", "Ctrl-R")
    term.child.send("/exit\r")
    assert term.exit_code() == 0
    piped = run_cli()
    assert piped.returncode == 0 and "Commands:" in piped.stdout and "chat" in piped.stdout


def test_chat_reads_piped_lines(files):
    corpus, index, home = files
    proc = subprocess.run(
        [sys.executable, "-m", "policyqa", "chat", "--corpus", str(corpus), "--index", str(index)],
        input="成都技术转移集团注册资本是多少\n它是做什么的？\n/open 9\n/k 0\n", env=cli_env(POLICYQA_HOME=str(home)),
        capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "注册资本10亿元" in proc.stdout and "searched: 它是做什么的（成都技术转移集团注册资本是多少）" in proc.stdout
    assert "/open N: N must be from 1 to 5" in proc.stdout and "/k N: N must be from 1 to 50" in proc.stdout
    assert "\x1b" not in proc.stdout and not (home / "history").exists(), "no terminal, no history"


def test_filter_restricts_the_session_and_can_be_lifted(files):
    corpus, index, home = files
    lines = (f"/filter doc=chengdu*\n{PANDA_QUESTION}\n/status\n/filter after=2020-13-01\n/filter off\n"
             f"{PANDA_QUESTION}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "policyqa", "chat", "--corpus", str(corpus), "--index", str(index)],
        input=lines, env=cli_env(POLICYQA_HOME=str(home)), capture_output=True, text=True, encoding="utf-8",
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    filtered, _, lifted = proc.stdout.partition("Filter: none (all documents).")
    assert "Filter: doc=chengdu*." in filtered and "panda" not in filtered
    assert "Nothing in the corpus answers this" in filtered  # the panda notice is filtered out
    assert "'2020-13-01' is not a date as YYYY-MM-DD" in filtered
    assert "3000万元" in lifted and "panda" in lifted

    refused = run_cli("chat", "--doc", "nothing-like-this*", "--corpus", str(corpus), "--index", str(index))
    assert refused.returncode == 2 and "no indexed document matches" in refused.stderr


def test_follow_up_more_and_new_topic(files):
    corpus, index, home = files
    term = chat(corpus, index, home)
    term.enter("天使投资引导资金规模多大", "2亿元", "[1]")
    term.enter("那贷款呢？", "searched: 贷款（天使投资引导资金规模多大）", "贷款资金规模", "[1]")
    out = term.enter("/more", "[6]", "score")
    assert "[1]" not in out and "[5]" not in out
    term.enter("/open 6", "[6]", "┃")
    term.enter("/new", "New topic.")
    out = term.enter("那贷款呢？")
    assert "searched:" not in out, "after /new a follow-up has no topic to join"
    term.child.send("\x04")  # Ctrl-D leaves
    assert term.exit_code() == 0


def test_history_search_and_suggestions_survive_a_restart(files):
    corpus, index, home = files
    question = "成都技术转移集团注册资本是多少"
    term = chat(corpus, index, home)
    term.enter(question, "注册资本10亿元")
    term.child.send("/quit\r")
    assert term.exit_code() == 0
    assert question in (home / "history").read_text(encoding="utf-8")

    term = chat(corpus, index, home)
    term.enter("\x1b[A", "注册资本10亿元")  # Up recalls the last session's question
    start = len(term.raw)
    term.child.send("\x12技术转移")  # Ctrl-R finds it by any part
    term.shows(question, start)
    term.enter("", "注册资本10亿元")
    start = len(term.raw)
    term.child.send("成都技")  # the rest is suggested from history; Right arrow takes it
    term.shows("术转移集团注册资本是多少", start)
    term.enter("\x1b[C", "注册资本10亿元")
    start = len(term.raw)
    term.child.send("/sta")  # slash commands complete: a menu as you type, Tab takes it
    term.shows("session settings", start)
    start = len(term.raw)
    term.child.send("\t")
    term.shows("tus", start)
    out = term.enter("", "generation", "multilingual-e5-small")
    assert str(home / "history") in compact(out)
    term.child.send("/quit\r")
    assert term.exit_code() == 0


def test_index_updated_by_another_process_is_used_next(files):
    corpus, index, home = files
    term = chat(corpus, index, home)
    term.enter(PANDA_QUESTION, "3000万元", PANDA_FILE)
    term.enter("/status", "generation 2")
    (corpus / PANDA_FILE).unlink()
    assert "removed 1" in update_index(corpus, index)
    out = term.enter(PANDA_QUESTION)
    assert "3000万元" not in out and "panda" not in out, "the next question searched the new generation"
    term.enter("/status", "generation 3")
    term.child.send("/quit\r")
    assert term.exit_code() == 0


def test_open_falls_back_to_the_index_and_reindex_updates_in_place(files):
    corpus, index, home = files
    term = chat(corpus, index, home)
    term.enter(PANDA_QUESTION, "3000万元", "[1]")
    (corpus / PANDA_FILE).unlink()
    out = term.enter("/open 1", "from the index:", "any more", "┃")
    assert "3000万元" in compact(out.split("┃", 1)[1])
    term.enter("/reindex", "Index updated: added 0, updated 0, unchanged 1, removed 1")
    term.enter("/docs", "chengdu-sti-reform.txt", "1 documents.")
    out = term.enter(PANDA_QUESTION)
    assert "3000万元" not in out
    term.child.send("/quit\r")
    assert term.exit_code() == 0


def test_hostile_document_reaches_the_terminal_inert(files):
    corpus, index, home = files
    term = chat(corpus, index, home, colour=True)
    term.enter(PANDA_QUESTION, "3000万元", "[1]")
    term.enter("/open 1", "┃")
    term.enter("/docs", "2 documents.")
    term.child.send("/quit\r")
    assert term.exit_code() == 0
    assert_inert(term.raw, term.visible())

    ask = Terminal(["ask", PANDA_QUESTION, "--corpus", str(corpus), "--index", str(index)], home, colour=True)
    assert ask.exit_code() == 0
    assert "\x1b[1" in ask.raw, "the pty run is styled, so markup would have had its chance"
    assert_inert(ask.raw, ask.visible())

    piped = run_cli("ask", PANDA_QUESTION, "--corpus", str(corpus), "--index", str(index))
    assert piped.returncode == 0 and "\x1b" not in piped.stdout and "\x07" not in piped.stdout
    assert_inert(piped.stdout, piped.stdout)


def assert_inert(raw: str, visible: str) -> None:
    for leak in RAW_LEAKS:
        assert leak not in raw, f"{leak!r} reached the terminal"
    shown = compact(visible)
    for text in VISIBLE_ESCAPES + [PANDA_FILE, "熊猫基地[bold red]专项[/]补贴办法\\x1b]0;pwned\\x07"]:
        assert compact(text) in shown, f"{text!r} is not shown as text"
