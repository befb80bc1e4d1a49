"""Shared fixtures: the real CLI in a subprocess, and a real index of the seed corpus.

Tests never read or write the checkout's own corpus/ and index/ (a user's documents and
index live there): CORPUS is a private copy of the seed document from ../shared/corpus,
the CLI runs in an empty working directory (so ./corpus and ./index name nothing of the
checkout), and the session fails if either folder of the checkout changed during it.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SHARED = ROOT.parent / "shared"
SEED_CORPUS = SHARED / "corpus"
if not SEED_CORPUS.is_dir():
    raise RuntimeError(f"the tests need the seed corpus at {SEED_CORPUS}")
_WORK = Path(tempfile.mkdtemp(prefix="policyqa-tests-"))
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)
CORPUS = _WORK / "corpus"
shutil.copytree(SEED_CORPUS, CORPUS)
CLI_CWD = _WORK / "cwd"
CLI_CWD.mkdir()
CHECKOUT_DATA = (ROOT / "corpus", ROOT / "index")


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("POLICYQA_CORPUS", None)
    env.pop("POLICYQA_INDEX", None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`policyqa ARGS` as a user runs it: a fresh process, output captured as UTF-8, in an
    empty working directory unless `cwd` is given."""
    return subprocess.run(
        [sys.executable, "-m", "policyqa", *args],
        cwd=cwd or CLI_CWD,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )


def ask_json(index: Path, question: str, *extra: str) -> dict:
    proc = run_cli("ask", question, "--json", "--index", str(index), *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def snapshot(folders: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every file under `folders`: path -> (size, modification time in ns)."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            stat = path.lstat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


_BEFORE = pytest.StashKey[dict]()


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = snapshot(CHECKOUT_DATA)


def pytest_sessionfinish(session, exitstatus):
    before, after = session.config.stash[_BEFORE], snapshot(CHECKOUT_DATA)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    if changed:
        print(f"\nthe test run changed the checkout's own corpus/ or index/: {', '.join(changed)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory) -> Path:
    """A real index of the seed corpus, built once by the real CLI."""
    index = tmp_path_factory.mktemp("seed") / "index"
    proc = run_cli("index", "build", "--corpus", str(CORPUS), "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    return index


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Corpora `old` and `new` (one file changed, removed, renamed, added), a committed
    index of `old`, and the chunks of a fresh build of `new` (tests/crashkit.py)."""
    import crashkit

    return crashkit.prepare(CORPUS / "chengdu-sti-reform.txt", tmp_path_factory.mktemp("update"))


@pytest.fixture
def index(setup, tmp_path) -> Path:
    """A writable copy of the committed index of `old`."""
    dest = tmp_path / "index"
    shutil.copytree(setup.template, dest)
    return dest


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    """A writable copy of the seed corpus."""
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest
