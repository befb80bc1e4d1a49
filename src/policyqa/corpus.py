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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .load import SUFFIXES, CorpusError, Skipped, corpus_files, link_problem
from .render import safe


@dataclass
class Plan:
    copies: list[tuple[Path, Path]] = field(default_factory=list)  # (source, target)
    skipped: list[Skipped] = field(default_factory=list)  # links out of a folder given, broken links


@dataclass
class Added:
    written: list[Path]
    skipped: list[Skipped]


def plan_add(paths: list[Path], corpus: Path) -> Plan:
    """What to copy. A file keeps its name at the top of the corpus, a folder keeps its name
    and inner layout; a file given by name is copied even when it is a link, but a link in
    a folder given that leads out of it (or nowhere) is not. Nothing is planned over a
    different file: that is an error before anything is copied. Paths in messages are
    shown inert, since the CLI prints only the first line of an error."""
    if corpus.exists() and not corpus.is_dir():
        raise CorpusError(f"the corpus {safe(str(corpus))} is not a directory")
    plan: dict[Path, Path] = {}
    skipped = []
    for path in paths:
        shown = safe(str(path))
        if not path.exists():
            raise CorpusError(f"no such file or folder: {shown}")
        if path.is_dir():
            folder = path.resolve()
            if corpus.resolve() == folder or corpus.resolve().is_relative_to(folder):
                raise CorpusError(f"{shown} holds the corpus directory itself")
            pairs = []
            for f in corpus_files(folder):
                problem = link_problem(f, folder, outside=str(path))
                if problem:
                    skipped.append(Skipped(str(path / f.relative_to(folder)), problem))
                elif f.suffix.lower() in SUFFIXES:
                    pairs.append((f, corpus / folder.name / f.relative_to(folder)))
            if not pairs:
                raise CorpusError(f"no {' or '.join(SUFFIXES)} files in {shown}")
        elif path.suffix.lower() in SUFFIXES:
            pairs = [(path, corpus / path.name)]
        else:
            raise CorpusError(f"{shown} is not a document ({' or '.join(SUFFIXES)} file)")
        for source, target in pairs:
            other = plan.get(target)
            if other is not None and not filecmp.cmp(other, source, shallow=False):
                raise CorpusError(safe(f"{other} and {source} would both become {target}"))
            if target.exists() and not filecmp.cmp(source, target, shallow=False):
                raise CorpusError(
                    f"{safe(str(target))} already exists with different content; rename or remove one of them")
            plan[target] = source
    copies = [(s, t) for t, s in plan.items() if not (t.exists() and filecmp.cmp(s, t, shallow=False))]
    return Plan(copies, skipped)


def add(paths: list[Path], corpus: Path) -> Added:
    """Copy documents into the corpus (see plan_add); returns the files written and the
    links not followed. Each file appears under its final name only once complete (hidden
    temporary name, then rename), so a concurrent update or watcher never reads half a file."""
    plan = plan_add(paths, corpus)
    written = []
    for source, target in plan.copies:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except (FileExistsError, NotADirectoryError) as exc:  # a file stands where a folder must be
            in_the_way = safe(str(exc.filename))
            raise CorpusError(f"cannot copy into the corpus: a file stands in the way of {in_the_way}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return Added(written, plan.skipped)


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
