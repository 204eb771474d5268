"""The move-aside strategy: uncover each target by moving its covers into a private yard, reach it,
and move them back in exact reverse order.

Moves are chosen by walking each target's path in a symbolic namespace (the
kernel's own rule: at each prefix the topmost mount wins) and moving whatever
stands where the walk leaves the target's ancestor chain. Moved mounts form a
stack: they stay out for every later target that also needs them gone, and go
back in exact reverse order, only when a target needs one of them in place.
A move under a shared parent is bracketed: a keeper holds the parent's peer group
(keeper-bind, make-private ... rejoin-group, keeper-remove).
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.aliases import is_alias
from planner.analysis import Analysis, TargetFinding
from planner.check import Session, apply_step, destination_now, new_session, yard_unfit
from planner.errors import PlanRefused
from planner.paths import is_clean, is_under, join, relative
from planner.progress import every
from planner.simulate import SimError
from planner.steps import Step
from planner.strategies import WHOLE_TABLE, Planned, Request
from planner.strategies.order import plan_order
from planner.targets import Target
from planner.tree import MountTree

DEFAULT_YARD = "/.overmount-yard"
SET_GROUP_KERNEL = (5, 15)  # MOVE_MOUNT_SET_GROUP


@dataclass
class _Out:
    """A mount the plan has moved aside (or a keeper it holds), until it goes back."""

    kind: str  # "move" or "keeper"
    mount: int
    slot: str
    home: str


class _Planner:
    def __init__(
        self, tree: MountTree, analysis: Analysis, yard: str, kernel: tuple[int, int], locked: frozenset[int]
    ) -> None:
        self.tree = tree
        self.analysis = analysis
        self.yard = yard
        self.kernel = kernel
        self.session: Session = new_session(tree, [f.target for f in analysis.targets], locked)
        self.steps: list[Step] = []
        self.out: list[_Out] = []
        self.slots = 0
        self.yard_made = False
        self.yard_keeper: _Out | None = None  # the bracket of the yard's own mount, when it is shared
        self.needed_by: dict[int, list[str]] = {}
        self.stack_places: dict[int, tuple[int, int]] = {}  # see _place_in_stack
        for finding in analysis.targets:
            for mount in finding.needed_movers:
                self.needed_by.setdefault(mount, []).append(finding.target.id)

    def emit(self, step: Step) -> None:
        try:
            apply_step(self.session, step)
        except SimError as err:
            who = f"target {step.target} ({step.op})" if step.target else f"{step.op} of mount {step.mount}" if step.mount is not None else step.op
            raise PlanRefused(f"{who}: {err}") from None
        self.steps.append(step)

    def check_yard(self) -> None:
        problem = self.yard_problem(self.yard)
        if problem:
            raise PlanRefused(problem)

    def yard_problem(self, yard: str) -> str | None:
        """Why `yard` cannot be the yard: it must not cover anything the plan needs, nor ride in a
        mount that moves (a move into itself is ELOOP)."""
        for finding in self.analysis.targets:
            target = finding.target
            for path in (target.path, target.to):
                if path is not None and is_under(path, yard):
                    return f"yard {yard} would cover {path} of target {target.id}; choose another --yard"
        inside = yard + "/"
        for below in self.tree.mounts:  # is_under(), inlined: this looks at every mount
            if below.mountpoint == yard or below.mountpoint.startswith(inside):
                return f"yard {yard} would cover mount {below.mount_id} at {below.mountpoint}; choose another --yard"
        ns = self.session.ns
        chain = ns.chain(ns.walk(yard).mount) or []
        for mount in chain:
            needers = self.needed_by.get(mount)
            if needers:
                return (
                    f"yard {yard} would lie in mount {mount}, which must move for {needers[0]}; "
                    "choose --yard on a mount that stays in place"
                )
        return None

    def default_yard(self) -> str:
        """The default yard; where the table does not list / (a forest), or / cannot hold a yard
        (read-only, as on ChromeOS or Android, or a filesystem whose directories are the kernel's),
        /.overmount-yard in the shallowest listed tmpfs that stays in place and can hold one
        (private ones first: no bracket needed)."""
        ns = self.session.ns
        landing = ns.walk(DEFAULT_YARD).mount
        if landing != self.tree.stand_in and yard_unfit(self.session, landing) is None:
            return DEFAULT_YARD
        for shared in (False, True):
            for mount in self.tree.top_down[1:]:
                if mount.fstype != "tmpfs" or (mount.shared is not None) != shared:
                    continue
                yard = join(mount.mountpoint, DEFAULT_YARD)
                if (ns.walk(yard).mount == mount.mount_id and yard_unfit(self.session, mount.mount_id) is None
                        and self.yard_problem(yard) is None):
                    return yard
        return DEFAULT_YARD  # refused, with the reason, if a move needs it

    def slot(self) -> str:
        if not self.yard_made:
            self.make_yard()
        self.slots += 1
        return join(self.yard, f"/{self.slots - 1}")

    def obstacle(self, finding: TargetFinding, chain: list[int]) -> tuple[str, int] | None:
        """Where the walk to the target leaves its ancestor chain `chain` (root first), and the mount
        that path names (the top of the stack there); None when the walk arrives."""
        landing = self.session.ns.walk(finding.target.path, along=chain)
        if landing.off_chain:
            return landing.base, landing.mount
        if landing.mount != chain[-1]:
            raise PlanRefused(f"target {finding.target.id}: its mount {finding.target.mount} is not in place")
        return None

    def move_aside(self, path: str, mount: int, finding: TargetFinding, covering: int) -> None:
        """Move `mount`, the mount `path` names, into a new yard slot."""
        ns = self.session.ns
        parent = ns.parent[mount]
        assert parent is not None
        target = finding.target
        if parent == self.tree.stand_in:
            raise PlanRefused(
                f"target {target.id}: mount {mount} at {path} must move, and its parent, mount "
                f"{self.tree.unlisted_parent[mount]}, is not in the table: the kernel refuses the move if that "
                f"mount is shared, and nothing here says whether it is; {WHOLE_TABLE}"
            )
        if not self.yard_made:
            self.make_yard()  # first: when the yard's own mount is shared, its bracket may be this parent's too
        if ns.group[parent] is not None:
            self.keep_group(parent, mount, target)
        needers = self.needed_by.get(covering, [target.id])
        names = ", ".join(needers[:5]) + (f" and {len(needers) - 5} more" if len(needers) > 5 else "")
        if mount == covering:
            why = f"mount {mount} at {path} covers {names} ({target.kind} {target.path} in mount {target.mount})"
        else:
            why = f"mount {mount} is stacked on mount {covering}, which covers {names} at {path}: the top leaves first"
        slot = self.slot()
        self.emit(Step("move-aside", mount=mount, src=path, to=slot, why=why))
        self.out.append(_Out("move", mount, slot, path))

    def keep_group(self, parent: int, mount: int, target: Target) -> None:
        """Bracket a move under a shared parent: keeper joins its group, parent goes private."""
        home = self.bracketable(parent, f"target {target.id}: mount {mount}'s parent {parent}")
        slot = self.slot()
        self.emit(Step("keeper-bind", mount=parent, src=home, to=slot,
                       why=f"mount {parent} is shared (peer group {self.session.ns.group[parent]}): a keeper holds its place in the group"))
        self.emit(Step("make-private", mount=parent, path=home,
                       why=f"the kernel refuses to move mount {mount} while its parent {parent} is shared"))
        self.out.append(_Out("keeper", parent, slot, home))

    def bracketable(self, parent: int, who: str) -> str:
        """The path that names the shared mount `parent`, or PlanRefused saying why no keeper can
        keep its group while it is private (`who` starts the reason)."""
        ns = self.session.ns
        if self.kernel < SET_GROUP_KERNEL:
            raise PlanRefused(
                f"{who} is shared; putting it back in its peer group "
                f"needs MOVE_MOUNT_SET_GROUP (Linux 5.15+), planning for {self.kernel[0]}.{self.kernel[1]}: restore on "
                f"5.15 or later (--kernel 5.15 plans for it)"
            )
        if parent in self.session.unbindable:
            raise PlanRefused(f"{who} is shared and unbindable: no keeper can be bound to hold its peer group")
        home = ns.mount_path(parent)
        landing = ns.walk(home) if home is not None else None
        if home is None or landing is None or landing.mount != parent or landing.rel:
            on_top = landing.mount if landing is not None else None
            raise PlanRefused(
                f"{who} is shared, and no path names it "
                f"(mount {on_top} is on top of its root), so it cannot be made private for the move; a restorer that "
                "builds the tree can keep an fd on it before the stack goes on, which a plan of paths cannot"
            )
        return home

    def make_yard(self) -> None:
        """yard-create, and before it, when the yard lands in a shared mount, that mount's bracket.

        A yard attached under a shared mount would be copied to every peer and slave. So its
        mount is bracketed like any shared parent, and first: a keeper is cloned into its group
        (it waits, detached, and is attached in the yard's slot 0 as the yard is made), the mount
        goes private, the yard is attached, private; at the end the mount rejoins its group and
        the keeper and the yard go (finish).
        """
        ns = self.session.ns
        parent = ns.walk(self.yard).mount
        if parent == self.tree.stand_in:
            unlisted = sorted(set(self.tree.unlisted_parent.values()))
            which = f"mount {unlisted[0]}" if len(unlisted) == 1 else "a mount"
            raise PlanRefused(
                f"yard {self.yard} would lie in {which} the table does not list: whether it is shared (then the "
                "yard would propagate to its peers) is unknown; choose --yard in a listed mount"
            )
        if ns.group[parent] is not None:
            home = self.bracketable(parent, f"yard {self.yard}: the mount it lies in, {parent},")
            self.slots += 1
            slot = join(self.yard, "/0")
            self.emit(Step("keeper-bind", mount=parent, src=home, to=slot,
                           why=f"mount {parent}, where the yard goes, is shared (peer group {ns.group[parent]}): a "
                               "keeper holds its place in the group (cloned now, attached in the yard once it is made)"))
            self.emit(Step("make-private", mount=parent, path=home,
                           why=f"a yard attached under the shared mount {parent} would be copied to its peers and slaves"))
            self.yard_keeper = _Out("keeper", parent, slot, home)
        self.emit(Step("yard-create", path=self.yard, why="a private place to park covering mounts"))
        self.yard_made = True

    def put_back(self, entry: _Out | None = None) -> None:
        entry = entry or self.out.pop()
        if entry.kind == "move":
            self.emit(Step("move-back", mount=entry.mount, src=entry.slot, to=entry.home,
                           why=f"mount {entry.mount} returns to {entry.home}"))
        else:
            self.emit(Step("rejoin-group", mount=entry.mount, src=entry.slot, to=entry.home,
                           why=f"MOVE_MOUNT_SET_GROUP puts mount {entry.mount} back in its peer group"))
            self.emit(Step("keeper-remove", mount=entry.mount, path=entry.slot, why="the keeper has done its job"))

    def reach(self, finding: TargetFinding) -> None:
        target = finding.target
        # The chain as it stands now, not as dumped: a legacy shadow sibling that came back
        # lies stacked on its lower sibling. A target whose own mount rides inside a moved
        # subtree is reached there, through the yard, when nothing in the subtree covers it
        # (not a bind: its path is the socket's name); otherwise that move is undone first.
        if finding.alias is not None and self.bind_through_alias(finding):
            return
        chain = self.session.ns.chain(target.mount)
        if chain is None and target.kind != "bind" and self.reach_in_yard(finding):
            return
        while chain is None:
            if not self.out:
                raise PlanRefused(f"target {target.id}: its mount {target.mount} does not hang from the root")
            self.put_back()
            chain = self.session.ns.chain(target.mount)
        expected = set(finding.movers)
        for _ in range(len(self.tree.mounts) + 1):
            found = self.obstacle(finding, chain)
            if found is None:
                break
            path, mount = found
            if mount not in expected:
                raise PlanRefused(f"target {target.id}: mount {mount} at {path} is in the way but the analysis did not expect it")
            # The cover this mount leaves for: itself, or the cover it is stacked on.
            covering = next((c.mount for c in finding.covers if self._stacked_on(mount, c.mount)), mount)
            self.move_aside(path, mount, finding, covering)
        else:  # each pass moves one mount off the path, so this cannot run out unless the model is wrong
            raise PlanRefused(f"target {target.id}: still covered after moving every mount in its way")
        why = "not hidden" if not finding.hidden else f"now reachable in mount {target.mount}"
        self.emit_target(target, target.path, self.destination(target), why)

    def bind_through_alias(self, finding: TargetFinding) -> bool:
        """Bind a hidden socket by its own path through the visible alias mount it leads into:
        the same file of the same filesystem, so the same socket (planner.aliases). False when
        the path no longer leads there (then the target's own covers move)."""
        ns = self.session.ns
        target = finding.target
        landing = ns.walk(target.path)
        if landing.mount != finding.alias or not is_alias(self.tree, target, landing.mount, landing.rel):
            return False
        alias = self.tree.by_id[landing.mount]
        why = (
            f"mount {alias.mount_id} shows the same directory of the same filesystem ({alias.dev} {alias.root}) as "
            f"mount {target.mount}: binding {target.path} through it makes the same socket file, with no move"
        )
        self.emit(Step("bind", mount=target.mount, path=target.path, target=target.id, via=alias.mount_id, why=why))
        return True

    def reach_in_yard(self, finding: TargetFinding) -> bool:
        """Reach the target through the yard, where its mount rides in a parked one; False when
        the walk there does not end at its place (a mount of the subtree covers it)."""
        ns = self.session.ns
        target = finding.target
        inside = relative(target.path, self.tree.by_id[target.mount].mountpoint)
        path = ns.path_to(target.mount, inside)
        if path is None:
            return False
        landing = ns.walk(path)
        to = self.destination(target)
        if (landing.mount, landing.rel) != (target.mount, inside) or (target.kind == "mount-source" and to is None):
            return False
        parked = target.mount
        while (parent := ns.parent[parked]) is not None and parent >= 0:
            parked = parent
        rides = "is" if parked == target.mount else f"rides in mount {parked}, which is"
        self.emit_target(target, path, to, f"mount {target.mount} {rides} parked in the yard: the same mount and inode there")
        return True

    def destination(self, target: Target) -> str | None:
        """Where a mount-source binds to now (its `to`, or that place in a parked mount); None
        when no path leads there (the step then fails check, which says why)."""
        return destination_now(self.session, target) if target.kind == "mount-source" else None

    def emit_target(self, target: Target, path: str, to: str | None, why: str) -> None:
        if target.kind == "mount-source" and to != target.to:
            if to is None:
                to = target.to
            elif any(entry.slot == to for entry in self.out):
                parked = self.session.ns.mount_at(to)
                raise PlanRefused(
                    f"target {target.id}: {target.to} is the root of mount {parked}, which is moved aside for the source; "
                    "a bind onto it while it is parked would lie on top of it and be what its move back names "
                    "(that needs the bind held across the move back: open_tree(OPEN_TREE_CLONE) while the source is "
                    "revealed, move_mount once the covers are back, which plan format 1 has no op for)"
                )
            else:
                why += f"; {target.to} is parked too: the new mount is made at {to} and goes back with it"
        self.emit(Step(target.kind, mount=target.mount, path=path, to=to, target=target.id, why=why))

    def _stacked_on(self, upper: int, lower: int) -> bool:
        """True when `upper` sits in the dumped stack on `lower`'s root (directly or higher up)."""
        by_id = self.tree.by_id
        if upper == lower or by_id[upper].mountpoint != by_id[lower].mountpoint:
            return False  # the mounts of one stack share its mountpoint: most covers are on no stack
        up, low = self._place_in_stack(upper), self._place_in_stack(lower)
        return up[0] == low[0] and up[1] > low[1]

    def _place_in_stack(self, mount: int) -> tuple[int, int]:
        """(bottom of the dumped stack `mount` is in, its height there), worked out once per mount:
        a stack can be a thousand mounts deep, and each of them moves."""
        found = self.stack_places.get(mount)
        if found is None:
            by_id, climbed = self.tree.by_id, []
            current = by_id[mount]
            while current.parent_id in by_id and current.mountpoint == by_id[current.parent_id].mountpoint:
                if current.mount_id in self.stack_places:
                    break
                climbed.append(current.mount_id)
                current = by_id[current.parent_id]
            bottom, height = self.stack_places.get(current.mount_id, (current.mount_id, 0))
            for offset, mount_id in enumerate(reversed(climbed), 1):
                self.stack_places[mount_id] = (bottom, height + offset)
            found = self.stack_places.setdefault(mount, (bottom, height))
        return found

    def finish(self) -> None:
        while self.out:
            self.put_back()
        if self.yard_keeper is not None:
            # Rejoined before the yard goes: its keeper lives in the yard. The yard's unmount then
            # propagates to the peers' mounts at its place: none, as its directory was made for it.
            self.put_back(self.yard_keeper)
        if self.yard_made:
            self.emit(Step("yard-remove", path=self.yard, why="every mount is back"))


def plan(request: Request) -> Planned:
    """The move-aside steps for the request's targets, every one applied to a symbolic namespace as it
    is emitted; PlanRefused saying why when none the kernel would accept exists."""
    yard = request.yard
    if yard is not None and (not is_clean(yard) or yard == "/"):
        raise PlanRefused(f"yard {yard!r} must be an absolute clean path below /")
    analysis = request.analysis
    planner = _Planner(request.tree, analysis, yard or DEFAULT_YARD, request.kernel, request.locked)
    if yard is None:
        planner.yard = planner.default_yard()
    planner.session.planned_yards.add(planner.yard)
    planner.check_yard()
    total = len(analysis.targets)
    every_so_often = every(total)
    for done, finding in enumerate(plan_order(analysis)):
        if done % every_so_often == 0:
            request.progress("planning the targets", done, total)
        planner.reach(finding)
    planner.finish()
    request.progress("planning the targets", total, total)
    return Planned(planner.yard, tuple(planner.steps), planner.session)
