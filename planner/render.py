"""Renderings of an analysis or a plan: text for people, JSON for programs, shell for util-linux."""

from __future__ import annotations

import shlex

from planner.analysis import Analysis
from planner.errors import PlanRefused
from planner.mountinfo import Mount
from planner.plan import Plan
from planner.steps import FORMAT, Step


def printable(text: str) -> str:
    """Text with every character that is not printable escaped as Python would (\\x1b, \\n, \\u202e).

    Paths, ids and sources come from the dumped container: an escape sequence in one must not
    reach a terminal (even through a pipe, or in an error message), a newline must neither end
    a shell comment (and start a command) nor break a table row, and a lone surrogate must not
    stop the output. Applied to every line of text the tool prints.
    """
    if text.isprintable():
        return text
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
        to = f" -> {printable(t.to)}" if t.to else ""
        what = ", ".join(x for x in (t.file_type, t.access, t.rdev) if x is not None)
        kind = f"{t.kind} ({what})" if what else t.kind
        by_mount.setdefault(t.mount, []).append(f"* target {printable(t.id)} {kind} {printable(t.path)}{to}  [{state}]")
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
    width = min(60, max(len(lead) + len(printable(m.mountpoint)) for lead, m in rows))
    lines = [f"{'TARGET':<{width}}  {'ID':>5}  {'FSTYPE':<10} {'SOURCE':<14} {'PROPAGATION':<16} STATUS"]
    for lead, mount in rows:
        covers = analysis.mount_covers.get(mount.mount_id)
        status = f"HIDDEN, covered by {_ids(c.mount for c in covers)}" if covers else ""
        if mount.mount_id in analysis.mount_unlisted:
            status = _unknown(analysis.mount_unlisted[mount.mount_id])
        name = lead + printable(mount.mountpoint) + (" (root deleted)" if mount.deleted else "")
        lines.append(
            f"{name:<{width}}  {mount.mount_id:>5}  {printable(mount.fstype):<10} {printable(mount.source) or '-':<14} {propagation(mount):<16} {status}".rstrip()
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
    return "\n".join(printable(line) for line in lines) + "\n"  # fields are escaped already; nothing slips by


def _unknown(unlisted: object) -> str:
    pairs = list(unlisted)  # type: ignore[call-overload]
    return "UNKNOWN, depends on " + "; ".join(
        f"mount {u} (not listed; it holds {top.mount_id} at {printable(top.mountpoint)})" for u, top in pairs[:3]
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
    lines = [printable(header)]
    for index, step in enumerate(plan.steps):
        lines.append(printable(f"{index:>3}  {_step_text(step)}"))
        if step.why:
            lines.append(printable(f"       # {step.why}"))
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, object]:
    return plan.as_json()


def plan_shell(plan: Plan, source: str, file_mounts: frozenset[int] = frozenset()) -> str:
    """util-linux commands where a step has one; a comment where the restoring process itself acts.

    The script does what the executor does: it removes only what it made (the yard's tmpfs, and
    of the yard's directory and its parents only those it created), and on any failure (a
    command failing under `set -e`, or SIGINT/SIGTERM/SIGHUP) an EXIT trap puts every parked
    mount back and undoes every bind it made, newest first, then exits with the failure's status.
    Each undo is guarded by a flag set right after the command it undoes succeeded. Paths from
    the dump are quoted, or built with printf when they hold characters that are not printable,
    so the script itself is plain text; a path any of whose components is a symlink is refused.

    Refused (PlanRefused) for a plan that must rejoin a peer group: no util-linux command does
    MOVE_MOUNT_SET_GROUP, and a script that skipped it would silently change propagation.
    """
    rejoins = [s.mount for s in plan.steps if s.op == "rejoin-group"]
    if rejoins:
        raise PlanRefused(
            f"no shell rendering: mount {rejoins[0]} must rejoin its peer group with move_mount(MOVE_MOUNT_SET_GROUP), "
            "which no util-linux command does; use --format json with a restorer that calls move_mount(2)"
        )
    return _ShellScript(file_mounts).render(plan, source)


class _ShellScript:
    def __init__(self, file_mounts: frozenset[int]) -> None:
        self.file_mounts = file_mounts
        self.words: dict[str, str] = {}  # path -> the shell word that stands for it
        self.assignments: list[str] = []  # variables for paths that hold characters not printable
        self.flags: list[str] = []  # one per thing the script makes, in the order it makes them
        self.undo: list[str] = []  # the command undoing each, same order
        self.parked: dict[str, str] = {}  # yard slot -> the flag of the mount parked there
        self.made_dirs: dict[str, list[tuple[str, str]]] = {}  # yard -> [(directory, its flag)]

    def q(self, path: str) -> str:
        """`path` as one shell word that yields exactly its bytes."""
        word = self.words.get(path)
        if word is None:
            if path.isprintable():
                word = shlex.quote(path)
            else:
                # printf %b turns \0ooo into the byte; the trailing '_' keeps a trailing newline.
                name = f"om_path{len(self.assignments)}"
                octal = "".join(
                    ch if ch.isprintable() and ch not in "\\'" else
                    "".join(f"\\0{b:03o}" for b in ch.encode("utf-8", "surrogateescape"))
                    for ch in path
                )
                self.assignments.append(f"{name}=$(printf '%b_' '{octal}'); {name}=${{{name}%_}}")
                word = f'"${name}"'
            self.words[path] = word
        return word

    def made(self, undo: str) -> str:
        """A new flag for something the script is about to make; `undo` takes it away again."""
        flag = f"om_made{len(self.flags)}"
        self.flags.append(flag)
        self.undo.append(f"if [ \"${flag}\" = 1 ]; then {undo}; fi")
        return flag

    def render(self, plan: Plan, source: str) -> str:
        body: list[str] = []
        for index, step in enumerate(plan.steps):
            body.append(f"# {index}: {printable(step.why)}" if step.why else f"# {index}")
            body.extend(self.step(step))
        head = [
            "#!/bin/sh",
            f"# {FORMAT} for {printable(source)}: run inside the mount namespace being restored, as root.",
            "# Target steps (open, chdir, root, bind, mmap) are the restoring process's own syscalls;",
            "# they are marked where they must happen, between the moves.",
            "# On any failure the EXIT trap puts every parked mount back, newest first, and removes",
            "# only what this script made.",
            "set -eu",
            *self.assignments,
            " ".join(f"{flag}=0" for flag in self.flags) or ":",
            "om_nolinks() {  # the plan names mounts by path: a symlink on the way would lead elsewhere",
            "    om_p=$1",
            "    while [ -n \"$om_p\" ] && [ \"$om_p\" != / ]; do",
            "        if [ -L \"$om_p\" ]; then echo \"overmount: refusing a symlink on the way: $om_p\" >&2; return 1; fi",
            "        om_p=${om_p%/*}",
            "    done",
            "}",
            "om_undo() {",
            "    om_status=$?",
            "    trap - EXIT INT TERM HUP",
            "    [ \"$om_status\" -ne 0 ] || exit 0",
            "    set +e",
            "    echo \"overmount: failed (status $om_status): putting parked mounts back, newest first\" >&2",
            *(f"    {line}" for line in reversed(self.undo)),
            "    exit \"$om_status\"",
            "}",
            "trap om_undo EXIT",
            "trap 'exit 129' HUP",
            "trap 'exit 130' INT",
            "trap 'exit 143' TERM",
        ]
        return "\n".join(head + body) + "\n"

    def step(self, step: Step) -> list[str]:
        q = self.q
        op = step.op
        if op == "yard-create":
            assert step.path is not None
            out = [f"om_nolinks {q(step.path)}"]
            made = []
            for directory in _ancestors(step.path):
                flag = self.made(f"rmdir {q(directory)}")
                made.append((directory, flag))
                out.append(f"if [ ! -d {q(directory)} ]; then mkdir -m 0700 {q(directory)}; {flag}=1; fi")
            self.made_dirs[step.path] = made
            flag = self.made(f"umount {q(step.path)}")
            out.append(f"mount -t tmpfs -o mode=0700 overmount-yard {q(step.path)}; {flag}=1")
            out.append(f"mount --make-private {q(step.path)}")
            self.parked[step.path] = flag  # the yard's own flag, for yard-remove
            return out
        if op == "yard-remove":
            assert step.path is not None
            out = [f"umount {q(step.path)}; {self.parked.pop(step.path)}=0"]
            for directory, flag in reversed(self.made_dirs.pop(step.path, [])):
                out.append(f"if [ \"${flag}\" = 1 ]; then rmdir {q(directory)}; {flag}=0; fi")
            return out
        if op == "move-aside":
            assert step.src is not None and step.to is not None
            # A file mount moves onto a file: the kernel refuses a file onto a directory (EINVAL).
            make = f": > {q(step.to)}" if step.mount in self.file_mounts else f"mkdir -m 0700 {q(step.to)}"
            flag = self.made(f"mount --move {q(step.to)} {q(step.src)}")
            self.parked[step.to] = flag
            return [f"om_nolinks {q(step.src)}; om_nolinks {q(step.to)}", make,
                    f"mount --move {q(step.src)} {q(step.to)}; {flag}=1  # mount {step.mount}"]
        if op == "move-back":
            assert step.src is not None and step.to is not None
            flag = self.parked.pop(step.src, "")
            back = f"; {flag}=0" if flag else ""
            return [f"om_nolinks {q(step.src)}; om_nolinks {q(step.to)}",
                    f"mount --move {q(step.src)} {q(step.to)}{back}  # mount {step.mount}"]
        if op == "keeper-bind":  # never reached: a plan with keepers rejoins a group, refused above
            return [f"mkdir -p {q(step.to or '')} && mount --bind {q(step.src or '')} {q(step.to or '')}  # keeper of mount {step.mount}"]
        if op == "make-private":
            return [f"mount --make-private {q(step.path or '')}  # mount {step.mount}"]
        if op == "keeper-remove":
            return [f"umount {q(step.path or '')}  # keeper of mount {step.mount}"]
        if op == "mount-source":
            assert step.path is not None and step.to is not None
            flag = self.made(f"umount {q(step.to)}")
            return [f"om_nolinks {q(step.path)}; om_nolinks {q(step.to)}",
                    (f"mount --bind {q(step.path)} {q(step.to)}; {flag}=1  # target {printable(step.target or '')}, "
                    f"source in mount {step.mount}")]
        call = "chroot" if step.op == "root" else step.op  # a root is set by chroot(2) (or pivot_root)
        return [
            (f"# no command: the restoring process does {call}({printable(step.path or '')}) now "
            f"(target {printable(step.target or '')}, mount {step.mount})")
        ]


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b', '/a/b/c']: outermost first."""
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
