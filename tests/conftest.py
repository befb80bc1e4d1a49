"""Shared fixtures: the real CLI in a subprocess, and a real index of the seed corpus."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CORPUS = ROOT / "corpus"
SHARED = ROOT.parent / "shared"


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("POLICYQA_CORPUS", None)
    env.pop("POLICYQA_INDEX", None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`policyqa ARGS` as a user runs it: a fresh process, output captured as UTF-8."""
    return subprocess.run(
        [sys.executable, "-m", "policyqa", *args],
        cwd=cwd,
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


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory) -> Path:
    """A real index of the bundled corpus, built once by the real CLI."""
    index = tmp_path_factory.mktemp("seed") / "index"
    proc = run_cli("index", "build", "--corpus", str(CORPUS), "--index", str(index))
    assert proc.returncode == 0, proc.stderr
    return index


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    """A writable copy of the bundled corpus."""
    dest = tmp_path / "corpus"
    shutil.copytree(CORPUS, dest)
    return dest
