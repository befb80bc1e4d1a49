"""A typed question, before it is searched (`ask` and chat).

Owns: what is refused (an empty question; text that is not valid Unicode, such as the
surrogates Python makes of bytes that were not UTF-8 in a command line or piped input) and
the cut to what is embedded and searched. Embedding time grows with the question's length
while the model reads only its first 512 tokens, so an unbounded question only costs time.
"""
from __future__ import annotations

from .errors import InputError

# The longest question of the dev sets (../shared) has 208 characters (dev_en.jsonl),
# and 500 Chinese characters about fill the model's 512-token window.
MAX_CHARS = 500


class QuestionError(InputError):
    """A question (or a typed line) that cannot be searched as given."""


def checked_text(text: str, what: str) -> str:
    """`text` when it can be written as UTF-8; QuestionError naming `what` otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QuestionError(f"{what} is not valid UTF-8 text") from None
    return text


def prepared(typed: str) -> tuple[str, str | None]:
    """The question to search (stripped, cut to MAX_CHARS) and the notice to show when it
    was cut; QuestionError when there is nothing to search."""
    text = checked_text(typed, "the question").strip()
    if not text:
        raise QuestionError("the question is empty")
    if len(text) <= MAX_CHARS:
        return text, None
    return text[:MAX_CHARS].rstrip(), (
        f"The question has {len(text):,} characters; only its first {MAX_CHARS} are searched."
    )
