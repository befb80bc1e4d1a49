"""Saved web pages: the article's main text, title and publication date.

trafilatura finds the main content (dropping navigation, comment sections, related-link
lists and footers) and the page's date; it is maintained, and handles the table- and
div-based layouts of government sites. Its XML body keeps headings, paragraphs, lists
and tables apart, so each becomes a line of the document text.
"""
from __future__ import annotations

import trafilatura

from . import Extracted, NotExtractable

# <meta name=...> that Chinese government sites use for the issuing body and date.
_META_ISSUER = ("contentsource", "source", "发文机关", "发布机构")
_META_DATE = ("pubdate", "publishdate", "firstpublishedtime", "article:published_time")


def extract(raw: bytes) -> Extracted:
    tree = trafilatura.load_html(raw)
    if tree is None:
        raise NotExtractable("not an HTML page")
    metas = {(m.get("name") or m.get("property") or "").lower(): (m.get("content") or "").strip()
             for m in tree.iter("meta")}
    found = trafilatura.bare_extraction(
        tree, with_metadata=True, include_comments=False, include_tables=True, include_images=False
    )
    assert not isinstance(found, dict), "a Document unless as_dict is set"
    if found is None or found.body is None:
        raise NotExtractable("no article text found in the page")
    out = Extracted()
    for element in found.body:
        _add_block(out, element)
    hints = {"title": found.title, "date": found.date}
    hints["issuer"] = next((metas[k] for k in _META_ISSUER if metas.get(k)), None)
    hints["date"] = next((metas[k] for k in _META_DATE if metas.get(k)), None) or hints["date"]
    out.hints = {k: v for k, v in hints.items() if v}
    return out


def _add_block(out: Extracted, element) -> None:
    tag = element.tag
    if tag == "head":
        rend = element.get("rend") or "h2"
        out.add(_text(element), heading=int(rend[1]) if rend[1:].isdigit() else 2)
    elif tag == "list":
        for item in element.iter("item"):
            out.add(_text(item))
    elif tag == "table":
        for row in element.iter("row"):
            out.add(" | ".join(c for c in (_text(cell) for cell in row) if c))
    else:  # p, quote, code and anything trafilatura adds later
        out.add(_text(element))


def _text(element) -> str:
    """Text of an element with its <lb/> line breaks kept."""
    parts = [element.text or ""]
    for child in element:
        parts.append("\n" if child.tag == "lb" else "".join(child.itertext()))
        parts.append(child.tail or "")
    return "".join(parts)
