"""The order targets are reached in, and what no order can do: shared by every strategy.

A target whose own chain runs through a mount others must move goes first (target_order); binds
through a visible alias first of all, mount-sources onto another target's path last, an unlinked
socket name before the live one (plan_order); two live names for one socket file are refused.
"""

from __future__ import annotations

import heapq
from collections import Counter

from planner.aliases import target_place
from planner.analysis import Analysis, TargetFinding
from planner.errors import PlanRefused
from planner.paths import is_under


def target_order(analysis: Analysis) -> list[TargetFinding]:
    """A target whose own chain runs through a mount others must move goes before them, so that
    mount moves once: a topological order over "a's chain holds m, b must move m" (a before b).

    The graph goes through the contested mounts (target -> mount -> target), so it stays as big
    as the chains and mover lists, never targets squared. Where the constraints form a cycle,
    the earliest waiting target goes next and its conflicts cost a re-move.
    """
    tree = analysis.tree
    findings = [f for f in analysis.targets if f.alias is None]
    movers = {m for f in findings for m in f.movers}
    holders: dict[int, list[int]] = {}  # contested mount -> targets whose chain holds it
    for index, finding in enumerate(findings):
        for mount in tree.chain(finding.target.mount):
            if mount.mount_id in movers:
                holders.setdefault(mount.mount_id, []).append(index)
    blocked_by = [sum(1 for m in f.movers if m in holders) for f in findings]
    waiting_on = {m: len(h) for m, h in holders.items()}
    needers: dict[int, list[int]] = {}
    for index, finding in enumerate(findings):
        for mover in finding.movers:
            if mover in holders:
                needers.setdefault(mover, []).append(index)
    ready = [i for i, n in enumerate(blocked_by) if n == 0]
    heapq.heapify(ready)
    done = [False] * len(findings)
    order: list[TargetFinding] = []
    while len(order) < len(findings):
        if not ready:  # a cycle: take the earliest target still waiting
            heapq.heappush(ready, next(i for i, d in enumerate(done) if not d))
        index = heapq.heappop(ready)
        if done[index]:
            continue
        done[index] = True
        order.append(findings[index])
        for mount in tree.chain(findings[index].target.mount):
            if mount.mount_id not in waiting_on:
                continue
            waiting_on[mount.mount_id] -= 1
            if waiting_on[mount.mount_id] == 0:
                for needer in needers.get(mount.mount_id, ()):
                    blocked_by[needer] -= 1
                    if blocked_by[needer] == 0 and not done[needer]:
                        heapq.heappush(ready, needer)
    return order


def plan_order(analysis: Analysis) -> list[TargetFinding]:
    """Bind targets served by an alias first, while the tree is as dumped (their paths lead into
    the alias there); then the others in target_order. Within one socket file, names the dump
    says were unlinked are bound (and unlinked again) before the live one."""
    aliased = [f for f in analysis.targets if f.alias is not None]
    return unlinked_first(aliased + binds_last(target_order(analysis)))


def same_socket_files(analysis: Analysis) -> list[list[TargetFinding]]:
    """Bind targets naming one socket file (through one mount or two), groups of two or more."""
    findings = {f.target.id: f for f in analysis.targets}
    groups: list[list[TargetFinding]] = []
    seen: set[str] = set()
    for finding in analysis.targets:
        if finding.target.kind != "bind" or finding.target.id in seen or not finding.same_file:
            continue
        group = [finding] + [findings[i] for i in finding.same_file if findings[i].target.kind == "bind"]
        seen.update(f.target.id for f in group)
        if len(group) > 1:
            groups.append(group)
    return groups


def refuse_duplicate_binds(analysis: Analysis) -> None:
    """Two live names for one socket file cannot both be bound: the second bind(2) fails with
    EADDRINUSE. A name the dump says was unlinked can (it is bound and unlinked again first)."""
    for group in same_socket_files(analysis):
        live = [f.target for f in group if not f.target.unlinked]
        if len(live) > 1:
            first, second = live[0], live[1]
            place = target_place(analysis.tree, first)
            where = f" ({place[0]} {place[1]})" if place is not None else ""
            raise PlanRefused(
                f"targets {first.id} and {second.id} name the same socket file{where}, {first.path} in mount "
                f"{first.mount} and {second.path} in mount {second.mount}: only one can be bound (the other's "
                "bind(2) fails with EADDRINUSE); a name the dumped process had unlinked must say \"unlinked\": true"
            )


def unlinked_first(order: list[TargetFinding]) -> list[TargetFinding]:
    """`order`, with the unlinked names of each socket file moved just before its live name."""
    by_id = {f.target.id: f for f in order}
    early: dict[str, list[TargetFinding]] = {}  # live target id -> its unlinked twins
    for finding in order:
        target = finding.target
        if target.kind == "bind" and not target.unlinked:
            twins = [by_id[i] for i in finding.same_file if by_id[i].target.kind == "bind" and by_id[i].target.unlinked]
            if twins:
                early[target.id] = twins
    if not early:
        return order
    moved = {f.target.id for twins in early.values() for f in twins}
    out: list[TargetFinding] = []
    for finding in order:
        if finding.target.id in moved:
            continue
        out.extend(early.get(finding.target.id, ()))
        out.append(finding)
    return out


def binds_last(order: list[TargetFinding]) -> list[TargetFinding]:
    """`order`, with each mount-source whose `to` lies on another target's path moved to the end:
    from its bind on, that path leads into the new mount.

    Each target path is tested only at the lengths some `to` has, never through all its ancestors
    (a set of every ancestor of 100 paths 2,000 directories deep held 400 MB)."""
    tos = {f.target.to for f in order if f.target.kind == "mount-source" and f.target.to is not None}
    if not tos:
        return order
    lengths = sorted({len(to) for to in tos})
    under: Counter[str] = Counter()  # `to` -> how many target paths lie under it
    for finding in order:
        path = finding.target.path
        for n in lengths:
            if n > len(path):
                break
            if (n == 1 or n == len(path) or path[n] == "/") and path[:n] in tos:
                under[path[:n]] += 1
    later = [
        f for f in order
        if f.target.kind == "mount-source" and f.target.to is not None
        and under[f.target.to] - is_under(f.target.path, f.target.to) > 0
    ]
    if not later:
        return order
    deferred = {id(f) for f in later}
    return [f for f in order if id(f) not in deferred] + later
