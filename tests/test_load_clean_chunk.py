"""Loading, cleaning and chunking on real files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from policyqa.chunk import CHUNK_MAX, chunk_document
from policyqa.clean import clean
from policyqa.load import Unreadable, corpus_files, read_document

from conftest import CORPUS, SHARED

SEED = CORPUS / "chengdu-sti-reform.txt"


def load(path: Path, root: Path):
    return clean(read_document(path, root))


def test_every_seed_chunk_is_an_exact_slice_of_the_file():
    doc = load(SEED, CORPUS)
    file_text = SEED.open(encoding="utf-8").read()  # universal newlines, as users read it
    chunks = chunk_document(doc)
    assert len(chunks) > 10
    for c in chunks:
        assert file_text[c.start:c.end] == c.text
        assert 0 < len(c.text) <= CHUNK_MAX


def test_noise_is_not_indexed_and_content_is():
    chunks = chunk_document(load(SEED, CORPUS))
    joined = "\n".join(c.text for c in chunks)
    for noise in ("图片 1", "相关文章", "发表评论", "电子邮件地址不会被公开", "网站地图"):
        assert noise not in joined
    assert "天使投资引导资金" in joined


def test_sections_carry_the_structural_headings():
    chunks = chunk_document(load(SEED, CORPUS))
    sections = {c.section for c in chunks if c.section}
    assert any(s.startswith("一、成都市深化科技体制改革情况") for s in sections)
    assert any("二、2015年工作思路 › 三是“建机制”" in s for s in sections)


def test_gbk_file_is_decoded_and_offsets_hold(tmp_path):
    text = "第一章 总则\n第一条 为了支持种子期科技企业融资，设立天使投资引导资金。\n第二条 本办法自发布之日起施行。\n"
    (tmp_path / "gbk.txt").write_bytes(text.encode("gbk"))
    doc = load(tmp_path / "gbk.txt", tmp_path)
    assert doc.encoding.lower().replace("_", "") in {"gbk", "gb2312", "gb18030", "cp936"}
    assert doc.text == text
    chunks = chunk_document(doc)
    assert chunks and all(doc.text[c.start:c.end] == c.text for c in chunks)
    assert chunks[0].section.startswith("第一章 总则")


def test_crlf_offsets_match_text_mode_reading(tmp_path):
    (tmp_path / "crlf.md").write_bytes("# 标题\r\n\r\n一、总体要求\r\n支持企业创新。加大融资支持。\r\n".encode())
    doc = load(tmp_path / "crlf.md", tmp_path)
    assert doc.title == "标题"
    expected = (tmp_path / "crlf.md").open(encoding="utf-8").read()
    assert all(expected[c.start:c.end] == c.text for c in chunk_document(doc))


def test_every_visible_file_is_listed_and_unsupported_ones_say_why(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "sub/b.md", "c.bin", ".hidden.txt", "sub/d.TXT"):
        (tmp_path / name).write_text("内容")
    files = corpus_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.txt", "c.bin", "sub/b.md", "sub/d.TXT"]
    assert read_document(tmp_path / "sub/d.TXT", tmp_path).text == "内容"
    with pytest.raises(Unreadable, match=r"unsupported file type \.bin"):
        read_document(tmp_path / "c.bin", tmp_path)


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"\x00\x01\x02binary", "binary")])
def test_unreadable_files_say_why(tmp_path, content, reason):
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(Unreadable, match=reason):
        read_document(tmp_path / "bad.txt", tmp_path)


@pytest.mark.skipif(not (SHARED / "bench" / "ncpqa" / "docs").is_dir(), reason="needs ../shared/bench")
def test_single_line_scraped_notices_chunk_within_limits():
    root = SHARED / "bench" / "ncpqa" / "docs"
    for path in sorted(root.glob("*.txt"))[:40]:
        doc = load(path, root)
        chunks = chunk_document(doc)
        assert chunks, path
        assert all(doc.text[c.start:c.end] == c.text and len(c.text) <= CHUNK_MAX for c in chunks)
        assert len(doc.title) <= 81


LAWS = SHARED / "bench" / "laws"
needs_laws = pytest.mark.skipif(not LAWS.is_dir(), reason="needs ../shared/bench/laws")
TRANSFER_LAW = LAWS / "行政法" / "促进科技成果转化法(2015-08-29).txt"
_ARTICLE = re.compile(r"^第[一二三四五六七八九十百零〇]+条")
_PART = re.compile(r"^第[一二三四五六七八九十百零〇]+[编章节]")


def chunk_at(doc, chunks, phrase: str):
    offset = doc.text.index(phrase)
    return next(c for c in chunks if c.start <= offset < c.end)


@needs_laws
def test_law_sections_are_chapter_then_article_never_a_list_item():
    doc = load(TRANSFER_LAW, LAWS)
    chunks = chunk_document(doc)
    # 第三十二条 closes 第二章 (第三章 保障措施 starts after it), not an item of 第十三条.
    assert chunk_at(doc, chunks, "第三十二条 国家支持").section == "第二章 组织实施 › 第三十二条"
    # The items of 第四十五条 are its text; the article stays the section.
    assert chunk_at(doc, chunks, "（二）利用该项职务科技成果作价投资").section == "第四章 技术权益 › 第四十五条"


@needs_laws
@pytest.mark.parametrize("path", sorted(LAWS.rglob("*科技*.txt")) if LAWS.is_dir() else [])
def test_every_law_section_label_is_a_whole_heading_or_an_article(path):
    doc = load(path, LAWS)
    heading_lines = {doc.text[s.start:s.end].lstrip("#").strip() for s in doc.keep}
    article_starts = [s.start for s in doc.keep if _ARTICLE.match(doc.text[s.start:s.end])]
    for c in chunk_document(doc):
        labels = c.section.split(" › ") if c.section else []
        for label in labels:
            assert label in heading_lines or _ARTICLE.fullmatch(label), (label, c.text[:40])
        inside = [a for a in article_starts if a <= c.start]
        if inside and not _PART.match(doc.text[c.start:c.end].lstrip("# ")):
            article = _ARTICLE.match(doc.text[inside[-1]:]).group()
            assert labels[-1] == article, (c.section, c.text[:40])


@needs_laws
def test_a_notice_quoting_articles_keeps_its_own_numbered_sections():
    root = SHARED / "bench" / "ncpqa" / "docs"
    doc = load(root / "983984f7473f37928df3f0189fec95b0.txt", root)  # a Q&A citing 第三十一条 and 第五十七条
    sections = [c.section for c in chunk_document(doc)]
    assert "1、关于传染病的类别，我国法律是如何规定的" in sections
