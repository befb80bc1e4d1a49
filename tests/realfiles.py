"""Real policy files of every supported kind, written by the libraries that make them
(python-docx, reportlab), plus files that cannot be read. Shared by the format tests and
by CI's user-install check (`python tests/realfiles.py DIR` writes one file of each format).
"""
from __future__ import annotations

import sys
from pathlib import Path

HTML = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="gbk">
<title>关于促进科技金融发展的若干措施_成都市科学技术局</title>
<meta name="PubDate" content="2015-03-12 10:00">
<meta name="ContentSource" content="成都市科学技术局">
</head><body>
<header><nav><ul><li><a href="/">首页</a></li><li><a href="/news">新闻中心</a></li>
<li><a href="/zwgk">政务公开</a></li><li><a href="/bsfw">办事服务大厅</a></li></ul></nav></header>
<div class="breadcrumb">当前位置：首页 &gt; 政务公开 &gt; 通知公告</div>
<article>
<h1>关于促进科技金融发展的若干措施</h1>
<p>成科字〔2015〕12号</p>
<p>各区（市）县科技局，有关单位：</p>
<h2>一、设立天使投资引导资金</h2>
<p>市级财政安排专项资金，设立规模为1亿元的天使投资引导资金，支持种子期、初创期科技型中小企业发展。</p>
<h2>二、建立债权融资风险补偿资金池</h2>
<p>设立规模为5000万元的科技企业债权融资风险补偿资金池，对合作银行向科技型中小企业发放贷款形成的损失给予最高50%的补偿。</p>
<p>成都市科学技术局</p><p>2015年3月12日</p>
</article>
<section class="comments"><h3>发表评论</h3><form><textarea name="c"></textarea><button>提交评论</button></form>
<div class="comment">网友甲：这个政策很好，希望尽快落实到每一家企业。</div></section>
<aside class="related"><h3>相关文章</h3><ul><li><a href="/a1">成都市科技局召开年度工作会议</a></li>
<li><a href="/a2">关于开展2015年度科技项目申报的通知</a></li></ul></aside>
<footer><p>版权所有：成都市科学技术局 地址：成都市高新区天府大道 蜀ICP备12345678号</p><p>网站地图 | 联系我们</p></footer>
</body></html>
"""  # noqa: E501  (a page's lines as a site serves them)
HTML_NOISE = ("新闻中心", "办事服务大厅", "当前位置", "网友甲", "提交评论", "成都市科技局召开年度工作会议",
              "蜀ICP备", "网站地图")

GBK_TEXT = """四川省人民政府办公厅关于推进知识产权质押融资的通知
川办发〔2018〕20号
各市（州）人民政府，省政府各部门：
一、加大贴息支持
对科技型中小企业以专利权、商标权质押获得的贷款，按实际支付利息的50%给予贴息，单户企业每年最高贴息200万元。
二、建立评估机制
省知识产权局会同财政厅建立知识产权评估机构名录。
四川省人民政府办公厅
2018年3月9日
"""

BIG5_TEXT = """臺北市產業發展獎勵補助要點
一、臺北市政府為鼓勵產業創新研發，特訂定本要點。
二、研發補助上限為新臺幣五百萬元，補助比例不超過計畫總經費百分之五十。
臺北市政府產業發展局
2019年7月1日
"""

UTF16_TEXT = ("# 重庆市科技创新券管理办法\r\n\r\n一、创新券面额\r\n"
              "每张科技创新券面额最高为10万元，用于购买检验检测服务。\r\n")

PDF_PAGES = [
    ["关于支持技术转移的若干政策", "成财教〔2017〕45号", "各区（市）县财政局、科技局：",
     "一、支持技术转移机构建设", "对新认定的国家级技术转移示范机构给予50万元一次性奖励。"],
    ["二、技术合同登记奖励", "对技术转让方按经登记的技术合同交易额的3%给予奖励，", "单个单位每年最高奖励100万元。"],
    ["三、本政策自2017年7月1日起施行。", "成都市财政局", "2017年6月1日"],
]


def write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.core_properties.title = "成都市科技企业孵化器认定管理办法"
    d.add_heading("成都市科技企业孵化器认定管理办法", level=0)
    d.add_paragraph("成科发〔2016〕8号")
    d.add_heading("认定条件", level=1)
    d.add_paragraph("申请认定的孵化器应当具有独立法人资格，在孵企业不少于20家。")
    d.add_heading("场地要求", level=2)
    d.add_paragraph("各类孵化器的最低场地面积如下表所示。")
    table = d.add_table(rows=3, cols=2)
    rows = [("孵化器类型", "最低场地面积"), ("综合孵化器", "3000平方米"), ("专业孵化器", "2000平方米")]
    for row, cells in zip(table.rows, rows):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    d.add_heading("支持措施", level=1)
    d.add_paragraph("对新认定的市级孵化器给予30万元一次性补助。")
    d.add_paragraph("成都市科学技术局")
    d.add_paragraph("2016年5月20日")
    d.save(path)


def write_docx_paragraphs(path: Path, paragraphs: list[str]) -> None:
    import docx

    d = docx.Document()
    for i, text in enumerate(paragraphs):
        if i % 10 == 0:
            d.add_heading(f"第{i // 10 + 1}节", level=2)
        d.add_paragraph(text)
    d.save(path)


def write_pdf(path: Path, pages: list[list[str]] | None, encrypt: str | None = None) -> None:
    """A PDF whose text layer is real (reportlab's built-in CID font STSong-Light, so
    no font file is needed); `pages=None` draws only shapes, like a scan without OCR."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    c = canvas.Canvas(str(path), pagesize=A4, encrypt=encrypt)
    c.setTitle("关于支持技术转移的若干政策")
    for number, lines in enumerate(pages or [[]], start=1):
        c.setFont("STSong-Light", 12)
        if pages is None:
            c.rect(50, 400, 400, 300, fill=1)
        for i, line in enumerate(lines):
            c.drawString(60, 780 - 22 * i, line)
        if pages is not None:
            c.drawString(290, 40, f"- {number} -")
        c.showPage()
    c.save()


def write_one_of_each(root: Path) -> Path:
    """One readable file of each supported format: .html, .docx, .pdf, .txt, .md."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "notice.html").write_bytes(HTML.encode("gbk"))
    write_docx(root / "incubator.docx")
    (root / "pdf").mkdir(exist_ok=True)
    write_pdf(root / "pdf" / "transfer.pdf", PDF_PAGES)
    (root / "ip-pledge-gbk.txt").write_bytes(GBK_TEXT.encode("gbk"))
    (root / "voucher-utf16.md").write_bytes(UTF16_TEXT.encode("utf-16"))
    return root


def write_corpus(root: Path) -> Path:
    """Every readable kind, and every kind of file that must be skipped."""
    write_one_of_each(root)
    (root / "taipei-big5.txt").write_bytes(BIG5_TEXT.encode("big5"))
    # What cannot be read:
    (root / "junk.txt").write_bytes(bytes(range(256)) * 4)
    (root / "empty.txt").write_bytes(b"")
    (root / "legacy.doc").write_bytes(b"\xd0\xcf\x11\xe0 old Word binary")
    write_pdf(root / "secret.pdf", PDF_PAGES, encrypt="password")
    write_pdf(root / "scan.pdf", None)
    with open(root / "huge.txt", "wb") as fh:  # sparse: costs no disk
        fh.truncate(21 * 1024 * 1024)
    return root


SKIPPED = {
    "junk.txt": "binary",
    "empty.txt": "empty",
    "legacy.doc": "unsupported file type .doc",
    "secret.pdf": "encrypted",
    "scan.pdf": "no text layer",
    "huge.txt": "larger than",
}


if __name__ == "__main__":
    write_one_of_each(Path(sys.argv[1]))
