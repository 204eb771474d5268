"""The README's examples are the tool's real output: every transcript in it is run and compared.

A transcript is a fenced block whose first line starts with "$ ": each "$ COMMAND" line is run
with sh, and the lines up to the next "$ " line (or the end of the block) are what it prints,
standard error included. A line that is only "..." stands for any number of lines (an excerpt).
Other fenced blocks (formats, synopses, recipes with made-up pids) are not transcripts and are
left alone, so sections that show no command's output can change freely.

Commands run in a scratch directory holding links to scenarios/ and tests/, with the venv's
`overmount` first on PATH, a UTF-8 locale and 80 columns, as a person would type them there.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from planner import kernel
from tests.conftest import REPO

README = os.path.join(REPO, "README.md")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def transcripts() -> list[tuple[int, list[tuple[str, list[str]]]]]:
    """(line of the block in README.md, [(command, expected lines)]) for every transcript block."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    found = []
    for match in FENCE.finditer(text):
        lines = match.group(1).splitlines()
        if not lines or not lines[0].startswith("$ "):
            continue
        runs: list[tuple[str, list[str]]] = []
        for line in lines:
            if line.startswith("$ "):
                runs.append((line[2:], []))
            else:
                runs[-1][1].append(line)
        found.append((text.count("\n", 0, match.start()) + 1, runs))
    return found


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line; a "..." line matches any run of lines, none included."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == expected[0] and matches(expected[1:], actual[1:])


BLOCKS = transcripts()
CAN_NAMESPACE, WHY_NOT = kernel.can_make_namespaces()


def test_the_readme_has_transcripts_of_every_command() -> None:
    commands = [command for _, runs in BLOCKS for command, _ in runs]
    assert "overmount" in commands  # bare: the first screen
    for name in ("analyze", "plan", "check", "run", "--version"):
        assert any(c.startswith(f"overmount {name}") for c in commands), name
    assert any(c.endswith(" --help") for c in commands)


@pytest.mark.parametrize(("line", "runs"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_a_readme_transcript_is_what_the_tool_prints(line: int, runs: list[tuple[str, list[str]]]) -> None:
    for command, _ in runs:
        if " run " in f" {command} " and not CAN_NAMESPACE:
            pytest.skip(f"README.md:{line}: `{command}` needs a throwaway mount namespace: {WHY_NOT}")
        if command.startswith("setpriv") and os.geteuid() != 0:
            pytest.skip(f"README.md:{line}: `{command}` changes user, which needs root")
    scratch = tempfile.mkdtemp(prefix="overmount-readme-")
    try:
        os.chmod(scratch, 0o755)  # an example may run as another user (setpriv)
        for name in ("scenarios", "tests"):
            os.symlink(os.path.join(REPO, name), os.path.join(scratch, name))
        env = {**os.environ, "LANG": "C.UTF-8", "COLUMNS": "80",
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        env.pop("LC_ALL", None)
        for command, expected in runs:
            done = subprocess.run(["sh", "-c", command], cwd=scratch, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=120, check=False)
            actual = done.stdout.decode("utf-8", "replace").splitlines()
            assert matches(expected, actual), (
                f"README.md:{line}: `{command}` printed (exit {done.returncode}):\n" + "\n".join(actual)
            )
    finally:
        shutil.rmtree(scratch)


def test_a_transcript_that_drifts_does_not_match() -> None:
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"]) and matches(["a", "...", "z"], ["a", "z"])
    assert not matches(["a", "...", "z"], ["a", "b", "y"]) and not matches(["ok: 8 steps"], ["ok: 8 steps", "more"])
    assert not matches(["1 move"], ["1 moves"])
