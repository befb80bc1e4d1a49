"""Finding corpus files and turning them into text.

Owns: which files are documents, how a text file's bytes become text (UTF-8 first, then
the detected legacy encoding), the dispatch of HTML, Word and PDF files to their
extractors (`formats/`), and the reasons a file is skipped.

Symbolic links: a link to a file inside the corpus is read as that file (under the
link's name); a link to a folder is not entered (its documents are indexed where they
are); a link that leads outside the corpus, or nowhere, is skipped with the reason, so
that `ln -s /etc/passwd corpus/x.txt` never puts another file's text in the index.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .formats import EXTRACTORS, NotExtractable, extract
from .records import Document

TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = TEXT_SUFFIXES + tuple(EXTRACTORS)
MAX_BYTES = 20 * 1024 * 1024


class CorpusError(InputError):
    """The corpus directory cannot be used."""


class Unreadable(Exception):
    """A file that cannot become a document; the message is the reason shown to users."""


@dataclass(frozen=True)
class Skipped:
    doc: str
    reason: str


def corpus_files(root: Path) -> list[Path]:
    """Files under `root`, recursively, in a stable order: every one is a document or
    is reported as skipped. Hidden files and folders (editor swap files, .git) are not.
    Links are listed when they are read or refused (see the module docstring)."""
    # Directory entries over strings, not pathlib: at a province's library (tens of
    # thousands of files) pathlib's per-path parsing and a stat per file cost an update
    # seconds; an entry knows its type from the directory listing.
    found: list[tuple[str, Path]] = []
    todo = [(str(root), "")]
    while todo:
        folder, rel = todo.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = f"{rel}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    todo.append((entry.path, f"{name}/"))  # a linked folder is not descended into
                elif entry.is_file() or (entry.is_symlink() and link_problem(Path(entry.path), root)):
                    found.append((name, Path(entry.path)))
    return [p for _, p in sorted(found, key=lambda item: item[0])]


def link_problem(path: Path, root: Path, outside: str = "the corpus") -> str | None:
    """Why `path` (under `root`) is not read: a link leading outside `root` or nowhere.
    None for a link within `root` and for anything that is not a link."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # a broken link, or a loop of links
        return f"broken link (to {os.readlink(path)})" if path.is_symlink() else None
    if target.is_relative_to(root.resolve()):
        return None
    return f"link to outside {outside} ({target})"


def relative_name(path: Path, root: Path) -> str:
    text, prefix = str(path), str(root) + os.sep
    if text.startswith(prefix):  # as corpus_files makes them: no pathlib parsing per file
        return text[len(prefix):].replace(os.sep, "/")
    return path.relative_to(root).as_posix()


def decode(raw: bytes) -> tuple[str, str]:
    """Bytes -> (text with universal newlines, encoding name)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        text, encoding = raw[3:].decode("utf-8"), "utf-8-sig"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text, encoding = raw.decode("utf-16"), "utf-16"
    else:
        if b"\x00" in raw:
            raise Unreadable("binary file (contains NUL bytes)")
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = _decode_detected(raw)
    # What open() in text mode returns, so offsets match what users read from the file.
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def _decode_detected(raw: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None:
        raise Unreadable("unknown text encoding")
    return str(best), best.encoding


def read_document(path: Path, root: Path) -> Document:
    """Read one file; raises Unreadable with a user-facing reason."""
    link = link_problem(path, root)
    if link:
        raise Unreadable(link)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise Unreadable(f"unsupported file type {suffix or '(no suffix)'}")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise Unreadable(f"larger than {MAX_BYTES // (1024 * 1024)} MB")
        raw = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"cannot read: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise Unreadable("empty file")
    doc = Document(path=relative_name(path, root), text="", title="", encoding="",
                   content_hash=hashlib.sha256(raw).hexdigest())
    if suffix in TEXT_SUFFIXES:
        doc.text, doc.encoding = decode(raw)
        return doc
    found = _extract(suffix, raw)
    doc.text, doc.encoding = found.text, suffix[1:]
    doc.headings, doc.pages, doc.hints = found.headings, found.pages, found.hints
    return doc


def _extract(suffix: str, raw: bytes):
    try:
        return extract(suffix, raw)
    except NotExtractable as exc:
        raise Unreadable(str(exc)) from exc
    except Exception as exc:  # parsers of untrusted files fail in their own ways; one bad file must not stop a build
        detail = (str(exc).strip().splitlines() or [""])[0][:120]
        raise Unreadable(f"cannot extract text ({type(exc).__name__}: {detail})") from exc
