"""The manual cannot rot: every shell command in README.md and docs/*.md is checked against the code.

Commands are taken from fenced code blocks (no language, ``bash``, ``sh``, ``shell``, ``console``)
when they begin with ``aexp``, ``python -m``, ``python SCRIPT.py``, ``pytest`` or ``make`` (after a
``$`` prompt, ``VAR=value`` assignments, ``time`` or ``nice -n N``). Each is checked for what can go
wrong without running it:

- ``aexp ...`` and ``python -m aexp ...``: the real argparse parser accepts the subcommand and flags;
  the config file it names exists. The cheap ones are run: ``--help``, ``--version``, ``aexp check``.
- ``python SCRIPT.py ARGS`` (the benchmarks, the example): the script's own argparse parser accepts
  ARGS; the script stops right after parsing, so nothing is measured.
- ``python -m MODULE``: the module exists. ``pytest PATH``: the files exist.
- ``make``: every target is in the Makefile, every ``VAR=value`` names one of its variables.
- Any argument naming a file under a folder of the repository (``configs/``, ``benchmarks/``, ...)
  names one that exists.

A failure names the file and line of the command. The generated pages must match what their
generators write today: ``docs/configuration.md`` (:mod:`aexp.config_reference`) and
``docs/instrument-options.md`` (:mod:`simulators.options_reference`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from aexp.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
# an argument beginning with one of these names an input file of the repository, which must exist
REPO_FOLDERS = ("configs/", "benchmarks/", "examples/", "docs/", "tests/", "drivers/", "simulators/", "aexp/")
# outputs the documented commands write: never required to exist
OUTPUT_OPTIONS = {"--out", "--json", "--hdf5", "--executed-log"}


@dataclass(frozen=True)
class Command:
    """One documented shell command: where it is written and its words after any wrapper."""

    file: str
    line: int
    text: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def _strip_wrappers(words: list[str]) -> list[str]:
    """Drop what runs a command rather than being it: ``VAR=1``, ``time``, ``nice -n 10``, ``env``."""
    while words:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]) or words[0] in ("time", "env"):
            words = words[1:]
        elif words[0] == "nice":
            words = words[3:] if len(words) > 2 and words[1] == "-n" else words[1:]
        else:
            return words
    return words


def _is_documented_command(words: list[str]) -> bool:
    if not words:
        return False
    head = words[0]
    if head in ("aexp", "make", "pytest"):
        return True
    if head in ("python", "python3"):
        return len(words) > 1 and (words[1] == "-m" or words[1].endswith(".py"))
    return False


def extract_commands(text: str, file: str) -> list[Command]:
    """The documented commands of one Markdown text, with the line each starts on."""
    commands: list[Command] = []
    fence: str | None = None
    language = ""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        opened = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence is None:
            if opened:
                fence, language = opened.group(1), opened.group(2).lower()
            continue
        if line.strip().startswith(fence):  # the closing fence
            fence, pending = None, []
            continue
        if language not in SHELL_LANGUAGES:
            continue
        if not pending:
            start = number
            line = re.sub(r"^\s*\$\s+", "", line)  # a shell prompt
        if line.rstrip().endswith("\\"):  # continued on the next line
            pending.append(line.rstrip()[:-1])
            continue
        logical = " ".join([*pending, line]).strip()
        pending = []
        if not _is_documented_command(_strip_wrappers(logical.split())):  # a diagram, output, another tool
            continue
        try:
            words = shlex.split(logical, comments=True)
        except ValueError as exc:
            raise AssertionError(f"{file}:{start}: cannot split {logical!r} into words: {exc}") from None
        words = _strip_wrappers(words)
        if _is_documented_command(words):
            commands.append(Command(file, start, logical.split(" #")[0].strip(), tuple(words)))
    return commands


def _all_commands() -> list[Command]:
    found = []
    for path in DOC_FILES:
        found += extract_commands(path.read_text(), str(path.relative_to(ROOT)))
    return found


COMMANDS = _all_commands()


def _makefile() -> tuple[set[str], set[str]]:
    """Targets and variables defined in the Makefile."""
    targets: set[str] = set()
    variables: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(("\t", "#", " ")):
            continue
        variable = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*(\?|:|\+)?=", line)
        if variable:
            variables.add(variable.group(1))
            continue
        rule = re.match(r"([^:=#]+):(?!=)", line)
        if rule:
            targets.update(t for t in rule.group(1).split() if not t.startswith("."))
    return targets, variables


def _check_repo_paths(command: Command) -> None:
    words = command.argv
    for i, word in enumerate(words):
        value = word.partition("=")[2] if word.startswith("-") and "=" in word else word
        if i > 0 and words[i - 1] in OUTPUT_OPTIONS:
            continue
        if value.startswith(REPO_FOLDERS) and not any(ch in value for ch in "*?{"):
            assert (ROOT / value).exists(), f"{command}\n  names {value}, which does not exist"


def _run_aexp(command: Command, argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:  # --help and --version exit 0 once they have printed
            assert exit_.code == 0, f"{command}\n  the aexp parser refuses it: {err.getvalue().strip()}"
            assert out.getvalue().strip(), f"{command}\n  printed nothing"
            return
    config = getattr(args, "config", None)
    for path in config if isinstance(config, list) else [config] if config is not None else []:
        assert (ROOT / path).is_file(), f"{command}\n  the config {path} does not exist"
    if args.command == "check":  # cheap: validates the config against the instrument it builds
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["check", str(ROOT / config)])
        assert status == 0, f"{command}\n  exits {status}: {err.getvalue().strip()}"


class _Parsed(Exception):
    """Raised right after a script's parser accepted its arguments, so the script does no work."""


def _parse_script(command: Command, script: str, args: list[str], monkeypatch) -> None:
    path = ROOT / script
    assert path.is_file(), f"{command}\n  no script {script}"
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **k):
        original(self, *a, **k)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(path), *args])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exit_:  # --help exits 0 once it has printed
        if exit_.code != 0:
            raise AssertionError(f"{command}\n  its parser refuses it: {err.getvalue().strip()}") from None
        return
    raise AssertionError(f"{command}\n  {script} finished without parsing any arguments")


def _check_make(command: Command) -> None:
    targets, variables = _makefile()
    for word in command.argv[1:]:
        if word.startswith("-"):
            continue
        name, is_assignment, _ = word.partition("=")
        if is_assignment:
            assert name in variables, f"{command}\n  sets {name}, which the Makefile does not use"
        else:
            assert word in targets, f"{command}\n  make has no target {word!r} (targets: {sorted(targets)})"


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.file}:{c.line}" for c in COMMANDS])
def test_documented_command(command: Command, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    words = list(command.argv)
    _check_repo_paths(command)
    if words[0] == "make":
        _check_make(command)
    elif words[0] == "aexp":
        _run_aexp(command, words[1:])
    elif words[0].startswith("python") and words[1] == "-m":
        module = words[2] if len(words) > 2 else ""
        if module == "aexp":
            _run_aexp(command, words[3:])
        else:
            assert module and importlib.util.find_spec(module) is not None, f"{command}\n  no module {module!r}"
    elif words[0].startswith("python"):
        _parse_script(command, words[1], words[2:], monkeypatch)
    elif words[0] == "pytest":
        paths = [w for w in words[1:] if not w.startswith("-") and "/" in w]
        for path in paths:
            assert (ROOT / path.split("::")[0]).exists(), f"{command}\n  no test path {path}"


def test_the_quick_start_commands_are_found() -> None:
    readme = {c.argv for c in COMMANDS if c.file == "README.md"}
    assert ("make", "demo") in readme and ("make", "test") in readme
    assert any(argv[:2] == ("aexp", "run") for argv in readme)
    assert any(argv[:2] == ("aexp", "replay") for argv in readme)


def test_extraction_handles_prompts_continuations_comments_and_wrappers() -> None:
    text = "\n".join([
        "intro",                                              # 1
        "```bash",                                            # 2
        "$ aexp run configs/x.yaml \\",                       # 3
        "      --out runs/x   # a comment",                   # 4
        "nice -n 10 aexp bench configs/x.yaml --seeds 0,1",   # 5
        "OMP_NUM_THREADS=1 python -m aexp --version",         # 6
        "ls runs/x",                                          # 7: not ours
        "```",                                                # 8
        "```yaml",                                            # 9
        "aexp: not a command in YAML",                        # 10
        "```",                                                # 11
        "```",                                                # 12
        "make demo OVERWRITE=1",                              # 13
        "```",                                                # 14
    ])
    found = extract_commands(text, "t.md")
    assert [(c.line, c.argv) for c in found] == [
        (3, ("aexp", "run", "configs/x.yaml", "--out", "runs/x")),
        (5, ("aexp", "bench", "configs/x.yaml", "--seeds", "0,1")),
        (6, ("python", "-m", "aexp", "--version")),
        (13, ("make", "demo", "OVERWRITE=1")),
    ]
    assert str(found[0]).startswith("t.md:3: aexp run configs/x.yaml")


def test_a_bad_command_is_reported_with_its_file_and_line(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    bad = extract_commands("```\naexp run configs/plasmonic-dkl.yaml --out runs/x --no-such-flag\n```\n", "docs/x.md")[0]
    with pytest.raises(AssertionError, match=r"(?s)docs/x\.md:2: .*unrecognized arguments: --no-such-flag"):
        test_documented_command(bad, monkeypatch)
    missing = extract_commands("```\naexp check configs/no-such.yaml\n```\n", "docs/y.md")[0]
    with pytest.raises(AssertionError, match=r"(?s)docs/y\.md:2: .*configs/no-such\.yaml"):
        test_documented_command(missing, monkeypatch)
    script = extract_commands("```\npython benchmarks/atoms.py --no-such-flag\n```\n", "docs/z.md")[0]
    with pytest.raises(AssertionError, match=r"(?s)docs/z\.md:2: .*unrecognized arguments: --no-such-flag"):
        test_documented_command(script, monkeypatch)
    target = extract_commands("```\nmake no-such-target\n```\n", "README.md")[0]
    with pytest.raises(AssertionError, match=r"(?s)README\.md:2: .*no target 'no-such-target'"):
        test_documented_command(target, monkeypatch)


def test_configuration_reference_is_current() -> None:
    from aexp.config_reference import render

    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), ("docs/configuration.md is stale: regenerate it with "
                              "`python -m aexp.config_reference --out docs/configuration.md`")


def test_instrument_options_reference_is_current() -> None:
    from simulators.options_reference import render

    page = (ROOT / "docs" / "instrument-options.md").read_text()
    assert page == render(), ("docs/instrument-options.md is stale: regenerate it with "
                              "`python -m simulators.options_reference --out docs/instrument-options.md`")


def test_the_cli_policy_list_is_the_policies_module_list() -> None:
    from aexp.config import KINDS
    from aexp.policies import POLICY_KINDS

    assert tuple(KINDS["policy"].members) == POLICY_KINDS
