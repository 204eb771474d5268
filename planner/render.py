"""Renderings: an analysis or a plan as text for people, JSON for programs and shell for util-linux;
the reports of run and recover as text (their JSON is the report itself)."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from planner.analysis import Analysis, TargetFinding
from planner.errors import PlanRefused
from planner.mountinfo import Mount
from planner.plan import Plan
from planner.progress import Progress, every, quiet
from planner.steps import FORMAT, TARGET_OPS, Step
from planner.targets import KINDS


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


_PROPAGATION_TAGS = ("shared:", "master:", "propagate_from:")


def propagation(mount: Mount) -> str:
    tags = [opt for opt in mount.optional if opt.startswith(_PROPAGATION_TAGS) or opt == "unbindable"]
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
                "alias": f.alias,
                "same_file": list(f.same_file),
                **forest({u for u, _ in f.unlisted}),
            }
            for f in analysis.targets
        ],
        "lower_bound": analysis.lower_bound,
        "lower_bound_with_aliases": analysis.lower_bound_with_aliases,
        "naive_moves": analysis.naive_moves,
    }


@dataclass(frozen=True)
class TableStyle:
    """How a table is drawn: tree bars in box-drawing characters or, where standard output cannot
    show them, in ASCII (findmnt's fallback); `width`, when set, is the terminal's, to fit into."""

    unicode: bool = True
    width: int | None = None

    @property
    def branch(self) -> str:
        return "├─" if self.unicode else "|-"

    @property
    def last(self) -> str:
        return "└─" if self.unicode else "`-"

    @property
    def bar(self) -> str:
        return "│ " if self.unicode else "| "

    @property
    def ellipsis(self) -> str:
        return "…" if self.unicode else "..."


def plural(count: int, noun: str) -> str:
    """'1 move', '3 moves'; 'target' -> 'targets'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def analysis_text(analysis: Analysis, show_all: bool = False, style: TableStyle = TableStyle(),
                  progress: Progress = quiet) -> str:
    """A findmnt-like tree; hidden mounts and targets say what covers them.

    Columns are as wide as their widest cell, so a long source does not push the others out of
    line; with style.width set (a terminal), SOURCE is cut with an ellipsis to keep STATUS in view.
    Targets are listed under their mount, inside the tree's bars; those not hidden are counted
    in one line per mount unless show_all.
    """
    tree = analysis.tree
    by_mount: dict[int, list[TargetFinding]] = {}
    for finding in analysis.targets:
        by_mount.setdefault(finding.target.mount, []).append(finding)

    # (tree prefix of the mount's line, prefix of the lines under it, the mount)
    rows: list[tuple[str, str, Mount]] = []
    # A forest prints as findmnt prints one: each top at the left margin, no stand-in line.
    stack: list[tuple[Mount, str, str]] = [(top, "", "") for top in reversed(tree.tops)]
    while stack:  # iterative, so deep trees do not hit the recursion limit
        mount, lead, branch = stack.pop()
        below = lead + (style.bar if branch == style.branch else "  " if branch else "")
        rows.append((lead + branch, below, mount))
        kids = tree.children.get(mount.mount_id, [])
        for index in range(len(kids) - 1, -1, -1):
            stack.append((kids[index], below, style.last if index == len(kids) - 1 else style.branch))

    header = ("TARGET", "ID", "FSTYPE", "SOURCE", "PROPAGATION", "STATUS")
    cells = [header]
    covered, depends = analysis.find_hidden(progress), analysis.mount_unlisted
    every_so_often = every(len(rows))
    for done, (lead, _below, mount) in enumerate(rows):
        if done % every_so_often == 0:
            progress("writing the tree", done, len(rows))
        covers = covered.get(mount.mount_id)
        status = f"HIDDEN, covered by {_ids(c.mount for c in covers)}" if covers else ""
        if depends and mount.mount_id in depends:
            status = _unknown(depends[mount.mount_id])
        name = lead + printable(mount.mountpoint) + (" (root deleted)" if mount.deleted else "")
        cells.append((name, str(mount.mount_id), printable(mount.fstype), printable(mount.source) or "-",
                      propagation(mount), status))
    progress("writing the tree", len(rows), len(rows))
    columns = list(zip(*cells))
    widths = [max(map(len, column)) for column in columns[:-1]]
    if style.width is not None:
        # As findmnt does on a terminal: the SOURCE column gives way (with an ellipsis) first.
        others = sum(widths) - widths[3] + 2 * (len(header) - 1) + max(map(len, columns[-1]))
        widths[3] = max(len("SOURCE"), min(widths[3], style.width - others))
    # One format per row (a 1e5-mount table is 1e5 rows); a source too wide is cut first.
    row_format = "".join(f"{{:{align}{width}}}  " for align, width in zip("<><<<", widths, strict=True)) + "{}"
    cut = widths[3] - len(style.ellipsis)

    def line(row: tuple[str, ...]) -> str:
        if len(row[3]) > widths[3]:
            row = (*row[:3], row[3][:cut] + style.ellipsis, *row[4:])
        return row_format.format(*row).rstrip()

    lines = [line(header)]
    for (_lead, below, mount), row in zip(rows, cells[1:], strict=True):
        lines.append(line(row))
        findings = by_mount.get(mount.mount_id, [])
        if not findings:
            continue
        # The target lines hang inside the mount's own bars: a bar goes on down when children follow.
        pad = below + (style.bar if tree.children.get(mount.mount_id) else "  ")
        in_view = [f for f in findings if not (f.hidden or f.unlisted or f.same_file)]
        for finding in findings:
            if show_all or finding not in in_view or len(in_view) == 1:
                lines.append(pad + _target_note(finding))
        if not show_all and len(in_view) > 1:
            lines.append(pad + f"* {plural(len(in_view), 'target')} not hidden: {kinds_summary(f.target.kind for f in in_view)} "
                         "(--all lists them)")
    hidden_targets = sum(1 for f in analysis.targets if f.hidden)
    lines.append("")
    lines.append(
        f"{plural(len(tree.mounts), 'mount')}, {len(analysis.mount_covers)} hidden; "
        f"{plural(len(analysis.targets), 'target')}, {hidden_targets} hidden; "
        f"mounts that must move: {analysis.lower_bound} (lower bound), "
        f"{analysis.lower_bound_with_aliases} with aliases, {analysis.naive_moves} if each target moved its own"
    )
    if tree.stand_in is not None:
        unlisted = sorted(set(tree.unlisted_parent.values()))
        many = len(tree.tops) > 1
        lines.append(
            f"a forest: {len(tree.tops)} {'trees, whose tops hang' if many else 'tree, whose top hangs'} from "
            f"mount{'s' if len(unlisted) > 1 else ''} {_ids(unlisted)}, not in the table"
        )
    if not all(map(str.isprintable, lines)):  # fields are escaped already; nothing slips by
        lines = [printable(line) for line in lines]
    return "\n".join(lines) + "\n"


def _target_note(finding: TargetFinding) -> str:
    t = finding.target
    state = f"HIDDEN, covered by {_ids(c.mount for c in finding.covers)}" if finding.hidden else "not hidden"
    if finding.unlisted:
        state = _unknown(finding.unlisted)
    if finding.alias is not None:
        state += f"; bound through alias mount {finding.alias}, no move"
    if finding.same_file:
        state += f"; same file as {', '.join(printable(i) for i in finding.same_file)}"
    to = f" -> {printable(t.to)}" if t.to else ""
    what = ", ".join(x for x in (t.file_type, t.access, t.rdev) if x is not None)
    kind = f"{t.kind} ({what})" if what else t.kind
    return f"* target {printable(t.id)} {kind} {printable(t.path)}{to}  [{state}]"


def kinds_summary(kinds: Iterable[str]) -> str:
    """'20 mmap, 5 open, 1 chdir': how many targets of each kind, the most first ('open' for one)."""
    counts = Counter(kinds)
    if sum(counts.values()) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], KINDS.index(kv[0]))))


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
    via = f", through alias mount {step.via}" if step.via is not None else ""
    return f"{step.op:<13} {step.target}: {step.path}{extra} (mount {step.mount}{via})"


def in_place_steps(plan: Plan) -> list[int]:
    """Indexes of the steps that reach a target not hidden: the restorer does them at the target's
    own path, no move needed. Renderings for people may summarise them; the plan keeps them all.
    A mount-source step is never among them: it makes a mount, which a script must show."""
    return [i for i, s in enumerate(plan.steps) if s.target in plan.in_place and s.op in TARGET_OPS and s.op != "mount-source"]


def _in_place_summary(plan: Plan, indexes: list[int], shell: bool = False) -> str:
    """One line for the steps at `indexes`: how many, of which kinds, that they need no move."""
    kinds = kinds_summary(plan.steps[i].op for i in indexes)
    one = len(indexes) == 1
    if shell:
        how = ("the restoring process reaches it at its own path, before or after this script" if one else
               "the restoring process reaches them at their own paths, before or after this script")
    else:
        how = "reached at its own path, no move needed" if one else "reached at their own paths, no move needed"
    return (f"{plural(len(indexes), 'target')} not hidden ({kinds}): {how} "
            f"(step{'' if one else 's'} {_ranges(indexes)}; --all {'marks' if shell else 'lists'} {'it' if one else 'them'})")


def _ranges(indexes: list[int], limit: int = 6) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (the first `limit` runs)."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (", ..." if len(runs) > limit else "")


def plan_text(plan: Plan, source: str, show_all: bool = False) -> str:
    """The steps with their reasons, by their index in the plan (as check and run name them).

    Unless show_all, steps reaching a target that is not hidden are summarised in one line at
    the end; the numbering keeps their places.
    """
    targets = sum(1 for s in plan.steps if s.target)
    hidden = len(plan.hidden)
    moves = (f"{plural(plan.moves, 'move')} aside and back (lower bound {plan.lower_bound}, {plan.least_moves} with "
             f"aliases, naive {plan.naive_moves}), yard {plan.yard}") if plan.moves else (
             f"no move needed (lower bound {plan.lower_bound}, 0 with aliases)" if plan.lower_bound else "no move needed")
    header = f"plan for {source}: {plural(targets, 'target')} ({hidden or 'none'} hidden), {moves}"
    lines = [printable(header)]
    in_place = [] if show_all else in_place_steps(plan)
    skip = set(in_place)
    for index, step in enumerate(plan.steps):
        if index in skip:
            continue
        lines.append(printable(f"{index:>3}  {_step_text(step)}"))
        if step.why:
            lines.append(printable(f"       # {step.why}"))
    if in_place:
        lines.append(printable("     " + _in_place_summary(plan, in_place)))
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, object]:
    return plan.as_json()


def plan_shell(plan: Plan, source: str, file_mounts: frozenset[int] = frozenset(), show_all: bool = False) -> str:
    """util-linux commands where a step has one; a comment where the restoring process itself acts.

    The script does what the executor does: it removes only what it made (the yard's tmpfs, and
    of the yard's directory and its parents only those it created), and on any failure (a
    command failing under `set -e`, or SIGINT/SIGTERM/SIGHUP) an EXIT trap puts every parked
    mount back and undoes every bind it made, newest first, then exits with the failure's status.
    Each undo is guarded by a flag set right after the command it undoes succeeded. Paths from
    the dump are quoted, or built with printf when they hold characters that are not printable,
    so the script itself is plain text; a path any of whose components is a symlink is refused.

    Unless show_all, the steps of targets that are not hidden (comments only: the restoring
    process's own syscalls) are summarised in one comment at the top; the commands are the same.

    Refused (PlanRefused) for a plan that must rejoin a peer group: no util-linux command does
    MOVE_MOUNT_SET_GROUP, and a script that skipped it would silently change propagation.
    """
    rejoins = [s.mount for s in plan.steps if s.op == "rejoin-group"]
    if rejoins:
        raise PlanRefused(
            f"no shell rendering: mount {rejoins[0]} must rejoin its peer group with move_mount(MOVE_MOUNT_SET_GROUP), "
            "which no util-linux command does; use --format json with a restorer that calls move_mount(2)"
        )
    return _ShellScript(file_mounts).render(plan, source, [] if show_all else in_place_steps(plan))


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

    def render(self, plan: Plan, source: str, in_place: list[int]) -> str:
        body: list[str] = []
        skip = set(in_place)
        for index, step in enumerate(plan.steps):
            if index in skip:
                continue
            body.append(f"# {index}: {printable(step.why)}" if step.why else f"# {index}")
            body.extend(self.step(step))
        head = [
            "#!/bin/sh",
            f"# {FORMAT} for {printable(source)}: run inside the mount namespace being restored, as root.",
            "# Target steps (open, chdir, root, bind, mmap) are the restoring process's own syscalls;",
            "# they are marked where they must happen, between the moves.",
            "# On any failure the EXIT trap puts every parked mount back, newest first, and removes",
            "# only what this script made.",
            *([printable("# " + _in_place_summary(plan, in_place, shell=True))] if in_place else []),
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
            f"(target {printable(step.target or '')}, mount {step.mount}"
            + (f", through alias mount {step.via})" if step.via is not None else ")"))
        ]


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/a', '/a/b', '/a/b/c']: outermost first."""
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# --- the reports of run and recover ------------------------------------------------------

_NOUN_OF_TYPE = {"regular": "file", "directory": "directory", "fifo": "FIFO", "char": "char device",
                 "block": "block device", "socket": "socket"}
_NOUN_OF_KIND = {"open": "file", "chdir": "directory", "root": "directory", "bind": "socket", "mmap": "file",
                 "mount-source": "directory"}


def _target_line(t: Mapping[str, Any]) -> str:
    """One target's verdict in words a person can act on: where the kernel says it landed, and on what."""
    kind = t["kind"] if t.get("file_type") in (None, "regular", "directory") else f"{t['kind']} {t['file_type']}"
    head = f"target {t['id']} ({kind})"
    if t["step"] is None:
        return f"{head}: not reached (the run stopped before its step)"
    noun = _NOUN_OF_TYPE.get(t.get("file_type") or "", _NOUN_OF_KIND.get(t["kind"], "object"))
    got, want = t["got_mount"], t["expected_mount"]
    where = f"mount {got}" if isinstance(got, int) else f"a mount the dump does not have ({got})"
    if got != want:
        return f"{head}: WRONG, reached {where}, not mount {want} where the dump has it ({t['detail']})"
    if not t["inode_ok"]:
        return f"{head}: WRONG, in mount {want} but not the {noun} the replica made there ({t['detail']})"
    if not t.get("type_ok", True):
        return f"{head}: WRONG, in mount {want} but the object's type or access is not the dump's ({t['detail']})"
    made = "the new mount shows the directory" if t["kind"] == "mount-source" else f"the {noun}"
    via = f", bound through alias mount {t['via']} (the same file)" if t.get("via") is not None else ""
    return f"{head}: ok, {made} the replica made in mount {want}{via}"


def run_report_text(report: Mapping[str, Any], summarise: Collection[str] = ()) -> str:
    """A run's report (planner.executor) for people: verdict, failing step, each target, the tree and the yard.

    Targets in `summarise` (those not hidden) that passed are counted in one line when there
    are two or more; a target that failed is always listed.
    """
    lines = [f"{'ok' if report['ok'] else 'FAILED'}: {plural(report['steps_run'], 'step')} run"]
    failed = report.get("failed_step")
    if failed:
        err = f"{failed['errno_name']} " if failed.get("errno_name") else ""
        lines.append(f"step {failed['index']} ({failed['op']}) failed: {err}{failed['reason']}")
        lines.append("rolled back" if report["rolled_back"] else "not rolled back")
    for lost in report.get("unrestored", []):
        where = f", now at {lost['now_at']}" if lost.get("now_at") else ""
        lines.append(f"NOT RESTORED: {lost.get('mount', lost.get('path'))}{where}: {lost['reason']}")
    quiet = [t for t in report["targets"] if t["id"] in summarise and t["ok"] and not t.get("stand_in")]
    if len(quiet) < 2:
        quiet = []
    for t in report["targets"]:
        if quiet and t in quiet:
            continue
        lines.append(_target_line(t))
        if t.get("stand_in"):
            lines.append(f"  stand-in: {t['stand_in']}")
    if quiet:
        kinds = kinds_summary(t["kind"] for t in quiet)
        lines.append(f"{len(quiet)} targets not hidden ({kinds}): ok, each in its own mount (--all lists them)")
    lines.append("tree identical" if report["tree_identical"] else "TREE CHANGED: " + "; ".join(report["tree_diff"]))
    lines.append("yard empty" if report["yard_empty"] else "YARD NOT EMPTY")
    stand_in = report.get("stand_in")
    if stand_in:
        unlisted = stand_in["unlisted_parents"]
        lines.append(
            f"a forest: mounts {', '.join(map(str, stand_in['tops']))} hang from "
            f"{'mount' if len(unlisted) == 1 else 'mounts'} {', '.join(map(str, unlisted))}, not in the table; "
            "the replica hangs them from one private tmpfs at / standing in for it"
        )
    # Paths, target ids and kernel messages naming paths come from the dump: no escape sequence passes.
    return "\n".join(printable(line) for line in lines) + "\n"


def recover_report_text(report: Mapping[str, Any]) -> str:
    """What `overmount recover` did (or would do, --dry-run), step by step, then its verdict."""
    lines = []
    verb = "would run" if report["dry_run"] else "ran"
    steps = report["steps"]
    if not steps and not report["lost"]:
        lines.append("nothing to recover: no yard of this plan holds anything")
    for index, step in enumerate(steps):
        done = report["dry_run"] or index < report["steps_run"]
        mark = verb if done else "NOT RUN"
        target = f"mount {step.get('mount')}: " if step.get("mount") is not None else ""
        what = f"{step.get('from')} -> {step.get('to')}" if "from" in step else step.get("path")
        lines.append(f"{mark:<8} {step['op']:<13} {target}{what}")
    failed = report.get("failed_step")
    if failed:
        lines.append(f"step {failed['index']} failed: {failed['reason']}")
    for lost in report["lost"]:
        lines.append(f"LOST: {lost}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    verdict = "ok" if report["ok"] else "NOT RECOVERED"
    lines.append(f"{verdict}: {report['steps_run'] if not report['dry_run'] else 0} of {len(steps)} steps run")
    return "\n".join(lines) + "\n"
