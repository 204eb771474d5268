"""No recursion on input depth: a stack of a thousand mounts on one path, a chain as deep as PATH_MAX allows.

Each runs with the interpreter's recursion limit cut to a little above the test's own depth:
any function of the core that recursed once per mount of a stack, per parent of a chain or per
master of a propagation chain would hit it. `run` of the same inputs is in
tests/namespace/test_replica.py.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner import render
from planner.analysis import analyze
from planner.check import check_plan
from planner.mountinfo import parse
from planner.plan import make_plan
from planner.simulate import Namespace
from planner.targets import Target
from planner.tree import MountTree

ROOT = "1 0 8:1 / / rw - ext4 /dev/vda rw"


def stacked(depth: int) -> str:
    """`depth` tmpfs stacked on /srv, each the parent of the next: the target in the lowest is under all."""
    lines = [ROOT, "2 1 0:20 / /srv rw - tmpfs srv rw"]
    lines += [f"{i} {i - 1} 0:{20 + i} / /srv rw - tmpfs s{i} rw" for i in range(3, depth + 3)]
    return "\n".join(lines) + "\n"


def chained(depth: int) -> str:
    """`depth` mounts each on a directory of the one before: /a, /a/a, /a/a/a, ... covered at the top."""
    lines = [ROOT]
    path = ""
    for i in range(2, depth + 2):
        path += "/a"
        lines.append(f"{i} {i - 1} 0:{20 + i} / {path} rw - tmpfs s{i} rw")
    lines.append(f"{depth + 2} 2 0:9 / /a rw - tmpfs cover rw")  # stacked on the first: covers the chain
    return "\n".join(lines) + "\n"


@pytest.fixture
def shallow_stack() -> Iterator[None]:
    """The recursion limit a little above where the test stands."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def plan_and_check(table: str, target: Target) -> tuple[int, list[str]]:
    tree = MountTree(parse(table), "<deep>")
    analysis = analyze(tree, [target])
    render.analysis_text(analysis)
    render.analysis_json(analysis)
    plan = make_plan(tree, [target])
    render.plan_text(plan, "<deep>")
    render.plan_shell(plan, "<deep>")
    return plan.moves, check_plan(tree, [target], list(plan.steps))


def test_a_stack_of_a_thousand_mounts_on_one_path(shallow_stack: None) -> None:
    depth = 1000
    moves, problems = plan_and_check(stacked(depth), Target("t1", "open", 2, "/srv/f"))
    assert (moves, problems) == (depth, [])


def test_a_chain_as_deep_as_path_max_allows(shallow_stack: None) -> None:
    depth = 2000  # /a repeated: 4,000 bytes, the deepest path a table can name
    target = Target("t1", "open", depth + 1, "/a" * depth + "/f")
    moves, problems = plan_and_check(chained(depth), target)
    assert (moves, problems) == (1, [])


def test_a_stack_of_five_thousand_mounts_plans_and_checks_in_linear_steps() -> None:
    """The symbolic namespace keeps each stack's top across the moves that take it apart."""
    moves, problems = plan_and_check(stacked(5000), Target("t1", "open", 2, "/srv/f"))
    assert (moves, problems) == (5000, [])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_kept_stack_tops_agree_with_climbing(data: st.DataObject) -> None:
    """After any run of moves (one mount, or one carrying its stack, onto a root or a place, side by
    side or not), each mount's top and subtree are what a plain climb of the tree finds."""
    lines = [ROOT, "2 1 0:2 / /a rw - tmpfs a rw", "3 1 0:3 / /b rw - tmpfs b rw"]
    at = {1: "/", 2: "/a", 3: "/b"}
    for mount_id in range(4, 4 + data.draw(st.integers(2, 14))):
        parent = data.draw(st.integers(1, mount_id - 1))
        # Mostly on the parent's root (a stack), sometimes on a place inside it; listed twice on
        # one place of one parent now and then (legacy side-by-side siblings).
        inside = data.draw(st.sampled_from(["", "", "", "/c"]))
        at[mount_id] = "/a" if at[parent] == "/" else at[parent] + inside
        lines.append(f"{mount_id} {parent} 0:{mount_id} / {at[mount_id]} rw - tmpfs m{mount_id} rw")
    tree = MountTree(parse("\n".join(lines) + "\n"), "<stacks>")
    ns = Namespace(tree)
    movable = [m.mount_id for m in tree.mounts if m is not tree.root]
    for _ in range(data.draw(st.integers(1, 12))):
        mount = data.draw(st.sampled_from(movable))
        if ns.parent[mount] is None:
            continue
        where = data.draw(st.sampled_from(["/a", "/b", "/a/c", "/b/c", "/a/c/c"]))
        ns.detach(mount)
        landing = ns.walk(where)
        if ns.in_subtree(landing.mount, mount):
            ns.attach_at(mount, ns.walk("/"))
        else:
            ns.attach_at(mount, landing)
        for one in movable + [tree.root.mount_id]:
            assert ns.top_of(one) == ns._climb(one)
            for other in movable:
                climbed: int | None = one
                while climbed is not None and climbed != other:
                    climbed = ns.parent[climbed]
                assert ns.in_subtree(one, other) == (climbed == other)
