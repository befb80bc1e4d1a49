"""Separating a document's content from page noise, and naming the document.

Owns: which line ranges of the loaded text are content (`Document.keep`) and the title.
Noise is excluded by range, never rewritten, so chunk offsets stay exact.
"""
from __future__ import annotations

import re
from dataclasses import replace

from .records import Document, Span

# Lines that are page furniture of scraped articles, never policy content.
_NOISE_LINE = re.compile(
    r"""^(?:
        图片\s*\d*
      | <!--.*-->
      | 网站地图.* | .*xml地图
      | 电子邮件地址不会被公开.* | 必填项已用.*
      | (?:上一篇|下一篇|分享到|责任编辑|来源|扫一扫)\s*[:：].*
      | 打印本页 | 关闭窗口 | 返回顶部 | 【?\s*打印\s*】? | 【?\s*关闭\s*】?
      | 字体\s*[:：]?\s*[大中小\s]+
      | (?:Copyright|版权所有).*
      | [-—–－]\s*\d{1,4}\s*[-—–－]              # page numbers of printed documents: "- 3 -"
      | 第\s*\d+\s*页(?:\s*[,，]?\s*共\s*\d+\s*页)?
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
# Once one of these appears on a line of its own, the article is over: the rest of the
# page is related links, comment forms and footers.
_FOOTER_START = re.compile(r"^(?:相关文章|相关阅读|相关新闻|发表评论|评论列表|我要评论|网友评论)\s*[:：]?$")
_MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$")
TITLE_MAX = 80


def line_spans(text: str) -> list[Span]:
    """Every non-blank line as a span without its newline or surrounding spaces."""
    spans = []
    for m in re.finditer(r"[^\n]+", text):
        line = m.group()
        lead = len(line) - len(line.lstrip())
        body = line.strip()
        if body:
            start = m.start() + lead
            spans.append(Span(start, start + len(body)))
    return spans


def content_spans(text: str) -> list[Span]:
    keep = []
    for span in line_spans(text):
        line = text[span.start:span.end]
        if _FOOTER_START.match(line):
            break
        if not _NOISE_LINE.match(line):
            keep.append(span)
    return keep


def title_of(text: str, keep: list[Span]) -> str:
    """The first Markdown heading near the top, else the first substantial line, cut
    to a readable length (scraped articles often have no line breaks at all)."""
    lines = [text[s.start:s.end] for s in keep]
    for line in lines[:5]:
        m = _MD_HEADING.match(line)
        if m:
            return m.group(1)
    for line in lines:
        if len(line) >= 8 or line is lines[-1]:
            return _shorten(line)
    return ""


def _shorten(line: str) -> str:
    if len(line) <= TITLE_MAX:
        return line
    m = re.search(r"\s|[。；！？]", line[8:])
    if m and 8 + m.start() <= TITLE_MAX:
        return line[: 8 + m.start()]
    return line[:TITLE_MAX].rstrip() + "…"


def clean(doc: Document) -> Document:
    keep = content_spans(doc.text)
    return replace(doc, keep=keep, title=title_of(doc.text, keep) or doc.path)
