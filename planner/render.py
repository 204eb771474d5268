"""Renderings of an analysis or a plan: text for people, JSON for programs, shell for util-linux."""

from __future__ import annotations

import shlex

from planner.analysis import Analysis
from planner.errors import PlanRefused
from planner.mountinfo import Mount
from planner.plan import Plan
from planner.steps import FORMAT, Step


def _printable(text: str) -> str:
    """Text with control characters escaped: paths come from the dumped container, so a newline in
    one must neither end a shell comment (and start a command) nor break a table row."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def propagation(mount: Mount) -> str:
    tags = [opt for opt in mount.optional if opt.split(":")[0] in ("shared", "master", "propagate_from", "unbindable")]
    return " ".join(tags) if tags else "private"


def analysis_json(analysis: Analysis) -> dict[str, object]:
    tree = analysis.tree
    covers = analysis.mount_covers
    unlisted = analysis.mount_unlisted

    def forest(depends_on: set[int]) -> dict[str, object]:
        """In a forest only: the unlisted mounts a mount's or target's reach depends on."""
        return {} if tree.stand_in is None else {"depends_on_unlisted": sorted(depends_on)}

    return {
        "source": tree.source,
        # In a forest (a chrooted process's table, a filtered table): each top and the mount the
        # table names as its parent but does not list. null for one tree.
        "forest": None if tree.stand_in is None else [
            {"top": top.mount_id, "unlisted_parent": tree.unlisted_parent[top.mount_id]} for top in tree.tops
        ],
        "mounts": [
            {
                "id": m.mount_id,
                "parent": tree.unlisted_parent.get(m.mount_id, m.parent_id),
                "mountpoint": m.mountpoint,
                "root": m.root,
                "dev": m.dev,
                "fstype": m.fstype,
                "source": m.source,
                "propagation": propagation(m),
                "hidden": m.mount_id in covers,
                "covered_by": [c.mount for c in covers.get(m.mount_id, ())],
                **forest({u for u, _ in unlisted.get(m.mount_id, ())}),
            }
            for m in tree.top_down
            if m.mount_id != tree.stand_in
        ],
        "hidden_mounts": analysis.hidden_mounts,
        "targets": [
            {
                **f.target.as_json(),
                "hidden": f.hidden,
                "covered_by": [c.mount for c in f.covers],
                "must_move": list(f.movers),
                **forest({u for u, _ in f.unlisted}),
            }
            for f in analysis.targets
        ],
        "lower_bound": analysis.lower_bound,
        "naive_moves": analysis.naive_moves,
    }


def analysis_text(analysis: Analysis) -> str:
    """A findmnt-like tree; hidden mounts and targets say what covers them."""
    tree = analysis.tree
    by_mount: dict[int, list[str]] = {}
    for finding in analysis.targets:
        t = finding.target
        state = f"HIDDEN, covered by {_ids(c.mount for c in finding.covers)}" if finding.hidden else "reachable"
        if finding.unlisted:
            state = _unknown(finding.unlisted)
        to = f" -> {_printable(t.to)}" if t.to else ""
        what = ", ".join(x for x in (t.file_type, t.access, t.rdev) if x is not None)
        kind = f"{t.kind} ({what})" if what else t.kind
        by_mount.setdefault(t.mount, []).append(f"* target {_printable(t.id)} {kind} {_printable(t.path)}{to}  [{state}]")
    rows: list[tuple[str, Mount]] = []

    # A forest prints as findmnt prints one: each top at the left margin, no stand-in line.
    stack: list[tuple[Mount, str, str]] = [(top, "", "") for top in reversed(tree.tops)]
    while stack:  # iterative, so deep trees do not hit the recursion limit
        mount, lead, branch = stack.pop()
        rows.append((lead + branch, mount))
        kids = tree.children.get(mount.mount_id, [])
        below = lead + ("│ " if branch == "├─" else "  " if branch else "")
        for index in range(len(kids) - 1, -1, -1):
            stack.append((kids[index], below, "└─" if index == len(kids) - 1 else "├─"))
    width = min(60, max(len(lead) + len(_printable(m.mountpoint)) for lead, m in rows))
    lines = [f"{'TARGET':<{width}}  {'ID':>5}  {'FSTYPE':<10} {'SOURCE':<14} {'PROPAGATION':<16} STATUS"]
    for lead, mount in rows:
        covers = analysis.mount_covers.get(mount.mount_id)
        status = f"HIDDEN, covered by {_ids(c.mount for c in covers)}" if covers else ""
        if mount.mount_id in analysis.mount_unlisted:
            status = _unknown(analysis.mount_unlisted[mount.mount_id])
        name = lead + _printable(mount.mountpoint) + (" (root deleted)" if mount.deleted else "")
        lines.append(
            f"{name:<{width}}  {mount.mount_id:>5}  {_printable(mount.fstype):<10} {_printable(mount.source) or '-':<14} {propagation(mount):<16} {status}".rstrip()
        )
        pad = " " * (len(lead) + 2)
        for note in by_mount.get(mount.mount_id, []):
            lines.append(pad + note)
    hidden_targets = sum(1 for f in analysis.targets if f.hidden)
    lines.append("")
    lines.append(
        f"{len(tree.mounts)} mounts, {len(analysis.mount_covers)} hidden; {len(analysis.targets)} targets, "
        f"{hidden_targets} hidden; mounts that must move: {analysis.lower_bound} (lower bound), "
        f"{analysis.naive_moves} if each target moved its own"
    )
    if tree.stand_in is not None:
        unlisted = sorted(set(tree.unlisted_parent.values()))
        many = len(tree.tops) > 1
        lines.append(
            f"a forest: {len(tree.tops)} {'trees, whose tops hang' if many else 'tree, whose top hangs'} from "
            f"mount{'s' if len(unlisted) > 1 else ''} {_ids(unlisted)}, not in the table"
        )
    return "\n".join(lines) + "\n"


def _unknown(unlisted: object) -> str:
    pairs = list(unlisted)  # type: ignore[call-overload]
    return "UNKNOWN, depends on " + "; ".join(
        f"mount {u} (not listed; it holds {top.mount_id} at {_printable(top.mountpoint)})" for u, top in pairs[:3]
    )


def _ids(ids: object) -> str:
    return ", ".join(str(i) for i in ids)  # type: ignore[attr-defined]


def _step_text(step: Step) -> str:
    if step.op in ("move-aside", "move-back", "keeper-bind", "rejoin-group"):
        return f"{step.op:<13} mount {step.mount}: {step.src} -> {step.to}"
    if step.op in ("make-private", "keeper-remove"):
        return f"{step.op:<13} mount {step.mount}: {step.path}"
    if step.op in ("yard-create", "yard-remove"):
        return f"{step.op:<13} {step.path}"
    extra = f" -> {step.to}" if step.to else ""
    return f"{step.op:<13} {step.target}: {step.path}{extra} (mount {step.mount})"


def plan_text(plan: Plan, source: str) -> str:
    ops = sum(1 for s in plan.steps if s.target)
    header = (
        f"plan for {source}: {ops} targets, {plan.moves} moves aside and back "
        f"(lower bound {plan.lower_bound}, naive {plan.naive_moves}), yard {plan.yard}"
    )
    lines = [header]
    for index, step in enumerate(plan.steps):
        lines.append(f"{index:>3}  {_step_text(step)}")
        if step.why:
            lines.append(f"       # {step.why}")
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, object]:
    return plan.as_json()


def plan_shell(plan: Plan, source: str, file_mounts: frozenset[int] = frozenset()) -> str:
    """util-linux commands where a step has one; a comment where the restoring process itself acts.

    Refused (PlanRefused) for a plan that must rejoin a peer group: no util-linux command does
    MOVE_MOUNT_SET_GROUP, and a script that skipped it would silently change propagation.
    """
    rejoins = [s.mount for s in plan.steps if s.op == "rejoin-group"]
    if rejoins:
        raise PlanRefused(
            f"no shell rendering: mount {rejoins[0]} must rejoin its peer group with move_mount(MOVE_MOUNT_SET_GROUP), "
            "which no util-linux command does; use --format json with a restorer that calls move_mount(2)"
        )
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        f"# {FORMAT} for {_printable(source)}: run inside the mount namespace being restored, as root.",
        "# Target steps (open, chdir, root, bind, mmap) are the restoring process's own syscalls;",
        "# they are marked where they must happen, between the moves.",
        "set -eu",
    ]
    for index, step in enumerate(plan.steps):
        lines.append(f"# {index}: {_printable(step.why)}" if step.why else f"# {index}")
        if step.op == "yard-create":
            yard = q(step.path or "")
            lines.append(f"mkdir -p {yard} && mount -t tmpfs -o mode=0700 overmount-yard {yard} && mount --make-private {yard}")
        elif step.op == "yard-remove":
            lines.append(f"umount {q(step.path or '')} && rmdir {q(step.path or '')}")
        elif step.op in ("move-aside", "move-back"):
            # A file mount moves onto a file: the kernel refuses a file onto a directory (EINVAL).
            make = "touch" if step.mount in file_mounts else "mkdir -p"
            slot = f"{make} {q(step.to or '')} && " if step.op == "move-aside" else ""
            lines.append(f"{slot}mount --move {q(step.src or '')} {q(step.to or '')}  # mount {step.mount}")
        elif step.op == "keeper-bind":
            lines.append(f"mkdir -p {q(step.to or '')} && mount --bind {q(step.src or '')} {q(step.to or '')}  # keeper of mount {step.mount}")
        elif step.op == "make-private":
            lines.append(f"mount --make-private {q(step.path or '')}  # mount {step.mount}")
        elif step.op == "keeper-remove":
            lines.append(f"umount {q(step.path or '')}  # keeper of mount {step.mount}")
        elif step.op == "mount-source":
            lines.append(f"mount --bind {q(step.path or '')} {q(step.to or '')}  # target {_printable(step.target or '')}, source in mount {step.mount}")
        else:
            call = "chroot" if step.op == "root" else step.op  # a root is set by chroot(2) (or pivot_root)
            lines.append(
                f"# no command: the restoring process does {call}({_printable(step.path or '')}) now "
                f"(target {_printable(step.target or '')}, mount {step.mount})"
            )
    return "\n".join(lines) + "\n"
