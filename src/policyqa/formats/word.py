"""Word (.docx) files: paragraphs in order, headings, tables as text rows.

python-docx reads the document body; a paragraph whose style is a heading (Heading N /
标题 N / Title) or that carries an outline level becomes a heading of that level, which
the chunker turns into sections. Each table row becomes one line, cells joined by " | ".
"""
from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table

from . import Extracted, NotExtractable

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)


def extract(raw: bytes) -> Extracted:
    try:
        document = docx.Document(io.BytesIO(raw))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
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


def _heading_level(paragraph, name: str) -> int | None:
    if name.lower() == "title":
        return 1
    m = _HEADING_STYLE.match(name)
    if m:
        return max(1, int(m.group(1)))
    ppr = paragraph._p.pPr
    level = ppr.find(docx.oxml.ns.qn("w:outlineLvl")) if ppr is not None else None
    if level is not None:
        value = int(level.get(docx.oxml.ns.qn("w:val")))
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
