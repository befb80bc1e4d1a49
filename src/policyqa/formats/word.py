"""Word (.docx) files: paragraphs in order, headings, tables as text rows.

python-docx reads the document body; a paragraph whose style is a heading (Heading N /
标题 N / Title) or that carries an outline level becomes a heading of that level, which
the chunker turns into sections. Each table row becomes one line, cells joined by " | ".

A .docx is a zip archive, and a small one can unpack to gigabytes of XML (a zip bomb:
44 KB of empty paragraphs that python-docx spends many minutes and gigabytes on). So the
archive is measured before python-docx opens it: the sizes its members declare (zipfile
never unpacks more than that) and the paragraphs and table cells in its XML, counted as
it streams.
"""
from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from docx.table import Table

from . import Extracted, NotExtractable

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
MB = 1024 * 1024
# Five times load.MAX_BYTES: room for the markup around as much text as a text file may hold.
MAX_UNPACKED = 100 * MB
# The longest law of ../shared/bench/laws has 1,890 paragraphs; python-docx reads about
# 10,000 a second, so the limit also bounds the time one file can take.
MAX_BLOCKS = 200_000
_BLOCK = re.compile(rb"<w:(?:p|tc)[\s/>]")  # a paragraph or table cell starts
_NOT_READABLE = (PackageNotFoundError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, EOFError)


def extract(raw: bytes) -> Extracted:
    try:
        _check_size(raw)
        document = docx.Document(io.BytesIO(raw))
    except _NOT_READABLE as exc:
        raise NotExtractable("not a readable Word document") from exc
    # Style names by id, read once: python-docx's paragraph.style scans every style per call.
    names = {style.style_id: style.name or "" for style in document.styles}
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    names[None] = default.name if default is not None else ""
    out = Extracted()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            _add_table(out, block)
        else:
            out.add(block.text, heading=_heading_level(block, names.get(block._p.style, "")))
    props = document.core_properties
    out.hints = {k: v for k, v in {"title": (props.title or "").strip()}.items() if v}
    return out


def _check_size(raw: bytes) -> None:
    """NotExtractable when the archive unpacks to more than MAX_UNPACKED bytes or holds
    more than MAX_BLOCKS paragraphs and table cells."""
    package = zipfile.ZipFile(io.BytesIO(raw))
    members = package.infolist()
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UNPACKED:
        raise NotExtractable(f"Word document unpacks to {unpacked / MB:,.0f} MB (more than {MAX_UNPACKED // MB} MB)")
    blocks = 0
    for member in members:
        if not member.filename.endswith(".xml"):
            continue
        with package.open(member) as part:
            tail = b""
            for piece in iter(lambda: part.read(MB), b""):
                data = tail + piece
                # A tag opened in the last bytes may end in the next piece: carry it over.
                cut = data.rfind(b"<", max(0, len(data) - 6))
                cut = len(data) if cut < 0 else cut
                blocks += len(_BLOCK.findall(data, 0, cut))
                tail = data[cut:]
                if blocks > MAX_BLOCKS:
                    raise NotExtractable(f"Word document has more than {MAX_BLOCKS:,} paragraphs and table cells")
            blocks += len(_BLOCK.findall(tail))


def _heading_level(paragraph, name: str) -> int | None:
    if name.lower() == "title":
        return 1
    m = _HEADING_STYLE.match(name)
    if m:
        return max(1, int(m.group(1)))
    ppr = paragraph._p.pPr
    level = ppr.find(qn("w:outlineLvl")) if ppr is not None else None
    if level is not None:
        value = int(level.get(qn("w:val")))
        return value + 1 if value < 9 else None  # 9 means body text
    return None


def _add_table(out: Extracted, table: Table) -> None:
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is listed once per grid column
                continue
            seen.add(id(cell._tc))
            text = " ".join(cell.text.split())
            if text:
                cells.append(text)
        out.add(" | ".join(cells))
