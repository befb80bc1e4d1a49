"""Metadata found in the text of policy documents, as they are written."""
from __future__ import annotations

import pytest

from policyqa.clean import clean
from policyqa.load import read_document
from policyqa.metadata import describe, iso_date
from policyqa.records import Document

from conftest import SHARED

LAWS = SHARED / "bench" / "laws"
TRANSFER_LAW = LAWS / "行政法" / "促进科技成果转化法(2015-08-29).txt"
needs_laws = pytest.mark.skipif(not TRANSFER_LAW.is_file(), reason="needs ../shared/bench/laws")


def meta_of(text: str, **hints: str):
    doc = clean(Document(path="d.txt", text=text, title="", encoding="utf-8", content_hash="", hints=hints))
    return describe(doc)


def test_labelled_fields_of_a_government_information_page():
    m = meta_of("关于做好复工复产工作的通知\n发文机关：国务院办公厅\n发文字号：国办发〔2020〕6号\n"
                "成文日期：2020年03月03日\n一、总体要求\n各地区要统筹推进。")
    assert (m.issuer, m.doc_number, m.date) == ("国务院办公厅", "国办发〔2020〕6号", "2020-03-03")


def test_a_cited_documents_number_is_not_this_ones():
    m = meta_of("为贯彻《交通运输部关于切实保障疫情防控物资运输车辆顺畅通行的紧急通知》（交运明电〔2020〕37号）要求，"
                "现就有关事项通知如下。一、做好运输保障。")
    assert m.doc_number is None


def test_square_brackets_are_written_as_the_standard_ones():
    assert meta_of("市科技局文件\n成科字[2015]12号\n各有关单位：").doc_number == "成科字〔2015〕12号"


def test_signature_block_with_chinese_numeral_date():
    m = meta_of("关于延期复工的通知\n一、延长假期。\n二、做好防控。\n上海市人民政府办公厅\n二〇二〇年二月十五日")
    assert (m.issuer, m.date) == ("上海市人民政府办公厅", "2020-02-15")


def test_one_line_scraped_notice_signed_by_two_bodies():
    m = meta_of("关于支持个体工商户复工复业增值税政策的公告 现将有关事项公告如下：自2020年3月1日至5月31日，"
                "对湖北省增值税小规模纳税人免征增值税。 特此公告。 财政部 税务总局 2020年2月28日")
    assert (m.issuer, m.date) == ("财政部 税务总局", "2020-02-28")


def test_law_passed_by_a_congress_committee():
    m = meta_of("# 广东省知识产权保护条例\n\n2022年3月29日 广东省第十三届人民代表大会常务委员会第四十一次会议通过\n\n"
                "## 第一章 总 则\n\n第一条 为了加强知识产权保护，制定本条例。\n\n第六十条 本条例自2022年5月1日起施行。")
    assert (m.title, m.issuer, m.date) == (
        "广东省知识产权保护条例", "广东省第十三届人民代表大会常务委员会", "2022-03-29")


def test_effective_date_when_nothing_else_is_dated():
    m = meta_of("成都市科技项目管理办法\n第一条 为规范管理，制定本办法。\n第二十条 本办法自2016年1月1日起施行。")
    assert m.date == "2016-01-01" and m.issuer is None


def test_issuer_from_the_title_when_unsigned():
    notice = "成都市科学技术局关于开展科技项目申报的通知\n各有关单位：请按要求申报。"
    assert meta_of(notice).issuer == "成都市科学技术局"


@pytest.mark.parametrize("hint, title", [
    ("Microsoft Word - 附件1.doc", "关于开展科技项目申报的通知"),
    ("关于促进科技金融发展的若干措施", "关于促进科技金融发展的若干措施"),
])
def test_a_stated_title_is_used_when_plausible(hint, title):
    assert meta_of("关于开展科技项目申报的通知\n各有关单位：请按要求申报。", title=hint).title == title


def test_dates_in_their_written_forms():
    assert iso_date("2015年3月12日") == "2015-03-12"
    assert iso_date("发布时间：2020-02-05 10:00") == "2020-02-05"
    assert iso_date("2019/7/1") == "2019-07-01"
    assert iso_date("二〇一九年十二月三十一日") == "2019-12-31"
    assert iso_date("2019年13月1日") is None


@needs_laws
def test_an_amended_law_is_dated_by_its_latest_amendment(tmp_path):
    text = TRANSFER_LAW.read_text(encoding="utf-8")
    assert "1996年5月15日" in text and "2015年8月29日" in text
    (tmp_path / "促进科技成果转化法.txt").write_text(text, encoding="utf-8")
    assert describe(clean(read_document(tmp_path / "促进科技成果转化法.txt", tmp_path))).date == "2015-08-29"
    assert describe(clean(read_document(TRANSFER_LAW, LAWS))).date == "2015-08-29"


@needs_laws
def test_the_date_in_a_laws_file_name_counts(tmp_path):
    adopted_only = "\n".join(line for line in TRANSFER_LAW.read_text(encoding="utf-8").splitlines()
                             if "修正" not in line)
    for name in ("促进科技成果转化法(2015-08-29).txt", "促进科技成果转化法.txt"):
        (tmp_path / name).write_text(adopted_only, encoding="utf-8")
    doc = read_document(tmp_path / "促进科技成果转化法(2015-08-29).txt", tmp_path)
    assert describe(clean(doc)).date == "2015-08-29"
    assert describe(clean(read_document(tmp_path / "促进科技成果转化法.txt", tmp_path))).date == "1996-05-15"
