"""PDF files: the text layer, page by page, so passages can be cited by page.

pypdf (pure Python, maintained) reads the text layer; there is no OCR, so a scanned PDF
without one is reported as unreadable. Password-protected files are too; files that are
only owner-restricted open with the empty password, as in any viewer.
"""
from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.errors import DependencyError, PdfReadError

from ..records import Span
from . import Extracted, NotExtractable


def extract(raw: bytes) -> Extracted:
    encrypted = False
    try:
        reader = PdfReader(io.BytesIO(raw))
        encrypted = reader.is_encrypted
        if encrypted and not reader.decrypt(""):
            raise NotExtractable("encrypted PDF (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, DependencyError, ValueError, KeyError, TypeError) as exc:
        if encrypted:
            raise NotExtractable("encrypted PDF (cannot be decrypted)") from exc
        raise NotExtractable(f"damaged PDF ({exc})") from exc
    if not any(p.strip() for p in pages):
        raise NotExtractable("no text layer (a scanned PDF? there is no OCR)")
    out = Extracted()
    for text in pages:
        start = out.length + (1 if out.length else 0)
        for line in text.splitlines():
            out.add(line)
        out.pages.append(Span(min(start, out.length), out.length))
    info: dict[str, object] = reader.metadata or {}
    title = str(info.get("/Title") or "").strip()
    out.hints = {"title": title} if title else {}
    return out

