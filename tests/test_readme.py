"""The commands and files that README.md and docs/ show exist: every ``fwp-rl ...`` command parses with the CLI's own
parser (its verb, its flags, its seeds), names config files that are in the repository and config keys that the
config has, every ``make`` target is in the Makefile, and every repository file or link the pages cite is there.

Nothing here trains: a command is parsed and its config loaded, never run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from fwp_rl.cli import build_parser
from fwp_rl.config import ConfigError
from fwp_rl.learners import load_config
from fwp_rl.seeds import parse_seeds

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "reports" / "README.md"]
SEPARATORS = {";", "&&", "||", "|", "&"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
FOR_LOOP = re.compile(r"^for (\w+) in ([^;]+); do (.+?);? done$")
# synopses such as `fwp-rl <command> --help` or `fwp-rl train CONFIG`, not commands to run
PLACEHOLDER = re.compile(r"<|\[|\.\.\.|\||\b[A-Z][A-Z_]{2,}\b")


@dataclass
class Command:
    page: str
    text: str
    tokens: list[str]
    inline: bool = False  # a code span in the text, which may name a command without its arguments

    def __str__(self) -> str:
        return f"{self.page}: {self.text}"


def fenced_code(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def shell_lines(body: str) -> list[str]:
    """The command lines of a shell block: continuation lines joined, comments dropped, ``for v in a b; do ...; done``
    loops written out once per value."""
    lines = []
    for line in body.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        loop = FOR_LOOP.match(line)
        if loop:
            name, values, command = loop.groups()
            lines += [re.sub(rf"\$\{{?{name}\}}?", value, command) for value in values.split()]
        else:
            lines.append(line)
    return lines


def split_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, as token lists (split at ;, &&, ||, | and &; comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def page_commands(page: Path, text: str | None = None) -> list[Command]:
    """Every command of the page's shell blocks, and every inline code span that is a whole ``fwp-rl`` or ``make``
    command (not a synopsis with placeholders)."""
    text = page.read_text() if text is None else text
    name = str(page.relative_to(REPO)) if page.is_relative_to(REPO) else str(page)
    commands = []
    for language, body in fenced_code(text):
        if language not in ("sh", "bash", "shell", "console", ""):
            continue
        for line in shell_lines(body):
            commands += [Command(name, line, tokens) for tokens in split_commands(line)]
    for span in re.findall(r"`([^`]+)`", prose(text)):
        span = " ".join(span.split())
        if re.match(r"(fwp-rl|make) ", span) and not PLACEHOLDER.search(span):
            commands += [Command(name, span, tokens, inline=True) for tokens in split_commands(span)]
    return commands


def strict_parser() -> argparse.ArgumentParser:
    """``fwp-rl``'s parser with abbreviations off in every subcommand, so that a flag must be written out in full."""
    parser = build_parser()
    parsers = [parser]
    while parsers:
        p = parsers.pop()
        p.allow_abbrev = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
    return parser


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))


def check(command: Command) -> None:
    """Fail unless ``command`` is a ``make`` target of the Makefile or an ``fwp-rl`` command the CLI accepts whose
    config files exist and whose --set keys the config has; other commands (pip, python) pass."""
    tokens = command.tokens
    if tokens[0] == "make":
        unknown = [t for t in tokens[1:] if "=" not in t and t not in makefile_targets()]
        assert not unknown, f"{command}: no Makefile target {', '.join(unknown)}"
        return
    starts = [i for i, t in enumerate(tokens) if Path(t).name == "fwp-rl"]
    if not starts:
        return
    argv = tokens[starts[0] + 1:]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            args = strict_parser().parse_args(argv)
    except SystemExit as e:
        error = out.getvalue().strip().splitlines()[-1]
        if command.inline and "arguments are required" in error and not any(a.startswith("-") for a in argv):
            return  # `fwp-rl compare` in a sentence names the command: its verbs exist
        assert e.code == 0, f"{command}: fwp-rl refuses it: {error}"
        return  # --help
    configs = [c for a in argv if a.endswith(".yaml") for c in a.split(",")]  # --configs a.yaml,b.yaml too
    configs += [c for c in (getattr(args, "configs", None) or []) if c not in configs]
    for config in configs:
        assert (REPO / config).is_file(), f"{command}: {config} is not in the repository"
    if args.command == "train":
        if args.seeds is not None:
            parse_seeds(args.seeds)
        if args.config is not None:
            try:
                load_config(str(REPO / args.config), args.overrides)
            except ConfigError as e:
                pytest.fail(f"{command}: {e}")


@pytest.fixture(autouse=True)
def no_compiler_search(monkeypatch):
    """Loading a config with search.compile=true asks torch for a C++ compiler, which takes seconds (torch's inductor)
    and depends on the machine: these tests check what the pages write, so every compiler counts as there."""
    from fwp_rl.envs import double_pole

    monkeypatch.setattr(double_pole, "compile_unavailable", lambda device: None)


def all_commands() -> list[Command]:
    return [c for page in PAGES for c in page_commands(page)]


def test_the_pages_show_commands():
    commands = all_commands()
    fwp = [c for c in commands if "fwp-rl" in c.text]
    assert len(fwp) > 40 and {c.page for c in fwp} >= {"README.md", "docs/benchmarks/double_pole.md"}
    assert {("make", "main"), ("make", "test")} <= {tuple(c.tokens) for c in commands if c.page == "README.md"}


@pytest.mark.parametrize("command", all_commands(), ids=str)
def test_every_command_shown_runs_as_written(command):
    check(command)


@pytest.mark.parametrize("text, message", [
    ("```sh\nfwp-rl train configs/memory/recall_delta.yaml --no-such-flag\n```", "fwp-rl refuses it"),
    ("```sh\nfwp-rl trian configs/memory/recall_delta.yaml\n```", "fwp-rl refuses it"),
    ("```sh\nfwp-rl train configs/memory/recall_delta.yaml --seed 0\n```", "fwp-rl refuses it"),  # an abbreviation
    ("```sh\nfwp-rl evaluate runs/x --video\n```", "fwp-rl refuses it"),
    ("```sh\nfwp-rl train configs/memory/no_such_config.yaml\n```", "is not in the repository"),
    ("```sh\nfwp-rl bench double-pole --configs configs/double_pole/nope.yaml\n```", "is not in the repository"),
    ("```sh\nfor c in lstm nope; do fwp-rl train configs/memory/recall_$c.yaml; done\n```", "recall_nope.yaml"),
    ("run `fwp-rl train configs/memory/recall_delta.yaml --set ppo.no_such_key=1` here", "no_such_key"),
    ("```sh\nfwp-rl train configs/memory/recall_delta.yaml --seeds 0,...,13\n```", "--seeds"),
    ("```sh\nmake no-such-target\n```", "no Makefile target"),
    ("```sh\nfwp-rl compare\n```", "arguments are required"),  # in a code block a command is whole
    ("see `fwp-rl compare --bogus`", "arguments are required"),
    ("see `fwp-rl bench gpu`", "invalid choice"),
])
def test_a_wrong_command_fails(text, message):
    commands = page_commands(REPO / "README.md", text)
    assert commands
    with pytest.raises(BaseException, match=re.escape(message)):
        for command in commands:
            check(command)


def test_commands_are_split_as_the_shell_splits_them():
    body = ("# a comment\nOMP_NUM_THREADS=1 fwp-rl train a.yaml --set 'search.options={separable: true}'  # why\n"
            "for c in x y; do fwp-rl train recall_$c.yaml; done\nfwp-rl bench cores \\\n  --json c.json && make test\n")
    commands = [tokens for line in shell_lines(body) for tokens in split_commands(line)]
    assert commands == [["OMP_NUM_THREADS=1", "fwp-rl", "train", "a.yaml", "--set", "search.options={separable: true}"],
                        ["fwp-rl", "train", "recall_x.yaml"], ["fwp-rl", "train", "recall_y.yaml"],
                        ["fwp-rl", "bench", "cores", "--json", "c.json"], ["make", "test"]]



# ---------------------------------------------------------------------------------------------- cited files
REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|configs|reports|agents|envs|fwp_rl|tests)/[\w./{},:-]*)")
GYMNASIUM_ID = re.compile(r"^fwp_rl/[A-Z]\w*-v\d+$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def expand_braces(path: str) -> list[str]:
    """``a_{x,y}.yaml`` -> ``a_x.yaml``, ``a_y.yaml`` (every brace group, as the shell expands them)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def cited_paths(text: str) -> list[str]:
    """Repository paths named in the prose (outside code blocks), without placeholders such as ``<name>``."""
    paths, text = [], prose(text)
    for match in REPO_PATH.finditer(text):
        path = match.group(1).split("::")[0].rstrip(".,:;")
        if GYMNASIUM_ID.match(path) or text[match.end():match.end() + 1] in ("<", "*", "$"):
            continue
        paths += expand_braces(path)
    return paths


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    heading = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", prose(page.read_text()), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_cited_file_exists(page):
    text = page.read_text()
    missing = [p for p in cited_paths(text) if not (REPO / p).exists()]
    assert not missing, f"{page.relative_to(REPO)} cites files that are not in the repository: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_leads_somewhere(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"\w+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to what is not there: {broken}"


def test_cited_paths_are_found_and_checked():
    text = ("See `configs/memory/recall_{delta,lstm}.yaml`, docs/cores.md, `tests/test_ppo.py::test_x` and "
            "`runs/<name>/`; `fwp_rl/Recall-v0` is an env id, `reports/compare-<env>/` a placeholder.\n"
            "```sh\nfwp-rl bench cores --json reports/not_yet.json\n```\n")
    assert cited_paths(text) == ["configs/memory/recall_delta.yaml", "configs/memory/recall_lstm.yaml",
                                 "docs/cores.md", "tests/test_ppo.py"]
    assert "docs/no_such_page.md" in cited_paths("the page docs/no_such_page.md")
