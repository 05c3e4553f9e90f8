"""The docs cannot drift from the code.

Every ``skinbatch …`` command line in the Markdown docs is parsed by the real command's click parser, and
the exit-code and dead-letter tables, and the exit codes stated in prose, are compared with
``skinbatch.contract``.

How a command line is found (``doc_commands``):

* in fenced code blocks of a shell language (``sh``, ``bash``, ``shell``, ``console`` or none) and in
  inline code spans, which may run over lines; backslash-continued lines are joined;
* the shell line is cut into simple commands at ``|``, ``&&``, ``||``, ``;``, ``&`` and parentheses;
  redirections (with their target) and ``#`` comments are dropped;
* a simple command is skinbatch's when its first word, after ``VAR=value`` assignments and ``sudo``,
  ``env``, ``time``, ``exec``, is ``skinbatch`` (or a path ending in ``/skinbatch``, or ``python -m
  skinbatch``). After a launcher (``dc``, ``docker``, ``kubectl``, ``podman``: ``dc exec consumer
  skinbatch status``), ``skinbatch`` counts where ``--`` precedes it or a sub-command follows it.

How it is read (``check_command``):

* synopsis notation: brackets around optional parts (``[--maps]``) are dropped; ``<uid>``, ``$VAR``,
  ``…`` and ``...`` stand for values; a bare ``…`` is "and more" and is dropped where no option takes it;
* each level (``skinbatch``, ``localstack``, ``localstack kafka``) is read by its own click parser
  (``Command.make_parser``): an unknown option, an option without its value, an extra argument or an
  unknown sub-command fails, naming the file and line;
* values are converted only by types whose conversion is pure: choices and numbers. A placeholder passes
  (and an upper-case metavar such as ``N`` for a number). Paths and files are not checked (the docs' paths
  do not exist here), and neither callbacks (they read secret files) nor environment variables run;
* missing required options and arguments pass: many lines show part of a command;
* an option that is hidden or deprecated (an old spelling kept as an alias) fails: the docs show the names
  ``--help`` shows. So does a ``SKINBATCH_*`` variable that no option reads and no module names.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click
import pytest

from skinbatch.cli import cli
from skinbatch.contract import ErrorType, ExitCode

ROOT = Path(__file__).resolve().parents[2]

SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console", "zsh"}
WRAPPERS = {"sudo", "env", "time", "exec", "nohup", "command"}
LAUNCHERS = {"dc", "docker", "kubectl", "podman"}
SEPARATORS = {"|", "||", "|&", "&", "&&", ";", ";;", "(", ")"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = re.compile(r"(\S*/)?python(3(\.\d+)?)?")
ELLIPSES = {"…", "..."}
ANGLE_PLACEHOLDER = re.compile(r"<([A-Za-z][\w.-]*(?: [\w.-]+)*)>")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def doc_files() -> list[Path]:
    """README.md, docs/*.md and the READMEs beside the code."""
    files = {ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md"), *ROOT.glob("*/*/README.md")}
    return sorted(p for p in files
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


# -- Markdown -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """A piece of code in a doc: a logical line of a shell block, or an inline code span."""

    where: str
    line: int
    text: str


@dataclass(frozen=True)
class Markdown:
    path: Path
    prose: list[str]
    """The lines, with fenced blocks blanked (line numbers stay)."""
    shell_lines: list[Snippet]


@cache
def markdown(path: Path) -> Markdown:
    lines = path.read_text(encoding="utf-8").splitlines()
    prose: list[str] = []
    shell: list[Snippet] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        prose.append("")
        block: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*", lines[i]):
            block.append((i + 1, lines[i]))
            prose.append("")
            i += 1
        prose.append("")  # the closing fence
        i += 1
        if language in SHELL_LANGUAGES:
            shell.extend(_logical_lines(rel(path), block, console=language == "console"))
    return Markdown(path, prose, shell)


def _logical_lines(where: str, block: list[tuple[int, str]], console: bool) -> Iterator[Snippet]:
    start, parts = 0, list[str]()
    for number, line in block:
        if not parts:
            start = number
            if console:
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield Snippet(where, start, " ".join(parts))
        parts = []
    if parts:
        yield Snippet(where, start, " ".join(parts))


def code_spans(doc: Markdown) -> Iterator[Snippet]:
    """Inline code spans of the prose, per paragraph (a span does not cross a blank line)."""
    paragraph: list[tuple[int, str]] = []
    for number, line in enumerate([*doc.prose, ""], start=1):
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            text = "\n".join(text for _, text in paragraph)
            for span in CODE_SPAN.finditer(text):
                line_number = paragraph[0][0] + text.count("\n", 0, span.start(2))
                yield Snippet(rel(doc.path), line_number, " ".join(span.group(2).split("\n")))
        paragraph = []


# -- shell --------------------------------------------------------------------------------------------------


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line (see the module's docstring)."""
    text = ANGLE_PLACEHOLDER.sub(lambda m: "⟨" + m.group(1).replace(" ", "_") + "⟩", text)
    text = re.sub(r"(?<![^\s])\d+(?=[<>])", "", text)  # 2>/dev/null: the descriptor goes with the operator
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:  # an unbalanced quote: prose in a code span, not a command
        return []
    commands: list[list[str]] = [[]]
    skip_target = False
    for word in words:
        if word.startswith("#"):
            break
        if skip_target:
            skip_target = False
            continue
        if word in SEPARATORS:
            commands.append([])
        elif word[0] in "<>" or word in {"&>", "&>>"}:
            skip_target = True
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def skinbatch_args(words: list[str]) -> list[str] | None:
    """The arguments after ``skinbatch`` when ``words`` run it, else None."""
    i = 0
    while i < len(words) and (ENV_ASSIGNMENT.match(words[i]) or words[i] in WRAPPERS):
        i += 1
    if i == len(words):
        return None
    first = words[i]
    if first == "skinbatch" or first.endswith("/skinbatch"):
        return words[i + 1:]
    if PYTHON.fullmatch(first) and words[i + 1:i + 3] in (["-m", "skinbatch"], ["-m", "skinbatch.cli"]):
        return words[i + 3:]
    if first in LAUNCHERS:
        for j in range(i + 1, len(words)):
            if words[j] == "skinbatch" or words[j].endswith("/skinbatch"):
                after = words[j + 1:j + 2]
                if words[j - 1] == "--" or (after and after[0] in _command_names()):
                    return words[j + 1:]
    return None


@cache
def _command_names() -> frozenset[str]:
    return frozenset(cli.list_commands(click.Context(cli)))


@dataclass(frozen=True)
class DocCommand:
    where: str
    line: int
    text: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: skinbatch {' '.join(self.args)}"


def _unbracket(word: str) -> str:
    """``[--maps]`` → ``--maps``, ``[--metrics-url`` → ``--metrics-url``; balanced brackets stay."""
    while word.startswith("[") and word.count("[") > word.count("]"):
        word = word[1:]
    while word.endswith("]") and word.count("]") > word.count("["):
        word = word[:-1]
    if word.startswith("[") and word.endswith("]"):
        word = word[1:-1]
    return word


def doc_commands() -> list[DocCommand]:
    found: list[DocCommand] = []
    for path in doc_files():
        doc = markdown(path)
        for snippet in [*doc.shell_lines, *code_spans(doc)]:
            for words in simple_commands(snippet.text):
                args = skinbatch_args(words)
                if args is not None:
                    args = [w for w in map(_unbracket, args) if w]
                    found.append(DocCommand(snippet.where, snippet.line, snippet.text, tuple(args)))
    return found


# -- click --------------------------------------------------------------------------------------------------


def _is_placeholder(value: str, param: click.Parameter) -> bool:
    if any(mark in value for mark in ("…", "...", "⟨")) or value.startswith("$"):
        return True
    # An upper-case metavar (`--count N`) for anything but a choice, which may have upper-case values.
    return not isinstance(param.type, click.Choice) and re.fullmatch(r"[A-Z][A-Z0-9_]*", value) is not None


PURE_TYPES = (click.Choice, click.types.IntParamType, click.types.FloatParamType, click.types.BoolParamType)


def _values(raw: object) -> list[object]:
    if isinstance(raw, (list, tuple)):
        return [v for item in raw for v in _values(item)]
    return [raw]


def check_command(args: list[str] | tuple[str, ...]) -> list[str]:
    """What is wrong with ``skinbatch ARGS``, read by click's parsers without running anything."""
    command: click.Command = cli
    name, parent = "skinbatch", None
    words = list(args)
    problems: list[str] = []
    while True:
        ctx = command.context_class(command, info_name=name, parent=parent, **command.context_settings)
        params = command.get_params(ctx)
        takes_value = {opt for p in params if isinstance(p, click.Option) and not (p.is_flag or p.count)
                       for opt in p.opts}
        if not isinstance(command, click.Group):  # a group stops at its sub-command's name
            words = [w for k, w in enumerate(words)
                     if w not in ELLIPSES or (k > 0 and words[k - 1] in takes_value)]
        try:
            opts, rest, order = command.make_parser(ctx).parse_args(args=words)
        except click.UsageError as exc:
            return [*problems, f"`{ctx.command_path}`: {exc.format_message()}"]
        for param in dict.fromkeys(order):
            if isinstance(param, click.Option) and (param.hidden or getattr(param, "deprecated", False)):
                problems.append(f"`{ctx.command_path}`: {'/'.join(param.opts)} is hidden or deprecated (an old "
                                "spelling): use the name `--help` shows")
        for param in params:
            if param.name not in opts or not isinstance(param.type, PURE_TYPES):
                continue
            if isinstance(param, click.Option) and (param.is_flag or param.count):
                continue
            for value in _values(opts[param.name]):
                if not isinstance(value, str) or _is_placeholder(value, param):
                    continue
                try:
                    param.type(value, param, ctx)
                except click.BadParameter as exc:
                    problems.append(f"`{ctx.command_path}` {param.get_error_hint(ctx)}: {exc.format_message()}")
        if not isinstance(command, click.Group):
            if rest and not ctx.allow_extra_args:
                problems.append(f"`{ctx.command_path}`: unexpected extra arguments {rest}")
            return problems
        if not rest or rest[0] in ELLIPSES:
            return problems
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            return [*problems, f"`{ctx.command_path}`: no such command {rest[0]!r}"]
        if getattr(sub, "deprecated", False) or sub.hidden:
            problems.append(f"`{ctx.command_path} {rest[0]}` is hidden or deprecated")
        command, name, parent, words = sub, rest[0], ctx, rest[1:]


def all_commands() -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every command and group under ``skinbatch``, with a context."""
    def walk(command: click.Command, name: str,
             parent: click.Context | None) -> Iterator[tuple[str, click.Command, click.Context]]:
        ctx = command.context_class(command, info_name=name, parent=parent)
        yield ctx.command_path, command, ctx
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                assert sub is not None, sub_name
                yield from walk(sub, sub_name, ctx)
    yield from walk(cli, "skinbatch", None)


# -- the command lines --------------------------------------------------------------------------------------


def test_the_docs_show_skinbatch_command_lines() -> None:
    """The extraction finds what it should: if it found nothing, the next test would pass vacuously."""
    commands = doc_commands()
    assert len(commands) > 30
    assert {c.args[0] for c in commands if c.args} >= {"consume", "publish", "triage", "status", "evaluate",
                                                      "convert", "serve", "localstack", "taxonomy", "demo"}


def test_every_documented_command_line_parses() -> None:
    problems = [f"{c}\n    {p}" for c in doc_commands() for p in check_command(c.args)]
    assert not problems, "command lines in the docs that the commands do not accept:\n" + "\n".join(problems)


@pytest.mark.parametrize(("args", "expected"), [
    (["publish", "a.jpg", "--bootstrap-servers", "k:9092"], None),
    (["publish", "FILES…", "--bootstrap-servers", "…", "--request-topic", "…"], None),
    (["status", "--triton-url", "triton:8001", "--watch", "--json"], None),
    (["consume", "--bootstrap-servers", "…", "…"], None),
    (["localstack", "kafka"], None),
    (["evaluate", "--labels", "CSV", "--triton-url", "…", "--out", "DIR"], None),
    (["taxonomy", "partition", "tax.json", "--max-class-size", "1000"], None),
    (["publish", "a.jpg", "--bootstrap-server", "k:9092"], "No such option"),
    (["consume", "--shared-memory", "sometimes"], "'sometimes' is not one of"),
    (["status", "--count", "many"], "'many' is not a valid integer"),
    (["status", "--count", "N"], None),
    (["status", "--triton-url"], "requires an argument"),
    (["localstack", "broker"], "no such command 'broker'"),
    (["demo", "extra"], "unexpected extra arguments"),
])
def test_the_check_fails_on_what_click_refuses(args: list[str], expected: str | None) -> None:
    problems = check_command(args)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_the_check_fails_on_a_hidden_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old spelling kept as a hidden alias is not for the docs (generic: any hidden option)."""
    ctx = click.Context(cli)
    command = cli.get_command(ctx, "demo")
    assert command is not None
    old = click.Option(["--old-name"], hidden=True, envvar="SKINBATCH_OLD_NAME")
    monkeypatch.setattr(command, "params", [*command.params, old])
    assert check_command(["demo", "--old-name", "x"]) == [
        "`skinbatch demo`: --old-name is hidden or deprecated (an old spelling): use the name `--help` shows"]
    assert "--old-name" in _option_names()[1]  # named alone in prose
    assert "SKINBATCH_OLD_NAME" in _option_variables()[1]


@pytest.mark.parametrize(("text", "expected"), [
    ("skinbatch status | jq .", [["status"]]),
    ("SKINBATCH_X=1 skinbatch consume --metrics-port 1 &", [["consume", "--metrics-port", "1"]]),
    ("dc exec consumer skinbatch status   # comment", [["status"]]),
    ("kubectl -n skinbatch create secret generic skinbatch-kafka", []),
    ("kubectl exec deploy/x -- skinbatch status 2>/dev/null && echo ok", [["status"]]),
    ("python -m skinbatch triage <dir> --out out", [["triage", "⟨dir⟩", "--out", "out"]]),
    ("pip install 'skinbatch[heic]'", []),
])
def test_command_lines_are_found_in_shell(text: str, expected: list[list[str]]) -> None:
    assert [args for words in simple_commands(text) if (args := skinbatch_args(words)) is not None] == expected


def test_code_spans_and_continued_lines(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("Run `skinbatch publish FILES…\n  --topic t` then.\n\n```sh\nskinbatch status \\\n  --json\n```\n",
                   encoding="utf-8")
    parsed = markdown(doc)
    assert [s.text for s in parsed.shell_lines] == ["skinbatch status    --json"]
    assert [s.text for s in code_spans(parsed)] == ["skinbatch publish FILES…   --topic t"]


# -- flags named in prose ----------------------------------------------------------------------------------

FOREIGN_FLAGS = {
    "--models": "benchmarks/consumer_bench.py",
    "--isolation-level": "kafka-console-consumer.sh",
    "--model-control-mode": "tritonserver",
    "--load-model": "tritonserver",
}
"""Flags of other programs that the docs name in a code span of their own."""


def _option_names() -> tuple[set[str], set[str]]:
    """(names of visible options, names only hidden or deprecated options have), over every command."""
    visible: set[str] = set()
    hidden: set[str] = set()
    for _, command, ctx in all_commands():
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                old = param.hidden or bool(getattr(param, "deprecated", False))
                (hidden if old else visible).update([*param.opts, *param.secondary_opts])
    return visible, hidden - visible


RENAMED = ("docs/contracts.md", "Renamed options")
"""The one section where old spellings are named on purpose: the table of renamed options."""


def renamed_lines() -> set[tuple[str, int]]:
    """(file, line) of the renamed-options section, whose old spellings must be hidden aliases."""
    path = ROOT / RENAMED[0]
    lines, inside = set(), False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("## "):
            inside = line[3:].strip() == RENAMED[1]
        elif inside:
            lines.add((RENAMED[0], number))
    assert lines, f"{RENAMED[0]} has no section {RENAMED[1]!r}"
    return lines


def test_flags_named_in_prose_exist() -> None:
    """A code span that starts with a flag (`--max-in-flight`, `--shared-memory on`) names an option of some
    skinbatch command, by the name ``--help`` shows, or a flag of another program in FOREIGN_FLAGS."""
    visible, hidden = _option_names()
    renamed = renamed_lines()
    problems = []
    for path in doc_files():
        for span in code_spans(markdown(path)):
            flag = re.match(r"--[a-z0-9][a-z0-9-]*", span.text)
            if not flag or flag.group(0) in visible or flag.group(0) in FOREIGN_FLAGS:
                continue
            if (span.where, span.line) in renamed and flag.group(0) in hidden:
                continue  # an old spelling in the table of renamed options, still a working alias
            why = "an old (hidden) spelling" if flag.group(0) in hidden else "no command has it"
            problems.append(f"{span.where}:{span.line}: `{span.text}`: {why}")
    assert not problems, "\n".join(problems)


# -- cross-references ---------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)")
SECTION_REFERENCE = re.compile(r"\b([\w/]+\.md),? \*([^*]+)\*")
"""``docs/runbook.md, *Poison messages*``: a section named in prose."""


def _headings(path: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown(path).prose if re.match(r"#{1,6} ", line)]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_cross_references_reach_their_sections() -> None:
    """A link to a file exists, its ``#anchor`` is a heading there, and a section named in prose
    (``docs/contracts.md, *Exit codes*``) is a heading of that file, or one with a parenthesis after it
    (``Poison messages (`consumer/poison.py`)``)."""
    problems = []
    for path in doc_files():
        for number, line in enumerate(markdown(path).prose, start=1):
            for target, fragment in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                linked = (path.parent / target).resolve() if target else path
                if not linked.exists():
                    problems.append(f"{rel(path)}:{number}: {target} does not exist")
                elif fragment and linked.suffix == ".md" and fragment not in map(_slug, _headings(linked)):
                    problems.append(f"{rel(path)}:{number}: {target}#{fragment}: no such heading")
            for name, section in SECTION_REFERENCE.findall(line):
                candidates = [p for p in (path.parent / name, ROOT / name, ROOT / "docs" / Path(name).name)
                              if p.exists()]
                if not candidates:
                    problems.append(f"{rel(path)}:{number}: {name} does not exist")
                elif not any(re.fullmatch(re.escape(section.lower()) + r"( \(.*\))?", h.lower())
                             for h in _headings(candidates[0])):
                    problems.append(f"{rel(path)}:{number}: {name} has no section *{section}*")
    assert not problems, "\n".join(problems)


# -- SKINBATCH_* variables ----------------------------------------------------------------------------------

ENV_NAME = re.compile(r"\bSKINBATCH_[A-Z0-9_]*[A-Z0-9]\b")
ENV_PLACEHOLDER = re.compile(r"_[A-Z](_|$)")
"""``SKINBATCH_X_FILE``: a one-letter part stands for any name."""


def _option_variables() -> tuple[set[str], set[str]]:
    """(variables of visible options, variables of hidden or deprecated ones)."""
    visible: set[str] = set()
    hidden: set[str] = set()
    for _, command, ctx in all_commands():
        for param in command.get_params(ctx):
            names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            old = isinstance(param, click.Option) and (param.hidden or bool(getattr(param, "deprecated", False)))
            (hidden if old else visible).update(n for n in names if n)
    return visible, hidden - visible


def test_documented_variables_are_read() -> None:
    """A ``SKINBATCH_*`` variable in the docs is an option's (a visible one's), or a module or script reads it
    by name.
    A prefix written as ``SKINBATCH_SASL_*`` names the variables that start with it; a one-letter part
    (``SKINBATCH_X_FILE``) is a placeholder."""
    visible, hidden = _option_variables()
    renamed = renamed_lines()
    modules = [p for d in ("skinbatch", "consumer", "converter") for p in (ROOT / d).rglob("*.py")]
    source = "\n".join(p.read_text(encoding="utf-8") for p in [*modules, *ROOT.glob("compose/**/*.sh")])
    named_in_code = set(ENV_NAME.findall(source))
    problems = []
    for path in doc_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in ENV_NAME.finditer(line):
                name = match.group(0)
                if ENV_PLACEHOLDER.search(name):
                    continue
                if line[match.end():match.end() + 1] == "*":
                    if not any(v.startswith(name) for v in visible | named_in_code):
                        problems.append(f"{rel(path)}:{number}: no variable starts with {name}")
                elif name in hidden and (rel(path), number) not in renamed:
                    problems.append(f"{rel(path)}:{number}: {name} is an old (hidden) spelling")
                elif name not in visible and name not in named_in_code:
                    problems.append(f"{rel(path)}:{number}: {name} is read by no option and named by no module")
    assert not problems, "\n".join(problems)


# -- tables -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    where: str
    line: int
    heading: str
    header: list[str]
    rows: list[tuple[int, list[str]]]


def _cells(row: str) -> list[str]:
    """A table row's cells; a ``|`` inside a code span does not split."""
    cells, cell, in_code = [], "", False
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    for k, char in enumerate(body):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and (k == 0 or body[k - 1] != "\\"):
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
    return [*cells, cell.strip()]


DELIMITER = re.compile(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?")


def tables(path: Path) -> tuple[list[Table], list[str]]:
    """The tables of a doc, and its rows that are not in a table (no header and delimiter row: they render as
    text)."""
    doc = markdown(path)
    found: list[Table] = []
    strays: list[str] = []
    heading = ""
    run: list[tuple[int, str]] = []
    for number, line in enumerate([*doc.prose, ""], start=1):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip().startswith("|") and line.strip().endswith("|") and len(line.strip()) > 1:
            run.append((number, line))
            continue
        if run:
            if len(run) >= 2 and DELIMITER.fullmatch(run[1][1].strip()):
                found.append(Table(rel(path), run[0][0], heading, [c.lower() for c in _cells(run[0][1])],
                                   [(n, _cells(text)) for n, text in run[2:]]))
            else:
                strays.extend(f"{rel(path)}:{n}: a table row outside a table: {text.strip()[:60]}" for n, text in run)
        run = []
    return found, strays


def test_table_rows_are_in_tables() -> None:
    strays = [s for path in doc_files() for s in tables(path)[1]]
    assert not strays, "\n".join(strays)


def _exit_code_tables() -> list[Table]:
    return [t for path in doc_files() for t in tables(path)[0] if t.header and t.header[0] == "code"]


CANONICAL = "docs/contracts.md"
"""The one table of every exit code (with names and the commands that use each)."""
COMMAND_TABLES = {"docs/triage.md": {"triage", "status", "evaluate"}}
"""Exit-code tables of some commands: each lists every code the canonical table gives those commands."""

# Words that belong to one exit code only: a row or a sentence that says the number and one of these must
# say that code.
CONCEPTS: dict[ExitCode, tuple[str, ...]] = {
    ExitCode.MODEL_CHANGED: ("serving another model", "began serving", "model change", "model_changed"),
    ExitCode.FETCH_STALLED: ("fetch_stalled", "fetch stall", "stops fetching"),
    ExitCode.WEDGED: ("wedged",),
    ExitCode.KAFKA_CODEC: ("codec",),
    ExitCode.TLS: ("handshake", "untrusted"),
    ExitCode.ENVIRONMENT: ("no gpu", "no tensorrt", "is missing or too old"),
}


def _concept_codes(text: str) -> set[ExitCode]:
    lowered = text.lower()
    return {code for code, words in CONCEPTS.items() if any(w in lowered for w in words)}


def _canonical_table() -> Table:
    candidates = [t for t in _exit_code_tables() if t.where == CANONICAL and "name" in t.header]
    assert len(candidates) == 1, f"{CANONICAL} should have one exit-code table with a name column"
    return candidates[0]


def _commands_of(cell: str) -> set[str]:
    """`consume`, `localstack kafka`, `status --watch`, all → the top-level command names."""
    if cell.strip() == "all":
        return {"all"}
    return {span.split()[0] for span in re.findall(r"`([^`]+)`", cell)}


def test_the_exit_code_table_is_the_contract() -> None:
    table = _canonical_table()
    header = table.header
    rows = {}
    problems = []
    for number, cells in table.rows:
        code, name = cells[header.index("code")], cells[header.index("name")]
        where = f"{table.where}:{number}"
        if not code.isdigit() or int(code) not in ExitCode._value2member_map_:
            problems.append(f"{where}: {code} is not an ExitCode")
            continue
        if ExitCode(int(code)).name != name:
            problems.append(f"{where}: code {code} is {ExitCode(int(code)).name} in skinbatch.contract, not {name}")
        rows[int(code)] = cells
        if "commands" in header:
            for span in re.findall(r"`([^`]+)`", cells[header.index("commands")]):
                problems.extend(f"{where}: {p}" for p in check_command(span.split()))
    missing = [code.name for code in ExitCode if code.value not in rows]
    if missing:
        problems.append(f"{table.where}: the exit-code table misses {missing}")
    if list(rows) != sorted(rows):
        problems.append(f"{table.where}: the exit-code table is not in order")
    assert not problems, "\n".join(problems)


def test_other_exit_code_tables_agree_with_the_contract() -> None:
    canonical = _canonical_table()
    users: dict[int, set[str]] = {int(cells[0]): _commands_of(cells[canonical.header.index("commands")])
                                  for _, cells in canonical.rows if cells[0].isdigit()}
    problems = []
    for table in _exit_code_tables():
        if table is canonical or (table.where == CANONICAL and "name" in table.header):
            continue
        codes = set()
        for number, cells in table.rows:
            where = f"{table.where}:{number}"
            code = cells[0]
            if not code.isdigit() or int(code) not in ExitCode._value2member_map_:
                problems.append(f"{where}: {code} is not an ExitCode")
                continue
            codes.add(int(code))
            if "name" in table.header and ExitCode(int(code)).name != cells[table.header.index("name")]:
                problems.append(f"{where}: code {code} is {ExitCode(int(code)).name}")
            wrong = {c for c in _concept_codes(" ".join(cells[1:])) if c != int(code)}
            if wrong:
                problems.append(f"{where}: code {code} describes {sorted(c.name for c in wrong)}")
        covered = COMMAND_TABLES.get(table.where)
        if covered is None:
            problems.append(f"{table.where}:{table.line}: an exit-code table that COMMAND_TABLES does not know")
            continue
        expected = {code for code, names in users.items() if names & (covered | {"all"})}
        if codes != expected:
            problems.append(f"{table.where}:{table.line}: the exit codes of {sorted(covered)} are "
                            f"{sorted(expected)} in {CANONICAL}, this table has {sorted(codes)}")
    assert not problems, "\n".join(problems)


# "exits 9", "exit 13", "exited with status 10", "exit code 2", "exits with 130"
EXIT_STATEMENT = re.compile(r"\bexit(?:s|ed|ing)?(?: with)?(?: (?:status|code))? (\d+)\b"
                            r"(?! ?(?:s|%|ms|MB|GiB|seconds?|minutes?)\b)")


def _sentences(text: str) -> Iterator[tuple[int, str]]:
    """(offset, sentence): split at '. ' and at line starts of lists and table rows."""
    start = 0
    for match in re.finditer(r"\.\s|\n\s*(?:[*|-]|\d+\.)\s|\n\s*\n", text):
        yield start, text[start:match.end()]
        start = match.end()
    yield start, text[start:]


def _prose_statements() -> Iterator[tuple[str, int, int, str]]:
    """(where, line, code, sentence) for each exit code stated in the docs' prose and the scripts' comments."""
    for path in doc_files():
        text = "\n".join(markdown(path).prose)
        for offset, sentence in _sentences(text):
            for match in EXIT_STATEMENT.finditer(sentence):
                yield rel(path), text.count("\n", 0, offset + match.start()) + 1, int(match.group(1)), sentence
    for script in sorted(ROOT.glob("compose/**/*.sh")):
        for number, line in enumerate(script.read_text(encoding="utf-8").splitlines(), start=1):
            if "#" in line:
                comment = line[line.index("#"):]
                for match in EXIT_STATEMENT.finditer(comment):
                    yield rel(script), number, int(match.group(1)), comment


def test_exit_codes_in_prose_are_the_contracts() -> None:
    problems = []
    statements = list(_prose_statements())
    assert len(statements) > 20
    for where, line, code, sentence in statements:
        if code not in ExitCode._value2member_map_:
            problems.append(f"{where}:{line}: exit {code} is not an ExitCode")
            continue
        numbers = {int(n) for n in EXIT_STATEMENT.findall(sentence)}
        concepts = _concept_codes(sentence)
        if len(numbers) == 1 and len(concepts) == 1 and code not in concepts:
            problems.append(f"{where}:{line}: exit {code} for {next(iter(concepts)).name}: "
                            f"{' '.join(sentence.split())[:100]}")
    assert not problems, "\n".join(problems)


def test_scripts_say_their_exit_codes() -> None:
    """A script's header comment (``# Exit codes: 0 done, 2 inputs missing, ...``) lists every ``exit N`` of
    the script, each with its meaning; an ``exit N  # NAME`` names ExitCode N."""
    problems = []
    for script in sorted(ROOT.glob("compose/**/*.sh")):
        text = script.read_text(encoding="utf-8")
        header = re.search(r"^# Exit codes: (.*)$", text, re.MULTILINE)
        items = re.findall(r"(\d+) ([^,;.]+)", header.group(1)) if header else []
        listed = {int(code): meaning for code, meaning in items}
        for code, meaning in listed.items():
            wrong = {c for c in _concept_codes(meaning) if c != code}
            if code not in ExitCode._value2member_map_ or wrong:
                problems.append(f"{rel(script)}: the header's exit {code} ({meaning}) is not the contract's")
        for number, line in enumerate(text.splitlines(), start=1):
            statement, _, comment = line.partition("#")
            match = re.search(r"\bexit (\d+)\b", statement)
            if not match:
                continue
            code = int(match.group(1))
            name = re.match(r"\s*([A-Z_]+)\b", comment)
            if code not in ExitCode._value2member_map_:
                problems.append(f"{rel(script)}:{number}: exit {code} is not an ExitCode")
            elif name and ExitCode(code).name != name.group(1):
                problems.append(f"{rel(script)}:{number}: exit {code} is {ExitCode(code).name}, not {name.group(1)}")
            if header and code not in listed:
                problems.append(f"{rel(script)}:{number}: exit {code} is not in the header's exit codes "
                                f"{sorted(listed)}")
    assert not problems, "\n".join(problems)


# -- dead letters -------------------------------------------------------------------------------------------


def test_the_dead_letter_table_is_the_contract() -> None:
    contracts = ROOT / CANONICAL
    found = [t for t in tables(contracts)[0] if t.header[:2] == ["type", "meaning"]]
    assert len(found) == 1, f"{CANONICAL} should have one dead-letter table (type | meaning)"
    documented: list[str] = []
    for _, cells in found[0].rows:
        documented.extend(re.findall(r"`([^`]+)`", cells[0]))
    unknown = sorted(set(documented) - set(ErrorType))
    missing = [t.value for t in ErrorType if t.value not in documented]
    twice = sorted({t for t in documented if documented.count(t) > 1})
    assert (unknown, missing, twice) == ([], [], []), (
        f"{CANONICAL}:{found[0].line}: dead-letter types not in ErrorType: {unknown}; ErrorType members the table "
        f"misses: {missing}; listed twice: {twice}")
