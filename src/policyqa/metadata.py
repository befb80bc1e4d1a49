"""What a policy document says about itself: title, issuing authority (发文机关),
document number (文号) and date.

Owns: finding these in the text (labelled fields such as 发文机关：, the 文号 line under
the title, a law's adoption and amendment lines, the signature block of issuer and date
at the end, "自…起施行"), preferring what the file format states (HTML <meta>, page
date, Word/PDF title) where it is plausible. A law is dated by its latest amendment
(修正/修订), and a date in the file's name (促进科技成果转化法(2015-08-29).txt) counts
with those. Dates come out as YYYY-MM-DD; a field not found is None, never a guess from
an unrelated place such as a cited document's number.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath

from .records import Document, Meta

_HAN_DIGIT = {c: i for i, c in enumerate("〇一二三四五六七八九")} | {"零": 0, "○": 0, "О": 0, "O": 0}
_Y = r"(?:19|20)\d{2}|[〇○零一二三四五六七八九]{4}"
_MD = r"\d{1,2}|[一二三四五六七八九十]{1,3}"
DATE = re.compile(
    rf"(?P<y>{_Y})\s*年\s*(?P<m>{_MD})\s*月\s*(?P<d>{_MD})\s*日"
    r"|(?P<y2>(?:19|20)\d{2})\s*[-/.]\s*(?P<m2>\d{1,2})\s*[-/.]\s*(?P<d2>\d{1,2})(?!\d)"
)
# 成科字〔2015〕12号, 国办发[2020]4号, 工信部联企业〔2011〕300号
DOC_NUMBER = re.compile(
    r"(?P<org>[\u4e00-\u9fff]{1,12})\s*[〔\[［【（(﹝]\s*(?P<year>(?:19|20)\d{2})\s*[〕\]］】）)﹞]\s*第?\s*(?P<n>\d{1,5})\s*号"
)
_LABEL = r"\s*[:：]\s*"
_ISSUER_LABEL = re.compile(rf"(?:发文机关|发布机构|发文单位|制发机关|发布单位){_LABEL}(?P<v>[^\s|，,。；;]{{2,40}})")
_NUMBER_LABEL = re.compile(rf"(?:发文字号|文\s*号){_LABEL}")
_DATE_LABEL = re.compile(rf"(?:成文日期|发文日期|印发日期|发布日期|公布日期|发布时间){_LABEL}")
_EFFECTIVE = re.compile(rf"自\s*(?P<v>(?:{DATE.pattern}))\s*起(?:施行|实施|执行|生效)")
_PASSED = re.compile(
    rf"^\s*(?:{DATE.pattern})\s*(?P<by>\S+?)第[一二三四五六七八九十百\d]+次(?:全体)?会议(?:审议)?通过", re.MULTILINE
)
# "2015年8月29日 第十二届…会议《关于修改…的决定》修正": a date, then within its line and
# before any other year, the word of an amendment.
_AMENDED = re.compile(rf"(?:{DATE.pattern})(?:(?!(?:19|20)\d{{2}}\s*年)[^\n])*?(?:修正|修订)")
# The last word of an issuing body's name.
_AGENCY = re.compile(
    r"(?:人民政府|政府|委员会|常务委员会|办公厅|办公室|总局|局|厅|委|部|署|院|中心|办|处|室|银行|协会|联合会|指挥部|领导小组|小组)$"
)
_ISSUER_MAX = 40
TITLE_MAX_HINT = 100
# A document states its own number and a law its adoption and amendments in its first
# lines (title, 文号, one line per 通过/修正/修订); further down, numbers and dates are
# cited ones.
HEAD_LINES = 12
# A scraped notice can be a single line: past its opening sentences a 文号 is a cited one.
HEAD_CHARS = 600
# The signature block: several co-issuing bodies, a line each, then the date.
TAIL_LINES = 8


def describe(doc: Document) -> Meta:
    lines = [doc.text[s.start:s.end].strip() for s in doc.keep]
    head = "\n".join(lines[:HEAD_LINES])[:HEAD_CHARS]
    tail_lines = lines[-TAIL_LINES:]
    title = _title(doc)
    return Meta(
        title=title,
        issuer=_issuer(doc, lines, tail_lines, title),
        doc_number=_doc_number(head),
        date=_date(doc, lines, head, tail_lines),
    )


def _title(doc: Document) -> str:
    hint = (doc.hints.get("title") or "").strip()
    junk = (hint.lower().startswith(("microsoft word", "untitled", "wps"))
            or re.search(r"\.(docx?|pdf|wps)$", hint, re.I))
    if hint and not junk and len(hint) <= TITLE_MAX_HINT:
        return hint
    return doc.title


def iso_date(text: str) -> str | None:
    """The first date in `text` as YYYY-MM-DD, or None."""
    m = DATE.search(text)
    return _iso(m) if m else None


def _iso(m: re.Match) -> str | None:
    y, mo, d = ((m.group("y"), m.group("m"), m.group("d")) if m.group("y")
                else (m.group("y2"), m.group("m2"), m.group("d2")))
    year = int(y) if y.isdigit() else int("".join(str(_HAN_DIGIT.get(c, 0)) for c in y))
    month, day = _number(mo), _number(d)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def _number(text: str) -> int:
    if text.isdigit():
        return int(text)
    # 十 = 10, 十二 = 12, 二十 = 20, 二十五 = 25
    tens, _, ones = text.partition("十")
    if "十" not in text:
        return _HAN_DIGIT.get(text, 0)
    return (_HAN_DIGIT.get(tens, 0) if tens else 1) * 10 + (_HAN_DIGIT.get(ones, 0) if ones else 0)


def _doc_number(head: str) -> str | None:
    label = _NUMBER_LABEL.search(head)
    for m in DOC_NUMBER.finditer(head, label.end() if label else 0):
        before = head[:m.start()].rstrip()
        if before.endswith(("（", "(", "》", "《", "依据", "根据", "按照")):
            continue  # a cited document's number, not this one's
        org = m.group("org")
        # The organ prefix starts after the last word that belongs to the sentence before it.
        org = re.split(r"[的了和及与在按据照对为于发印]", org)[-1] if len(org) > 6 else org
        if not org:
            continue
        return f"{org}〔{m.group('year')}〕{m.group('n')}号"
    return None


def _date(doc: Document, lines: list[str], head: str, tail: list[str]) -> str | None:
    text = "\n".join(lines)
    label = _DATE_LABEL.search(text)
    if label:
        found = iso_date(text[label.end():label.end() + 30])
        if found:
            return found
    if doc.hints.get("date"):
        found = iso_date(doc.hints["date"])
        if found:
            return found
    version = _version_date(doc, head)
    if version:
        return version
    signed = _signature_date(tail)
    if signed:
        return signed
    effective = _EFFECTIVE.search(text)
    return iso_date(effective.group("v")) if effective else None


def _version_date(doc: Document, head: str) -> str | None:
    """The latest of a law's adoption and amendment dates and the date in the file's name."""
    passed = _PASSED.search(head)
    found = [iso_date(m.group()) for m in _AMENDED.finditer(head)]
    found += [iso_date(passed.group()) if passed else None, iso_date(PurePosixPath(doc.path).stem)]
    return max((d for d in found if d), default=None)


def _signature_date(tail: list[str]) -> str | None:
    """The date a document is signed with: a line of its own near the end, or the end
    of a one-line scraped document."""
    for line in reversed(tail):
        m = DATE.fullmatch(line.strip("（）() "))
        if m:
            return _iso(m)
    if tail:
        m = DATE.search(tail[-1][-40:])
        if m and not tail[-1][-40:][m.end():].strip("（）() "):
            return _iso(m)
    return None


def _issuer(doc: Document, lines: list[str], tail: list[str], title: str) -> str | None:
    text = "\n".join(lines)
    m = _ISSUER_LABEL.search(text)
    if m:
        return m.group("v")
    if doc.hints.get("issuer") and _is_agency(doc.hints["issuer"]):
        return doc.hints["issuer"]
    passed = _PASSED.search("\n".join(lines[:HEAD_LINES]))
    if passed:
        return passed.group("by")
    signed = _signature_issuer(tail)
    if signed:
        return signed
    m = re.match(r"^(.{2,30}?)关于", title)
    if m and _is_agency(m.group(1)):
        return m.group(1)
    return None


def _is_agency(name: str) -> bool:
    return 2 <= len(name) <= _ISSUER_MAX and _AGENCY.search(name) is not None and not re.search(r"[。，；：！？]", name)


def _signature_issuer(tail: list[str]) -> str | None:
    """The issuing bodies signed above (or before) the closing date."""
    for i in range(len(tail) - 1, -1, -1):
        line = tail[i]
        dates = list(DATE.finditer(line))
        if not dates:
            continue
        before = line[:dates[-1].start()].strip()
        if not before and i > 0:
            before = tail[i - 1]
        # One or more bodies separated by spaces, right before the date.
        names: list[str] = []
        for word in reversed(before.split()):
            if not _is_agency(word):
                break
            names.insert(0, word)
        if names:
            return " ".join(names)
        return None
    return None
