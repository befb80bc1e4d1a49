"""Files that readers may open at any moment: written whole, checked, and pruned by generation.

Owns: the temporary-name-then-rename write (synced, so a crash leaves the old file or the
new one, never half of one), the checksum recorded for every file of an index generation,
and removing the files of generations no reader needs any more.
"""
from __future__ import annotations

import mmap
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sync_tree(path: Path) -> None:
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


@contextmanager
def replaced(final: Path, sync: bool = True) -> Iterator[Path]:
    """A temporary path beside `final` to write a file or a directory at; when the block
    ends it is synced (unless `sync` is off: caches that only cost time to lose) and
    renamed to `final`, replacing what was there. If the block fails, it is removed."""
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    remove(tmp)
    try:
        yield tmp
        if sync:
            _sync_tree(tmp)
        if tmp.is_dir():
            remove(final)  # os.replace cannot replace a directory that has files
        os.replace(tmp, final)
        if sync:
            sync_dir(final.parent)
    except BaseException:
        remove(tmp)
        raise


def drop_cached(path: Path) -> None:
    """Ask the kernel to forget a written and synced file's pages in the page cache. The
    writer's pages are large folios (2 MB), and a reader's fault on a memory map maps a
    folio whole: a search that reads a few hundred KB of each of a hundred places in the
    file would count megabytes of each in its RSS. Pages read back come in readahead's
    sizes. (A hint: on a system without it, nothing happens.)"""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def checksum(data: bytes) -> str:
    """Size and CRC-32: enough to tell a damaged file, cheap enough to check on every open."""
    return f"{len(data)}:{zlib.crc32(data):08x}"


def file_checksum(path: Path) -> str:
    """checksum() of a file's bytes, read through a memory map (no copy of the file)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if not size:
            return checksum(b"")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return f"{size}:{zlib.crc32(data):08x}"


def size_of(recorded: str) -> int:
    return int(recorded.split(":", 1)[0])


def matches(path: Path, recorded: str, full: bool) -> bool:
    """Whether the file is what checksum() `recorded`: by every byte with `full`, else by size."""
    return file_checksum(path) == recorded if full else path.stat().st_size == size_of(recorded)


def generation_of(path: Path) -> int | None:
    """NNNNNN of `prefix-NNNNNN[.suffix]`, or None for a name of another shape."""
    try:
        return int(path.name.split("-")[1].split(".")[0])
    except (IndexError, ValueError):
        return None


def prune_generations(directory: Path, prefix: str, current: int) -> None:
    """Remove the `prefix-*` files of all generations but `current` and the one before it
    (readers switching right now may still open it), and every unfinished temporary one."""
    for p in directory.glob(f"{prefix}-*"):
        n = generation_of(p)
        if n is not None and (n < current - 1 or n > current or p.name.endswith(".tmp")):
            remove(p)
