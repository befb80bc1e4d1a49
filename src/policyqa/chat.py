"""The interactive session, `policyqa chat`.

Owns: the conversation state (topic, passages per answer, the passages shown so far), the
slash commands, and the input line (prompt-toolkit: persistent history, Ctrl-R search,
suggestions from history, slash-command completion). Questions are answered by
answer.ask and drawn by render exactly as `ask` draws them; the Searcher stays open, so
answers after the first are warm, and it picks up index generations committed by other
processes by itself. Searches run in a worker thread, so that Ctrl-C (which only the main
thread receives) cancels one at once, even while the engine is in C code.
"""
from __future__ import annotations

import os
import queue
import shlex
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import indexer
from .answer import ask
from .backend import IndexStore, Location, open_store
from .config import LLMSettings
from .context import passage_context
from .errors import InputError, user_error
from .followup import Topic
from .question import checked_text, prepared
from .records import Answer, Hit
from .render import BuildProgress, key_values, plain, print_answer, print_context, print_passages
from .search import Filter, Searcher, checked_filter

PROMPT = "policyqa> "
MAX_K = 50
FILTER_KEYS = ("doc", "after", "before", "issuer")
LEAVE = ("/quit", "/exit")
REINDEX_WAIT_S = 5.0  # a chat should not hang behind another process's long build
MAX_LINE_BYTES = 1 << 20  # of a piped line; the rest of a longer one is dropped


@dataclass(frozen=True)
class Command:
    usage: str
    help: str


COMMANDS = {
    "/help": Command("/help", "this list"),
    "/open": Command("/open N", "show citation N in its document, the passage highlighted"),
    "/more": Command("/more", "the next passages for the last question"),
    "/k": Command("/k N", "show N passages per answer"),
    "/filter": Command("/filter [doc=GLOB] [after=DATE] [before=DATE] [issuer=TEXT] | off",
                       "search only the documents that match (no argument: show the filter)"),
    "/docs": Command("/docs", "list the indexed documents"),
    "/status": Command("/status", "index, model and session settings"),
    "/reindex": Command("/reindex", "bring the index up to date with the corpus"),
    "/new": Command("/new", "start a new topic (the next question is not a follow-up)"),
    "/quit": Command("/quit", "leave (or Ctrl-D)"),
}


class UsageError(Exception):
    """A slash command used wrongly; the message says how to use it."""


T = TypeVar("T")


class SearchThread:
    """The thread that runs the session's searches, with a Searcher (and SQLite
    connection) of its own. The main thread waits for each search in short steps, so that
    Ctrl-C, which only the main thread receives, cancels the wait at once even while the
    search is in C code (the encoder, FAISS). A cancelled search cannot be stopped midway:
    it finishes here unseen, and the next one starts after it."""

    def __init__(self, index_dir: Location):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(index_dir,), name="search", daemon=True).start()

    def _serve(self, index_dir: Location) -> None:
        searcher = None
        while True:
            job, done = self._jobs.get()
            if not done.set_running_or_notify_cancel():
                continue
            try:
                searcher = searcher or Searcher(open_store(index_dir))
                done.set_result(job(searcher))
            except BaseException as exc:
                done.set_exception(exc)

    def run(self, job: Callable[[Searcher], T]) -> T:
        done: Future = Future()
        self._jobs.put((job, done))
        try:
            while True:
                try:
                    return done.result(timeout=0.05)
                except TimeoutError:
                    continue
        except KeyboardInterrupt:
            done.cancel()
            raise


def data_dir() -> Path:
    """Where chat keeps its history: $POLICYQA_HOME, else the user's data directory."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("POLICYQA_HOME") or user_data_dir("policyqa"))


class Chat:
    """One conversation over one index. `handle` takes a typed line and returns False
    when the user leaves."""

    def __init__(
        self, corpus: Path, index_dir: Location, store: IndexStore, console: Console, k: int = 5,
        where: Filter | None = None, llm: LLMSettings | None = None,
    ):
        self.corpus = corpus
        self.index_dir = index_dir
        self.store = store
        self.console = console
        self.k = k
        self.where = where
        self.search = SearchThread(index_dir)
        self.topic = Topic()
        self.query: str | None = None  # what was searched for the last question
        self.shown: list[Hit] = []  # passages shown for it, in rank order (citation n = shown[n-1])
        self.last_timings: dict[str, float] = {}
        self.history_path: Path | None = None
        self.llm = llm
        self.turns: list = []  # generate.Turn: the written answers of this topic, sent with follow-ups
        self.commands: dict[str, Callable[[str], bool | None]] = {
            "/help": self.help, "/open": self.open, "/more": self.more, "/k": self.set_k, "/filter": self.filter,
            "/docs": self.docs, "/status": self.status, "/reindex": self.reindex, "/new": self.new,
            **{name: lambda arg: False for name in LEAVE},
        }

    # ---- lines ------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        line = line.strip()
        if not line:
            return True
        checked_text(line, "that line")
        if not line.startswith("/"):
            self.ask(line)
            return True
        name, _, arg = line.partition(" ")
        command = self.commands.get(name.lower())
        if command is None:
            raise UsageError(f"unknown command {name}; /help lists the commands")
        return command(arg.strip()) is not False

    def ask(self, typed: str) -> None:
        question, notice = prepared(typed)
        if notice:
            self.console.print(Text(notice, style="yellow"))
        searched = self.topic.query_for(question)
        k, where = self.k, self.where
        answer = self.search.run(lambda searcher: ask(searcher, question, k, searched=searched, where=where))
        self.topic.answered(question)
        self.query = searched or question
        self.shown = list(answer.hits)
        self.last_timings = answer.timings_ms
        print_answer(self.console, answer, heading=self.write(answer), recap=True)  # passages scroll it away

    def write(self, answer: Answer) -> str | None:
        """The written answer, streamed, when a model server is configured; the heading
        for the extractive answer below it."""
        if not self.llm or not answer.found:
            return None
        from .generate import Turn, respond
        from .render import show_written

        llm, turns = self.llm, self.turns
        encoder = self.search.run(lambda searcher: searcher.encoder)
        generated, heading = show_written(
            self.console, self.console, llm.model,
            lambda on_text, on_sentence: respond(llm, answer, encoder, turns, on_text, on_sentence))
        if generated is not None:
            self.turns.append(Turn(answer.question, generated.text))
        return heading

    # ---- commands ---------------------------------------------------------------------
    def help(self, arg: str) -> None:
        table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
        for c in COMMANDS.values():
            table.add_row(Text(c.usage, "bold"), c.help)
        self.console.print(table)
        self.console.print(Text(
            "Anything else is a question. A short follow-up (\"what about debt financing?\", "
            "\"那贷款呢？\") is searched together with the previous question. "
            "Ctrl-R searches your history, Ctrl-C cancels, Ctrl-D leaves.",
            style="dim",
        ))

    def open(self, arg: str) -> None:
        if not self.shown:
            raise UsageError("ask a question first; /open N then shows its citation N")
        n = _number(arg, "/open N", 1, len(self.shown))
        hit = self.shown[n - 1]
        print_context(self.console, n, hit, passage_context(self.store, self.corpus, hit))

    def more(self, arg: str) -> None:
        if self.query is None:
            raise UsageError("ask a question first; /more then shows its next passages")
        query, k, offset, where = self.query, self.k, len(self.shown), self.where
        hits = self.search.run(lambda searcher: searcher.search(query, k, offset=offset, where=where)).hits
        if not hits:
            self.console.print(Text("No more passages for this question.", style="yellow"))
            return
        first = len(self.shown) + 1
        self.shown += hits
        print_passages(self.console, Answer(question=self.query, found=True, sentences=[], hits=hits), first=first)

    def set_k(self, arg: str) -> None:
        if arg:
            self.k = _number(arg, "/k N", 1, MAX_K)
        self.console.print(f"{self.k} passages per answer.")

    def filter(self, arg: str) -> None:
        if arg.lower() == "off":
            self.where = None
        elif arg:
            bounds = {}
            try:
                parts = shlex.split(arg)
            except ValueError as exc:
                raise UsageError(f"{COMMANDS['/filter'].usage}: {exc}") from None
            for part in parts:
                key, sep, value = part.partition("=")
                if not sep or key not in FILTER_KEYS or not value:
                    raise UsageError(f"{COMMANDS['/filter'].usage}: cannot read {part!r}")
                bounds[key] = value
            self.where = checked_filter(self.store, **bounds)
        self.console.print(plain(f"Filter: {describe_filter(self.where)}."))

    def docs(self, arg: str) -> None:
        table = Table(box=None, padding=(0, 2, 0, 0), header_style="bold")
        table.add_column("document", overflow="fold")
        table.add_column("chunks", justify="right")
        table.add_column("title", overflow="fold")
        documents = self.store.documents()
        for d in documents:
            table.add_row(plain(d.doc), str(d.chunks), plain(d.title))
        self.console.print(table)
        self.console.print(Text(f"{len(documents)} documents.", style="dim"))

    def status(self, arg: str) -> None:
        meta = self.store.meta()
        documents, chunks = self.store.counts()
        rows = [
            ("corpus", str(self.corpus)),
            ("index", f"{self.index_dir} (generation {self.store.generation()}, built {meta.get('built_at', '?')})"),
            ("documents", str(documents)),
            ("chunks", str(chunks)),
            ("model", meta.get("model", "?")),
            ("passages", f"{self.k} per answer"),
            ("filter", describe_filter(self.where)),
            ("topic", self.topic.question or "none"),
            ("model server", f"{self.llm.url} ({self.llm.model or 'first listed'})" if self.llm else "none"),
        ]
        if self.last_timings:
            rows.append(("last answer", " ".join(f"{k}={v}" for k, v in self.last_timings.items())))
        if self.history_path:
            rows.append(("history", str(self.history_path)))
        self.console.print(key_values(rows))

    def reindex(self, arg: str) -> None:
        with BuildProgress(self.console) as progress:
            report = indexer.update(self.corpus, self.index_dir, progress=progress, writer_wait_s=REINDEX_WAIT_S)
        self.console.print(plain(f"Index updated: {report.summary()}."))

    def new(self, arg: str) -> None:
        self.topic.clear()
        self.turns = []
        self.query = None
        self.shown = []
        self.console.print(Text("New topic.", style="dim"))

    def banner(self) -> None:
        documents, chunks = self.store.counts()
        model = self.store.meta().get("model", "?")
        self.console.print(Text.assemble(
            ("policyqa chat", "bold"), " · ", plain(str(self.corpus)), " · ",
            f"{documents} documents, {chunks} chunks · ", plain(model),
        ))
        if self.where:
            self.console.print(plain(f"Filter: {describe_filter(self.where)}.", "dim"))
        self.console.print(Text("Ask a question in Chinese or English. /help lists commands; Ctrl-D leaves.",
                                style="dim"))


def describe_filter(where: Filter | None) -> str:
    if not where:
        return "none (all documents)"
    return " ".join(f"{key}={getattr(where, key)}" for key in FILTER_KEYS if getattr(where, key))


def _number(arg: str, usage: str, low: int, high: int) -> int:
    try:
        n = int(arg)
    except ValueError:
        raise UsageError(f"usage: {usage} (a number from {low} to {high})") from None
    if not low <= n <= high:
        raise UsageError(f"{usage}: N must be from {low} to {high}")
    return n


def _session(history_path: Path | None):
    from prompt_toolkit import PromptSession, search
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.completion import Completer, Completion
    from prompt_toolkit.filters import is_searching
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    class SlashCommands(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if text.startswith("/") and " " not in text:
                for name, c in COMMANDS.items():
                    if name.startswith(text.lower()):
                        yield Completion(name, start_position=-len(text), display=c.usage, display_meta=c.help)

    class History(FileHistory):
        def append_string(self, string: str) -> None:
            # Up after a restart should bring back the last question, not the way out.
            if string.strip().lower() not in LEAVE:
                super().append_string(string)

    keys = KeyBindings()

    @keys.add("enter", filter=is_searching)
    def _(event) -> None:
        # As in readline: Enter in a Ctrl-R search runs the line found, not just selects it.
        search.accept_search()
        event.app.current_buffer.validate_and_handle()

    history = History(str(history_path)) if history_path else InMemoryHistory()
    return PromptSession(
        key_bindings=keys,
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=SlashCommands(),
        complete_while_typing=True,
        enable_history_search=False,  # Up walks the history; Ctrl-R searches it
    )


def _history_file(console: Console) -> Path | None:
    path = data_dir() / "history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as exc:
        console.print(plain(f"warning: history is not kept ({exc.strerror or exc}: {path})", "yellow"))
        return None
    return path


def lines_from_terminal(chat: Chat) -> Iterable[str]:
    chat.history_path = _history_file(chat.console)
    session = _session(chat.history_path)
    while True:
        try:
            yield session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue  # Ctrl-C clears the line and keeps the session
        except EOFError:
            return


def lines_from_pipe(stream) -> Iterable[str]:
    """Lines of piped input, each read up to MAX_LINE_BYTES (input without line breaks,
    such as /dev/zero, must not fill the memory). Bytes that are not UTF-8 are kept as
    surrogates, so that the line is refused with a message rather than ending the session."""
    rest_of_long_line = False
    while line := stream.readline(MAX_LINE_BYTES):
        ends = line.endswith(b"\n")
        if not rest_of_long_line:
            yield line.decode("utf-8", errors="surrogateescape")
        rest_of_long_line = not ends


def run(chat: Chat, lines: Iterable[str], debug: bool = False) -> None:
    """Answer line after line until the user leaves. A failed command or question is
    reported in one line and the session goes on."""
    for line in lines:
        try:
            if not chat.handle(line):
                return
        except KeyboardInterrupt:
            chat.console.print(Text("Cancelled.", style="yellow"))
        except (UsageError, InputError) as exc:  # the user can fix it: said, not an error
            chat.console.print(plain(str(exc), "yellow"))
        except Exception as exc:
            if debug:
                traceback.print_exc()
            known = user_error(exc)
            message = str(known) if known else f"unexpected error: {type(exc).__name__}: {exc}"
            first_line = message.strip().splitlines()[0] if message.strip() else "error"
            chat.console.print(plain(f"error: {first_line}", "red"))


def main(corpus: Path, index_dir: Location, store: IndexStore, k: int, where: Filter | None, debug: bool,
         llm: LLMSettings | None = None) -> None:
    console = Console(highlight=False)
    chat = Chat(corpus, index_dir, store, console, k, where, llm)
    chat.banner()
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    lines = lines_from_terminal(chat) if interactive else lines_from_pipe(sys.stdin.buffer)
    run(chat, lines, debug)
