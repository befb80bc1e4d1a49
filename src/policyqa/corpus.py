"""Changing the corpus directory: adding files to it (`index add`) and watching it
(`index watch`).

Owns: which given paths become corpus files and under which names, refusing to replace a
different file of the same name, and turning bursts of file changes into one index update
once the files have settled.
"""
from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from .load import SUFFIXES, CorpusError, corpus_files


def plan_add(paths: list[Path], corpus: Path) -> list[tuple[Path, Path]]:
    """(source, target) for each document to copy. A file keeps its name at the top of the
    corpus, a folder keeps its name and inner layout. Nothing is planned over a different
    file: that is an error before anything is copied."""
    plan: dict[Path, Path] = {}
    for path in paths:
        if not path.exists():
            raise CorpusError(f"no such file or folder: {path}")
        if path.is_dir():
            folder = path.resolve()
            if corpus.resolve() == folder or corpus.resolve().is_relative_to(folder):
                raise CorpusError(f"{path} holds the corpus directory itself")
            found = [f for f in corpus_files(folder) if f.suffix.lower() in SUFFIXES]
            if not found:
                raise CorpusError(f"no {' or '.join(SUFFIXES)} files in {path}")
            pairs = [(f, corpus / folder.name / f.relative_to(folder)) for f in found]
        elif path.suffix.lower() in SUFFIXES:
            pairs = [(path, corpus / path.name)]
        else:
            raise CorpusError(f"{path} is not a document ({' or '.join(SUFFIXES)} file)")
        for source, target in pairs:
            other = plan.get(target)
            if other is not None and not filecmp.cmp(other, source, shallow=False):
                raise CorpusError(f"{other} and {source} would both become {target}")
            if target.exists() and not filecmp.cmp(source, target, shallow=False):
                raise CorpusError(f"{target} already exists with different content; rename or remove one of them")
            plan[target] = source
    return [(s, t) for t, s in plan.items() if not (t.exists() and filecmp.cmp(s, t, shallow=False))]


def add(paths: list[Path], corpus: Path) -> list[Path]:
    """Copy documents into the corpus (see plan_add); returns the files written. Each file
    appears under its final name only once complete (hidden temporary name, then rename),
    so a concurrent update or watcher never reads half a file."""
    written = []
    for source, target in plan_add(paths, corpus):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def _may_be_document(corpus: Path) -> Callable[[object, str], bool]:
    def accept(change: object, path: str) -> bool:
        try:
            rel = Path(path).relative_to(corpus)
        except ValueError:
            return False
        if any(part.startswith(".") for part in rel.parts):
            return False
        # A folder (no suffix) that is moved or deleted takes its documents with it.
        return rel.suffix.lower() in SUFFIXES or not rel.suffix
    return accept


def settled_changes(corpus: Path, settle_s: float) -> Iterator[int]:
    """Yields 0 once the watcher is live (so that nothing changed after it is missed), then
    once per burst of document changes, when nothing has changed for `settle_s` seconds (or
    after 10 x settle_s of continuous changes), the number of changed paths. Ctrl-C raises
    KeyboardInterrupt."""
    from watchfiles import watch

    root = corpus.resolve()
    step_ms = max(50, int(settle_s * 1000))
    live = False
    for changes in watch(root, watch_filter=_may_be_document(root), step=step_ms, debounce=10 * step_ms,
                         rust_timeout=1000, yield_on_timeout=True):
        if changes or not live:
            live = True
            yield len(changes)
