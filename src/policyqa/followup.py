"""Follow-up questions in a conversation.

Owns: deciding whether what was typed is a short follow-up to the current topic ("what
about debt financing?", "那贷款呢？", "how much is it?") rather than a new question, and the
query searched for it: the follow-up's own words with the topic question after them. The
topic is the last question that was not a follow-up, so a chain of follow-ups stays on it
instead of growing without end.
"""
from __future__ import annotations

import re

from .terms import mainly_chinese

# Openings that only make sense after an earlier question. Longest first.
_EN_LEAD = re.compile(
    r"^(?:and\s+)?(?:what|how)\s+about\s+|^and\s+(?:what\s+of\s+|also\s+)?|^what\s+of\s+|^also\s+|^same\s+for\s+",
    re.IGNORECASE,
)
# Words that point back at something named before.
_EN_REFERENCE = re.compile(r"\b(?:it|its|they|them|their|this|that|these|those)\b", re.IGNORECASE)
_ZH_LEAD = re.compile(r"^(?:那么|那|还有|另外|此外|而|以及|其中)")
_ZH_TAIL = re.compile(r"呢\s*[?？]?$")
_ZH_REFERENCE = re.compile(r"它|它们|其|这个|那个|这些|那些|这项|该项|上述")
_TRIM = " \t?？!！。.,，;；:：、"

EN_MAX_WORDS = 6  # "how much was it in total?" is a follow-up; longer ones stand alone
ZH_MAX_CHARS = 12


def follow_up_part(text: str) -> str | None:
    """The follow-up's own words when `text` is a short follow-up, else None."""
    text = text.strip()
    if not text:
        return None
    if mainly_chinese(text):
        if len(text) > ZH_MAX_CHARS:
            return None
        lead, tail = _ZH_LEAD.match(text), _ZH_TAIL.search(text)
        if not (lead or tail or _ZH_REFERENCE.search(text)):
            return None
        core = text[lead.end() if lead else 0:tail.start() if tail else len(text)]
        return core.strip(_TRIM) or None
    words = text.split()
    if len(words) > EN_MAX_WORDS:
        return None
    lead = _EN_LEAD.match(text)
    if lead:
        return text[lead.end():].strip(_TRIM) or None
    if _EN_REFERENCE.search(text):
        return text.strip(_TRIM)
    return None


class Topic:
    """The conversation's current topic and how each new question is searched."""

    def __init__(self) -> None:
        self.question: str | None = None

    def query_for(self, text: str) -> str | None:
        """The query to search for `text` when it differs from `text` (a follow-up), else
        None. The topic is not changed: see `answered`."""
        part = follow_up_part(text) if self.question else None
        if part is None:
            return None
        assert self.question, "a follow-up part is only looked for with a topic"
        # The follow-up's words first: on the seed corpus this ranks the passages about
        # them above those about the topic alone, where topic-first does not.
        if mainly_chinese(part):
            return f"{part}（{self.question.rstrip(_TRIM)}）"
        return f"{part} ({self.question.rstrip(_TRIM)})"

    def answered(self, text: str) -> None:
        """`text` was answered: unless it was a follow-up, it is the topic now. (Only then: a
        question the user cancelled does not become what the next follow-up is about.)"""
        if self.query_for(text) is None:
            self.question = text

    def clear(self) -> None:
        self.question = None
