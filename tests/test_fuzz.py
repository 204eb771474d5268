"""Fuzzing the pure core: whatever bytes come in, only a PlannerError may come out.

Each example is written to a file and goes the way the CLI takes it: dump.load,
MountTree, analyze, make_plan, and the renderings the commands print. A plan
that is made must also pass check. Three sources of input: raw bytes, real
mountinfo tables (tests/data/mountinfo/real/) mutated byte- and field-wise, and
overmount-dump/1 JSON built around those mutated tables with targets that
mostly make sense (so the analysis and the planner get exercised, not just the
parser).

The default run is small; `make stress` runs the same bodies with many more
examples and records what happened in bench/results/reliability.json.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner import render
from planner.analysis import analyze
from planner.check import check_plan
from planner.errors import PlannerError, PlanRefused
from planner.inputs import load
from planner.plan import make_plan
from planner.progress import Progress
from planner.targets import KINDS
from planner.tree import MountTree
from tests.conftest import SAMPLES, counted
from tests.reliability import record

REAL = sorted(glob.glob(os.path.join(SAMPLES, "real", "*.txt")))


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


REAL_TABLES = [_read(p) for p in REAL]
DEFAULT_EXAMPLES = 200
STRESS_EXAMPLES = 20000

# Bytes a mountinfo parser has opinions about: separators, escapes, digits, NUL, invalid UTF-8.
INTERESTING = [b" ", b" - ", b"-", b"\\", b"\\040", b"\\04", b"\\9", b"\\134", b"0", b"7", b"9", b":", b"/", b"/..",
               b"\n", b"\r", b"\t", b"\x00", b"\xff", b"\xc3", b"shared:1", b"master:2", b"\\040(deleted)", b"\xd9\xa1"]


def run_pipeline(path: str) -> str:
    """Load, model, analyse, plan, render; return 'planned' or the PlannerError class name."""
    try:
        dump = load(path)
        tree = MountTree(dump.mounts, dump.source)
        analysis = analyze(tree, dump.targets)
        render.analysis_text(analysis)
        json.dumps(render.analysis_json(analysis))
        plan = make_plan(tree, dump.targets)
    except PlannerError as err:  # the only thing allowed out
        return type(err).__name__
    assert check_plan(tree, dump.targets, list(plan.steps)) == []
    assert plan.moves >= plan.lower_bound
    render.plan_text(plan, dump.source)
    try:
        render.plan_shell(plan, dump.source)
    except PlanRefused:  # a plan that must rejoin a peer group has no shell rendering, and says so
        assert any(s.op == "rejoin-group" for s in plan.steps)
    json.dumps(render.plan_json(plan))
    return "planned"


# --- strategies ---------------------------------------------------------------------------


def mutate(data: bytes, draw: Callable[[Any], Any]) -> bytes:
    """One byte-level or line-level mutation of a mountinfo text."""
    lines = data.split(b"\n")
    how = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "dup-line", "swap-lines", "drop-line",
                                "field-swap", "parent", "mountpoint", "id"]))
    if how in ("insert", "delete", "replace", "truncate"):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "insert":
            return data[:at] + draw(st.sampled_from(INTERESTING) | st.binary(max_size=4)) + data[at:]
        if how == "delete":
            return data[:at] + data[at + draw(st.integers(1, 12)):]
        if how == "replace":
            return data[:at] + draw(st.sampled_from(INTERESTING)) + data[at + 1:]
        return data[:at]
    body = [i for i, line in enumerate(lines) if line]
    if not body:
        return data
    i = draw(st.sampled_from(body))
    j = draw(st.sampled_from(body))
    fields_i, fields_j = lines[i].split(b" "), lines[j].split(b" ")
    if how == "dup-line":
        lines.insert(j, lines[i])
    elif how == "swap-lines":
        lines[i], lines[j] = lines[j], lines[i]
    elif how == "drop-line":
        del lines[i]
    elif how == "field-swap":
        k = draw(st.integers(0, min(len(fields_i), len(fields_j)) - 1))
        fields_i[k] = fields_j[k]
        lines[i] = b" ".join(fields_i)
    elif how == "parent" and len(fields_i) > 1:
        # re-parent onto another mount of the table: cycles, stacks, strays
        fields_i[1] = fields_j[0]
        lines[i] = b" ".join(fields_i)
    elif how == "mountpoint" and len(fields_i) > 4 and len(fields_j) > 4:
        # another mount's mount point: shadows, stacks, children outside their parent
        fields_i[4] = fields_j[4]
        lines[i] = b" ".join(fields_i)
    elif how == "id":
        fields_i[0] = fields_j[0] if draw(st.booleans()) else str(draw(st.integers(-3, 10**6))).encode()
        lines[i] = b" ".join(fields_i)
    return b"\n".join(lines)


def _loose_mounts(data: bytes) -> list[tuple[int, int, bytes]]:
    """(id, parent id, line) of each line that looks like a mount, without the parser under test."""
    out = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) > 1 and fields[0].isdigit() and fields[1].isdigit():
            out.append((int(fields[0]), int(fields[1]), line))
    return out


@st.composite
def mutated_tables(draw: Callable[[Any], Any], max_mutations: int = 4) -> bytes:
    """A real table, or a part of it closed under parents (so still a tree), mutated 0..N times."""
    table = draw(st.sampled_from(REAL_TABLES))
    if draw(st.booleans()):
        mounts = _loose_mounts(table)
        parents = {mount_id: parent for mount_id, parent, _ in mounts}
        keep: set[int] = set()
        for mount_id in draw(st.lists(st.sampled_from(sorted(parents)), min_size=1, max_size=12)):
            while mount_id in parents and mount_id not in keep:
                keep.add(mount_id)
                mount_id = parents[mount_id]
        table = b"".join(line + b"\n" for mount_id, _, line in mounts if mount_id in keep)
    data = table
    for _ in range(draw(st.integers(0, max_mutations))):
        data = mutate(data, draw)
    return data


def _unescape_loosely(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# Wrong values for one key of a target: each must end in a TargetError or DumpError, never a crash.
SPOILERS: dict[str, list[Any]] = {
    "id": ["t0", "", 7],
    "kind": ["ioctl", "", None],
    "mount": [-1, 0, 10**6, "1", True, 1.5],
    "path": ["", "rel", "/a/../b", "/./x", "//x", "/x/", "/a\x00b", "/"],
    "to": ["rel", "/a/../b", "", 3, "/"],
    # Valid values too: whether they fit the kind is for the reader to say (a chdir into a fifo).
    "file_type": ["tty", "", 3, None, "fifo", "directory", "socket", "char"],
    "access": ["rw", 2, "read-write", "path", "write-only"],
    "rdev": ["1", "4096:0", "1:1048576", "1:3", 259, "-1:2", "1:3:4"],
}


@st.composite
def tables_with_targets(draw: Callable[[Any], Any]) -> tuple[str, list[dict[str, Any]]]:
    """A (maybe mutated) real table and targets aimed at its mounts, mostly well-formed."""
    data = draw(mutated_tables(max_mutations=draw(st.sampled_from([0, 0, 1, 2]))))
    text = data.decode("utf-8", "replace")
    mounts = []
    for line in text.split("\n"):
        fields = line.split(" ")
        if len(fields) > 4 and fields[0].isdigit():
            mounts.append((int(fields[0]), _unescape_loosely(fields[4])))
    parts = st.sampled_from(["f", "dev", "sys", "cgroup", "fs", "a b", "run", "proc"])
    targets: list[dict[str, Any]] = []
    for index in range(draw(st.integers(0, 6)) if mounts else 0):
        mount_id, mountpoint = draw(st.sampled_from(mounts))
        tail = draw(st.lists(parts, max_size=3))
        path = mountpoint.rstrip("/") + "".join("/" + part for part in tail) if tail else mountpoint
        kind = draw(st.sampled_from(KINDS))
        target: dict[str, Any] = {"id": f"t{index}", "kind": kind, "mount": mount_id, "path": path}
        if target["kind"] == "mount-source":
            target["to"] = draw(st.sampled_from(["/mnt/x", "/srv/b c"]))
        targets.append(target)
    if draw(st.integers(0, 3)) == 0:  # spoil one target, one way
        if not targets:
            targets.append({"id": "t9", "kind": "open", "mount": 1, "path": "/"})
        spoilt: dict[str, Any] = draw(st.sampled_from(targets))
        key = draw(st.sampled_from(["id", "kind", "mount", "path", "to", "file_type", "access", "rdev", "missing"]))
        if key == "missing":
            del spoilt[draw(st.sampled_from(sorted(spoilt)))]
        else:
            spoilt[key] = draw(st.sampled_from(SPOILERS[key] + ([spoilt["path"] + "/.."] if key == "path" else [])))
    return text, targets


@st.composite
def dump_json(draw: Callable[[Any], Any]) -> bytes:
    """overmount-dump/1 JSON around tables_with_targets; now and then the envelope goes wrong."""
    text, targets = draw(tables_with_targets())
    doc: dict[str, Any] = {"format": "overmount-dump/1", "mountinfo": text, "targets": targets}
    if draw(st.integers(0, 9)) == 0:
        key = draw(st.sampled_from(["format", "mountinfo", "targets", "file_mounts"]))
        doc[key] = draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2))
    out = json.dumps(doc, indent=draw(st.sampled_from([None, 1, 2])))
    if draw(st.integers(0, 19)) == 0:
        out = out[: draw(st.integers(0, len(out)))]
    return out.encode("utf-8", "surrogatepass")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return '""'


@st.composite
def scenario_toml(draw: Callable[[Any], Any]) -> bytes:
    """A scenario file: the table in a literal multi-line string, then [[targets]] tables."""
    text, targets = draw(tables_with_targets())
    out = ['title = "fuzz"', "mountinfo = '''", text.rstrip("\n"), "'''"]
    for target in targets:
        out += ["", "[[targets]]"] + [f"{key} = {_toml_value(value)}" for key, value in target.items()]
    data = "\n".join(out) + "\n"
    if draw(st.integers(0, 19)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data.encode("utf-8", "surrogatepass")


SUFFIXES = [".txt", ".json", ".toml", ""]


@st.composite
def raw_inputs(draw: Callable[[Any], Any]) -> tuple[str, bytes]:
    data = draw(st.binary(max_size=400) | st.text(alphabet=" -:/\\0179abshared\n\t", max_size=200).map(str.encode))
    return draw(st.sampled_from(SUFFIXES)), data


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


def fuzz(strategy: st.SearchStrategy[tuple[str, bytes]], scratch: str, examples: int,
         tick: Callable[[], None] = lambda: None) -> Counter[str]:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(strategy)
    def body(case: tuple[str, bytes]) -> None:
        tick()
        suffix, data = case
        path = os.path.join(scratch, "input" + suffix)
        with open(path, "wb") as handle:
            handle.write(data)
        outcomes[run_pipeline(path)] += 1

    body()
    return outcomes


STRATEGIES: dict[str, st.SearchStrategy[tuple[str, bytes]]] = {
    "raw-bytes": raw_inputs(),
    "mutated-mountinfo": st.tuples(st.just(".txt"), mutated_tables()),
    "dump-json": st.tuples(st.just(".json"), dump_json()),
    "scenario-toml": st.tuples(st.just(".toml"), scenario_toml()),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_only_planner_errors_escape(name: str, scratch: str) -> None:
    outcomes = fuzz(STRATEGIES[name], scratch, DEFAULT_EXAMPLES)
    assert sum(outcomes.values()) > 0


def test_unmutated_real_tables_plan(scratch: str) -> None:
    for path in REAL:
        assert run_pipeline(path) == "planned", path


@pytest.mark.stress
def test_only_planner_errors_escape_stress(scratch: str, progress: Progress) -> None:
    summary: dict[str, Any] = {}
    for name, strategy in STRATEGIES.items():
        started = time.monotonic()
        outcomes = fuzz(strategy, scratch, STRESS_EXAMPLES, counted(progress, f"fuzz, {name}", STRESS_EXAMPLES))
        summary[name] = {"examples": sum(outcomes.values()), "outcomes": dict(sorted(outcomes.items())),
                         "other_exceptions": 0, "seconds": round(time.monotonic() - started, 1)}
    record("fuzz", summary)

