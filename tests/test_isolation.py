"""The suite keeps off the checkout's own corpus/ and index/: a user who has indexed
documents there (`policyqa index add`) must still see the tests pass, and lose nothing."""
from __future__ import annotations

import json

from conftest import CHECKOUT_DATA, CLI_CWD, CORPUS, ROOT, SEED_CORPUS, run_cli, snapshot


def test_the_seed_corpus_is_a_private_copy_outside_the_checkout():
    assert not CORPUS.resolve().is_relative_to(ROOT.resolve())
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(p.name for p in SEED_CORPUS.iterdir())


def test_the_cli_runs_where_dot_corpus_and_dot_index_name_nothing_of_the_checkout():
    assert not CLI_CWD.resolve().is_relative_to(ROOT.resolve())
    assert not (CLI_CWD / "corpus").exists() and not (CLI_CWD / "index").exists()


def test_the_seed_index_holds_the_seed_documents_only(seed_index):
    status = json.loads(run_cli("index", "status", "--json", "--index", str(seed_index)).stdout)
    assert status["documents"] == len(list(SEED_CORPUS.iterdir()))


def test_a_change_to_the_checkouts_data_folders_is_seen(tmp_path):
    """The session-end check compares snapshots of corpus/ and index/; here on stand-in folders."""
    folders = (tmp_path / "corpus", tmp_path / "index")
    folders[0].mkdir()
    before = snapshot(folders)
    (folders[0] / "law.txt").write_text("第一条 本条例自公布之日起施行。", encoding="utf-8")
    after = snapshot(folders)
    assert set(after) - set(before) == {str(folders[0] / "law.txt")}
    assert all(str(path).startswith(str(ROOT)) for path in snapshot(CHECKOUT_DATA))
