"""Every malformed input in tests/data/bad/ gets exit status 2 and one line naming the file and line.

The corpus and what each file must produce are in tests/data/bad/EXPECT.txt.
Both `analyze` and `plan` run on every file through `cli.main()` in this process,
as the console script calls it (an exception escaping `main()` is what a user
would see as a traceback). A sample, one file per error path, also runs as real
`python -m planner` subprocesses; `make stress` runs the whole corpus that way
(about 0.1 s a process). Known planner bugs are strict xfails, marked in EXPECT.txt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from planner import cli, mountinfo
from tests.conftest import HERE, REPO

BAD = os.path.join(HERE, "data", "bad")
EXPECT = os.path.join(BAD, "EXPECT.txt")


@dataclass(frozen=True)
class Expected:
    name: str
    where: str  # a line number, "-", "(mountinfo):N", "*" or "ok" (see EXPECT.txt)
    fragment: str
    xfail: str | None

    @property
    def path(self) -> str:
        """As the user types it, relative to the checkout: what the message must name."""
        return os.path.join("tests", "data", "bad", self.name)


def read_expect() -> list[Expected]:
    out = []
    with open(EXPECT, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            columns = [c.strip() for c in line.rstrip("\n").split("|")]
            name, where, fragment = columns[:3]
            xfail = columns[3].removeprefix("xfail:").strip() if len(columns) > 3 else None
            out.append(Expected(name, where, fragment, xfail))
    return out


ALL_CASES = read_expect()
CASES = [c for c in ALL_CASES if c.where != "ok"]  # refused, exit 2
ACCEPTED = [c for c in ALL_CASES if c.where == "ok"]  # what libmount parses, kept as it parses it


def params(command: str, cases: list[Expected] = CASES) -> list[object]:
    return [
        pytest.param(case, command, id=f"{command}-{case.name}",
                     marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [])
        for case in cases
    ]


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str


def run_cli(args: list[str], stdin: bytes | None = None) -> Outcome:
    done = subprocess.run([sys.executable, "-m", "planner", *args], cwd=REPO, input=stdin,
                          capture_output=True, timeout=60, check=False)
    return Outcome(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


def run_main(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """cli.main() in this process, as the console script calls it."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", ["overmount", *args])
    escaped = ""
    try:
        cli.main()
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - anything escaping main() is a traceback for the user
        status, escaped = 1, "Traceback (most recent call last):\n" + traceback.format_exc()
    captured = capsys.readouterr()
    return Outcome(status, captured.out, captured.err + escaped)


def assert_reported(case: Expected, outcome: Outcome) -> None:
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.stderr[-2000:]
    assert outcome.status == 2, outcome.stderr[-2000:]
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr[-2000:]
    message = lines[0]
    assert message.startswith(f"overmount: {case.path}"), message[:300]
    if case.where == "-":
        assert message.startswith(f"overmount: {case.path}: "), message[:300]
    elif case.where.startswith("(mountinfo):"):
        assert message.startswith(f"overmount: {case.path} {case.where}: "), message[:300]
    elif case.where != "*":
        assert message.startswith(f"overmount: {case.path}:{case.where}: "), message[:300]
    assert case.fragment in message, message[:300]


def test_the_corpus_is_complete() -> None:
    files = sorted(f for f in os.listdir(BAD) if f != "EXPECT.txt")
    assert sorted(c.name for c in ALL_CASES) == files
    assert len(files) >= 25
    kinds = {name.split("-")[0] for name in files}
    assert kinds == {"mi", "dump", "scen"}


@pytest.mark.parametrize("case, command", params("analyze") + params("plan"))
def test_bad_input_is_reported(case: Expected, command: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert_reported(case, run_main([command, case.path], capsys, monkeypatch))


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_what_libmount_parses_is_parsed_alike(case: Expected, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = run_main(["analyze", "--json", case.path], capsys, monkeypatch)
    assert (outcome.status, outcome.stderr) == (0, ""), outcome.stderr[-2000:]
    fields = {m[key] for m in json.loads(outcome.stdout)["mounts"] for key in ("root", "mountpoint")}
    assert case.fragment in fields, fields
    planned = run_main(["plan", case.path], capsys, monkeypatch)
    assert (planned.status, planned.stderr) == (0, ""), planned.stderr[-2000:]


# What findmnt (libmount) makes of the escape and empty-field cases: the same value where we accept,
# and a silently different path, or a line dropped, where we refuse (each with its reason above).
FINDMNT_SAYS = {
    "mi-backslash-888.txt": (20, "same"),
    "mi-backslash-before-9.txt": (20, "same"),
    "mi-backslash-short-octal.txt": (20, "same"),
    "mi-backslash-in-root.txt": (20, "same"),
    "mi-escape-nul.txt": (21, "/sys/a"),  # cut at the NUL
    "mi-escape-slash.txt": (20, "/sys/a/b"),  # one name became two
    "mi-bad-octal-overflow.txt": (20, "/sys/a"),  # \400 wrapped around to NUL
    "mi-empty-root.txt": (20, "dropped"),
    "mi-empty-options.txt": (20, "dropped"),
}


@pytest.mark.skipif(shutil.which("findmnt") is None, reason="util-linux findmnt is not installed")
@pytest.mark.parametrize("name", sorted(FINDMNT_SAYS))
def test_findmnt_agrees_or_would_change_the_path(name: str) -> None:
    mount_id, says = FINDMNT_SAYS[name]
    done = subprocess.run(["findmnt", "--tab-file", os.path.join(BAD, name), "-J", "-l", "-o", "ID,FSROOT,TARGET"],
                          capture_output=True, text=True, check=False)
    theirs = {fs["id"]: fs for fs in json.loads(done.stdout)["filesystems"]} if done.stdout else {}
    if says == "dropped":
        assert mount_id not in theirs and "parse error" in done.stderr, (done.stdout, done.stderr)
        return
    case = next(c for c in ALL_CASES if c.name == name)
    if says == "same":
        with open(os.path.join(BAD, name), encoding="utf-8") as handle:
            ours = {m.mount_id: m for m in mountinfo.parse(handle.read(), name)}
        assert (theirs[mount_id]["fsroot"], theirs[mount_id]["target"]) == (ours[mount_id].root, ours[mount_id].mountpoint)
        assert case.fragment in (ours[mount_id].root, ours[mount_id].mountpoint)
    else:
        assert theirs[mount_id]["target"] == says
        assert case.where != "ok"  # we refuse it, with the line


# One file per way of failing: parser, tree, decoding, target check, JSON, TOML, no line, and a crash.
SUBPROCESS_SAMPLE = ["mi-truncated-line.txt", "mi-duplicate-id.txt", "mi-invalid-utf8.txt", "mi-empty.txt",
                     "dump-target-unknown-mount.json", "dump-invalid-json.json", "dump-embedded-bad-line.json",
                     "scen-mountinfo-bad-line.toml", "dump-huge-integer.json"]


def subprocess_params(commands: tuple[str, ...], names: list[str] | None) -> list[object]:
    cases = [c for c in CASES if names is None or c.name in names]
    return [p for command in commands for p in params(command, cases)]


@pytest.fixture(scope="module")
def sample_runs() -> dict[str, Outcome]:
    """The sample through `python -m planner analyze`, side by side."""
    cases = [c for c in CASES if c.name in SUBPROCESS_SAMPLE]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip((c.name for c in cases), pool.map(lambda c: run_cli(["analyze", c.path]), cases)))


@pytest.mark.parametrize("case, command", subprocess_params(("analyze",), SUBPROCESS_SAMPLE))
def test_bad_input_is_reported_by_the_real_command(
    case: Expected, command: str, sample_runs: dict[str, Outcome]
) -> None:
    assert_reported(case, sample_runs[case.name])


def test_the_sample_covers_each_kind_of_input() -> None:
    assert {name.split("-")[0] for name in SUBPROCESS_SAMPLE} == {"mi", "dump", "scen"}
    assert set(SUBPROCESS_SAMPLE) <= {c.name for c in CASES}


def test_standard_input_is_named_with_its_line() -> None:
    with open(os.path.join(BAD, "mi-truncated-line.txt"), "rb") as handle:
        outcome = run_cli(["plan", "-"], stdin=handle.read())
    assert outcome.status == 2
    assert outcome.stderr == "overmount: <stdin>:3: too few fields (8; proc(5) needs at least 10)\n"


@pytest.mark.stress
@pytest.mark.parametrize("case, command", subprocess_params(("analyze", "plan"), None))
def test_bad_input_is_reported_by_the_real_command_stress(case: Expected, command: str) -> None:
    """Every file, both commands, as real subprocesses."""
    assert_reported(case, run_cli([command, case.path]))


GOOD_TABLE = os.path.join("tests", "data", "mountinfo", "real", "27-lxc-container-sys-stacked-partial.txt")


# Mount 253 is /sys in this table; each option is wrong in one way.
@pytest.mark.parametrize("option", [
    "x:/sys",
    "253",
    "253:",
    "-1:/sys",
    "999999:/sys",
    "253:/sys/../etc",
    "253:/proc/x",
    "253:/sys/x:mount-source=",
    pytest.param("\u00b2:/sys", id="superscript-two"),
    pytest.param("9" * 5000 + ":/sys", id="5000-digit-id"),
])
def test_bad_target_options_are_reported(option: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    outcome = run_main(["analyze", GOOD_TABLE, "--target", option], capsys, monkeypatch)
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert outcome.status == 2, outcome.stderr[-300:]
    assert len(outcome.stderr.splitlines()) == 1, outcome.stderr
    assert outcome.stderr.startswith("overmount: --target "), outcome.stderr
