"""Showing answers, passages and progress in the terminal, and answers as JSON.

Owns: everything that reaches stdout/stderr from documents. Document text is untrusted:
it is built into rich `Text` objects (never parsed as markup) after control characters
and escape sequences are made visible, so nothing in a file can style, link or move the
terminal.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .records import Answer, Hit, Meta

if TYPE_CHECKING:
    from rich.live import Live
    from rich.progress import TaskID

    from .context import Context
    from .evaluate import Report
    from .generate import Checked, Generated

# What must not reach a terminal as itself: C0/C1 controls, DEL, lone surrogates (bytes
# that were not UTF-8, e.g. in a file name), and Unicode's invisible format characters --
# zero-width spaces and joiners, the BOM, bidirectional marks, embeddings, overrides and
# isolates (which reorder what the reader sees), line and paragraph separators, tags.
# The format characters are Unicode 14's Cf, Zl and Zp (tests/test_render.py checks).
_INVISIBLE = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE_LINE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_INVISIBLE}]")
_UNSAFE_TEXT = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\ud800-\\udfff{_INVISIBLE}]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(text: str, lines: bool = False) -> str:
    """Untrusted text with every control and invisible character shown as a visible escape
    (`\\x1b`, `\\u200b`). A name, path or message stays on one line (newlines and tabs are
    escaped too, so a file name cannot forge a line of output); `lines=True` keeps the
    newlines and tabs of document text."""
    return (_UNSAFE_TEXT if lines else _UNSAFE_LINE).sub(_escape, text)


def plain(text: str, style: str = "", lines: bool = False) -> Text:
    return Text(safe(text, lines), style=style)


def meta_fields(meta: Meta | None) -> list[str]:
    """Issuer, document number and date, those that are known."""
    return [v for v in (meta.issuer, meta.doc_number, meta.date) if v] if meta else []


def cited(n: int, hit: Hit, *body: RenderableType) -> Table:
    """Citation n: its title, issuer/number/date and whereabouts, then `body`, all with a
    hanging indent so that wrapped lines stay readable at 80 columns."""
    about = meta_fields(hit.meta)
    details = [hit.doc]
    if hit.page is not None:
        details.append(f"p. {hit.page}")
    if hit.section:
        details.append(hit.section)
    details.append(f"chars {hit.start}–{hit.end}")
    details.append(f"score {hit.score:.3f}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    head = [plain(hit.title, "bold")] + ([plain(" · ".join(about))] if about else [])
    grid.add_row(Text(f"[{n}]", "bold cyan"), Group(*head, plain(" · ".join(details), "dim"), *body))
    return grid


def passage_text(hit: Hit, highlights: list[tuple[int, int]]) -> Text:
    """The passage with the answering sentence(s) highlighted."""
    n = len(hit.text)
    spans = [(max(0, start - hit.start), min(n, end - hit.start)) for start, end in highlights]
    cuts = sorted({0, n, *(x for span in spans for x in span if 0 <= x <= n)})
    # Styled piece by piece: an escape is longer than the character it shows, so styling
    # the escaped text by the passage's offsets would mark the wrong characters.
    body = Text()
    for a, b in zip(cuts, cuts[1:]):
        lit = any(start <= a and b <= end for start, end in spans)
        body.append(safe(hit.text[a:b], lines=True), "bold yellow" if lit else "")
    return body


def print_passages(console: Console, answer: Answer, first: int = 1, explain: bool = False) -> None:
    """Passages numbered from `first` (chat's /more continues the numbering)."""
    for n, hit in enumerate(answer.hits, start=1):
        marks = [(s.start, s.end) for s in answer.sentences if s.citation == n]
        scores = [Text("  ".join(f"{k}={v:.3f}" for k, v in hit.scores.items()), style="dim")] if explain else []
        console.print(cited(first + n - 1, hit, *scores, passage_text(hit, marks)))
        console.print()


def answer_text(answer: Answer, one_line: bool = False) -> Text:
    """The answer sentences, each followed by its citation; `one_line` joins a sentence's
    lines (a list's items) with spaces."""
    text = Text()
    for s in answer.sentences:
        text.append(safe(" ".join(s.text.split())) if one_line else safe(s.text, lines=True))
        text.append(f" [{s.citation}]", style="bold cyan")
        text.append(" ")
    return text


def print_recap(console: Console, answer: Answer) -> None:
    """The answer again in one line, under the passages: where the eye is when they have
    scrolled it away."""
    if not answer.found:
        return
    line = Text("answer: ", style="bold") + answer_text(answer, one_line=True)
    line.truncate(max(20, console.width - 1), overflow="ellipsis")
    console.print(line, no_wrap=True, overflow="ellipsis")


def print_answer(console: Console, answer: Answer, explain: bool = False, heading: str | None = None,
                 recap: bool = False) -> None:
    """The answer, then its passages. `heading`: a line above the extractive answer (when
    a written one came first); `recap`: the answer once more, in a line under them."""
    if heading and answer.found:
        console.print(Text(heading, style="dim"))
    if answer.searched and answer.searched != answer.question:
        console.print(Text.assemble(("searched: ", "dim"), (safe(answer.searched), "dim italic")))
    if not answer.found:
        top = answer.hits[0] if answer.hits else None
        best = f" (closest passage: similarity {top.scores.get('dense', top.score):.2f})" if top else ""
        console.print(Text(f"Nothing in the corpus answers this well enough{best}.", style="yellow"))
        console.print(Text("Try naming the policy, programme or body you mean.", style="dim"))
        return
    console.print(answer_text(answer))
    console.print()
    print_passages(console, answer, explain=explain)
    if recap:
        print_recap(console, answer)


def print_context(console: Console, n: int, hit: Hit, context: Context) -> None:
    """Citation n in its document: the passage, marked by a bar in the margin (visible
    without colour) and highlighted, between the dimmed text around it."""
    marked = Table.grid(padding=(0, 1))
    marked.add_column(no_wrap=True, style="bold yellow")
    marked.add_column(overflow="fold")
    marked.add_row("┃", plain(context.passage, "bold", lines=True))
    parts: list[RenderableType] = [plain(context.note, "dim" if context.from_file else "yellow"), Text()]
    if context.before.strip():
        parts.append(plain(("…" if context.cut_before else "") + context.before.strip("\n"), "dim", lines=True))
    parts.append(marked)
    if context.after.strip():
        parts.append(plain(context.after.strip("\n") + ("…" if context.cut_after else ""), "dim", lines=True))
    console.print(cited(n, hit, *parts))
    console.print()


def key_values(rows: list[tuple[str, str]]) -> Table:
    """A two-column table of labels and untrusted values."""
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # paths are shown whole, folded if need be
    for key, value in rows:
        table.add_row(key, plain(value))
    return table


def answer_json(answer: Answer, generated: Generated | None = None) -> dict:
    return {
        "question": answer.question,
        "found": answer.found,
        "answer": [{"text": s.text, "citation": s.citation, "start": s.start, "end": s.end} for s in answer.sentences],
        "passages": [
            {
                "rank": n,
                "citation": n,
                "doc": h.doc,
                "title": h.title,
                "section": h.section,
                "page": h.page,
                "meta": (h.meta or Meta(h.title)).as_dict(),
                "start": h.start,
                "end": h.end,
                "text": h.text,
                "score": round(h.score, 4),
                "scores": {k: round(v, 4) for k, v in h.scores.items()},
            }
            for n, h in enumerate(answer.hits, start=1)
        ],
        "timings_ms": answer.timings_ms,
        "generated": generated.as_json() if generated else None,
    }


def print_eval_report(console: Console, report: Report) -> None:
    """`policyqa eval`'s tables: retrieval, then answers, overall and per language; the
    unanswerable questions wrongly answered; then the worst misses."""
    answerable = sum(o.question.doc is not None for o in report.outcomes)
    mrr = f"mrr@{report.k}"
    retrieval = Table(title=f"retrieval over {answerable} answerable questions (top {report.k})")
    for col in ("questions", "n", "doc hit@1", "doc hit@5", "span hit@5", mrr, "mean ms", "p95 ms"):
        retrieval.add_column(col, justify="left" if col == "questions" else "right")
    answers = Table(title="answers: answer_hit, answer_overlap, mean answer length (gold text, NFKC)")
    for col in ("questions", "n", "found", "passages hold it", "answer hit", "overlap", "chars"):
        answers.add_column(col, justify="left" if col == "questions" else "right")

    def share(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [("all", report.metrics())] + [(lang, report.metrics(lang)) for lang in report.languages()]
    for name, m in rows:
        if not m["n"]:
            continue
        retrieval.add_row(name, str(m["n"]), f"{m['doc_hit@1']:.3f}", f"{m['doc_hit@5']:.3f}",
                          share(m["span_hit@5"]), f"{m[mrr]:.3f}", f"{m['latency_ms']['mean']:.0f}",
                          f"{m['latency_ms']['p95']:.0f}")
        answers.add_row(name, str(m["n"]), share(m["found"]), share(m["passage_answer@5"]), share(m["answer_hit"]),
                        share(m["answer_overlap"]), share(m["answer_chars"], 0))
    if answerable:
        console.print(retrieval)
        console.print(answers)
    if report.unanswerable()["n"]:
        wrong = Table(title="questions the corpus does not answer")
        for col in ("questions", "n", "wrongly answered"):
            wrong.add_column(col, justify="left" if col == "questions" else "right")
        for name, m in [("all", report.unanswerable())] + [(lang, report.unanswerable(lang))
                                                            for lang in report.languages()]:
            if m["n"]:
                wrong.add_row(name, str(m["n"]), share(m["wrongly_answered"]))
        console.print(wrong)
    misses = report.misses()
    if not misses:
        return
    worst = Table(title="worst misses (gold document not in the top 5)")
    for col in ("question", "gold document", "rank", "ranked first"):
        worst.add_column(col)
    for o in misses:
        assert o.question.doc is not None, "misses() are of questions with a gold document"
        worst.add_row(plain(o.question.question), plain(o.question.doc), "-" if o.rank is None else str(o.rank),
                      plain(f"{o.top.title} ({o.top.doc})") if o.top else "-")
    console.print(worst)
EXTRACTIVE_HEADING = "From the passages (quoted):"


def checked_text(sentence: Checked) -> Text:
    """A written sentence, its check visible without colour: ✓, or ⚠ and the reason."""
    if sentence.verified:
        return Text.assemble((safe(sentence.text), ""), (" ✓", "green"))
    return Text.assemble((safe(sentence.text), "yellow"), (f" ⚠ unverified: {safe(sentence.why or '')}", "dim yellow"))


def failure_line(reason: str) -> Text:
    return plain(f"No written answer: {reason}. The answer below is quoted from the passages.", "yellow")


class WrittenView:
    """The written answer as it streams. In a terminal the text appears token by token
    and each sentence is redrawn with its check when it completes; otherwise each
    sentence is printed once checked. Nothing is drawn until the first text arrives (a
    server that fails at once leaves no empty heading). Model output is untrusted: it is
    shown through safe()."""

    def __init__(self, console: Console, model: str | None):
        self.console = console
        self.heading = Text(f"Written by {safe(model or 'the model server')}, each sentence checked against "
                            "its passages:", style="dim")
        self.done: list[Checked] = []
        self.pending = ""
        self.started = False
        self.live: Live | None = None

    def __enter__(self) -> WrittenView:
        return self

    def _start(self) -> None:
        self.started = True
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
            self.live.start()
        else:
            self.console.print(self.heading)

    def _render(self) -> Text:
        body = Text()
        for s in self.done:
            body.append_text(checked_text(s))
            body.append(" ")
        body.append(safe(self.pending), style="dim")
        return Text.assemble(self.heading, "\n", body)

    def text(self, piece: str) -> None:
        if not self.started:
            self._start()
        self.pending += piece
        if self.live:
            self.live.update(self._render(), refresh=True)

    def sentence(self, checked: Checked) -> None:
        if not self.started:
            self._start()
        self.done.append(checked)
        # The text the splitter has not cut yet stays pending: what follows this sentence.
        at = self.pending.find(checked.text)
        self.pending = self.pending[at + len(checked.text):] if at >= 0 else ""
        if self.live:
            self.live.update(self._render(), refresh=True)
        else:
            self.console.print(checked_text(checked))

    def __exit__(self, *exc) -> None:
        if not self.started:
            return
        self.pending = ""
        if self.live:
            self.live.update(self._render(), refresh=True)
            self.live.stop()
        self.console.print()

    def finish(self, generated: Generated | None) -> None:
        """A line when the user stopped the stream or the model wrote no sentence."""
        if generated is not None and generated.stopped:
            self.console.print(Text("Stopped; the sentences above are what was written.", style="yellow"))
        elif generated is not None and not generated.sentences:
            self.console.print(Text("The model wrote no sentence.", style="yellow"))


def show_written(console: Console, failures: Console, model: str | None,
                 run: Callable[[Callable[[str], None] | None, Callable[[Checked], None] | None],
                               tuple[Generated | None, str | None]],
                 live: bool = True) -> tuple[Generated | None, str]:
    """Stream a written answer: `run(on_text, on_sentence)` is generate.respond bound to its
    question (both callbacks None when not `live`, e.g. for --json). A failure is one line
    on `failures`. Returns what was written and the heading for the quoted answer below it."""
    with WrittenView(console, model) as view:
        generated, failure = run(view.text, view.sentence) if live else run(None, None)
    if failure:
        failures.print(failure_line(failure), soft_wrap=True)
    elif live:
        view.finish(generated)
    return generated, EXTRACTIVE_HEADING


class BuildProgress:
    """Indexing progress on stderr: a bar for reading files, then one for embedding."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.bar = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None  # the bar of the step under way

    def __enter__(self) -> BuildProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def reading(self, total_files: int) -> None:
        self.task = self.bar.add_task("files", total=total_files)

    def read_one(self, path: str) -> None:
        assert self.task is not None, "reading() comes first"
        self.bar.advance(self.task)

    def embedding(self, total_chunks: int) -> None:
        self.task = self.bar.add_task("chunks", total=total_chunks)

    def embedded(self, n: int) -> None:
        assert self.task is not None, "embedding() comes first"
        self.bar.advance(self.task, n)

    def warn(self, message: str) -> None:
        # One line per warning, however narrow the terminal: a list users can grep.
        self.bar.console.print(Text("warning: " + safe(message), style="yellow"), soft_wrap=True)

    def note(self, message: str) -> None:
        self.bar.console.print(plain(message, "dim"))
