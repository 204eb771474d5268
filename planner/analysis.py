"""What is hidden and what covers it, over the whole tree (DESIGN.md, path resolution)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

from planner.aliases import same_file, visible_alias
from planner.errors import TargetError
from planner.mountinfo import Mount
from planner.paths import is_clean, is_under, prefixes, unusable
from planner.progress import Progress, every, quiet
from planner.targets import KINDS, Target
from planner.tree import MountTree


@dataclass(frozen=True)
class Cover:
    """Mount `mount` covers a path at `at`, as a child of chain mount `over`."""

    mount: int
    over: int
    at: str


@dataclass(frozen=True)
class TargetFinding:
    target: Target
    covers: tuple[Cover, ...]
    movers: tuple[int, ...]  # every mount that must leave the path, in move order
    # In a forest: (unlisted mount, the top hanging from it) for each other tree on the target's
    # path; its reach then depends on mounts the table does not list (tree.unlisted_on).
    unlisted: tuple[tuple[int, Mount], ...] = ()
    # A hidden bind target's visible alias: a mount its own path binds the same socket file
    # through, with no move (planner.aliases); None for every other target.
    alias: int | None = None
    same_file: tuple[str, ...] = ()  # the other targets that name the same file of the same filesystem

    @property
    def hidden(self) -> bool:
        return bool(self.covers)

    @property
    def needed_movers(self) -> tuple[int, ...]:
        """The mounts that must leave the path for this target: none when an alias serves it."""
        return () if self.alias is not None else self.movers


@dataclass(frozen=True)
class Analysis:
    tree: MountTree
    targets: tuple[TargetFinding, ...]

    @cached_property
    def mount_covers(self) -> dict[int, tuple[Cover, ...]]:
        """Hidden mounts only, each with what covers it.

        Worked out on first use: it walks to every mount of the tree, which
        planning does not need (a plan only follows the targets' chains).
        """
        return self.find_hidden()

    def find_hidden(self, progress: Progress = quiet) -> dict[int, tuple[Cover, ...]]:
        """mount_covers, worked out now (and kept for the property), progress heard as it goes."""
        if "mount_covers" in self.__dict__:
            return self.__dict__["mount_covers"]  # type: ignore[no-any-return]
        through = path_covers(self.tree, progress)
        stacked = self.tree.children_at
        out = {}
        for mount in self.tree.mounts:
            covers = through[mount.mount_id]
            if (mount.mount_id, mount.mountpoint) in stacked:  # something on its own root
                covers += tuple(level_covers(self.tree, mount, mount.mountpoint, None))
            if covers:
                out[mount.mount_id] = covers
        self.__dict__["mount_covers"] = out
        return out

    @cached_property
    def mount_unlisted(self) -> dict[int, list[tuple[int, Mount]]]:
        """In a forest: mounts whose place depends on a mount the table does not list."""
        if self.tree.stand_in is None:
            return {}
        out = {}
        for mount in self.tree.mounts:
            found = self.tree.unlisted_on(mount.mountpoint, mount.mount_id)
            if found:
                out[mount.mount_id] = found
        return out

    @property
    def hidden_mounts(self) -> list[int]:
        return sorted(self.mount_covers)

    @property
    def lower_bound(self) -> int:
        """Distinct mounts that must leave some target's path, each target in its own mount."""
        return len({m for finding in self.targets for m in finding.movers})

    @property
    def lower_bound_with_aliases(self) -> int:
        """The same, where hidden bind targets are bound through their visible aliases."""
        return len({m for finding in self.targets for m in finding.needed_movers})

    @property
    def naive_moves(self) -> int:
        return sum(len(finding.movers) for finding in self.targets)


def level_covers(tree: MountTree, over: Mount, path: str, nxt: Mount | None) -> list[Cover]:
    """Children of `over` that a walk of `path` meets before reaching `nxt` (or the path's end).

    At the prefix where `nxt` itself is attached, only side-by-side siblings listed before it lie on top of it.
    """
    end = nxt.mountpoint if nxt is not None else path
    found = []
    for prefix in prefixes(path, over.mountpoint, end):
        siblings = tree.children_at.get((over.mount_id, prefix))
        if not siblings:
            continue
        if over.mount_id == tree.stand_in and nxt is not None:
            # Tops of a forest cover each other only when they hang from one unlisted mount.
            own = tree.unlisted_parent[nxt.mount_id]
            siblings = tuple(top for top in siblings if tree.unlisted_parent[top] == own)
        for child in reversed(siblings):  # topmost first
            if nxt is not None and prefix == nxt.mountpoint and not tree.is_legacy_below(nxt, tree.by_id[child]):
                continue
            found.append(Cover(child, over.mount_id, prefix))
    return found


def _add_through(tree: MountTree, mount: Mount, covers: dict[int, tuple[Cover, ...]]) -> None:
    """covers[mount]: its parent's (already in `covers`) plus what the parent's level adds."""
    parent = tree.by_id[mount.parent_id]
    own = level_covers(tree, parent, mount.mountpoint, mount)
    covers[mount.mount_id] = covers[parent.mount_id] + tuple(own) if own else covers[parent.mount_id]


def path_covers(tree: MountTree, progress: Progress = quiet) -> dict[int, tuple[Cover, ...]]:
    """For each mount, the covers met on the walk from the root to its mountpoint (its root stack excluded)."""
    covers: dict[int, tuple[Cover, ...]] = {tree.root.mount_id: ()}
    total = len(tree.top_down)
    every_so_often = every(total)
    for done, mount in enumerate(tree.top_down[1:], 1):
        if done % every_so_often == 0:
            progress("finding hidden mounts", done, total)
        _add_through(tree, mount, covers)
    progress("finding hidden mounts", total, total)
    return covers


def chain_covers(tree: MountTree, mount_id: int, known: dict[int, tuple[Cover, ...]]) -> tuple[Cover, ...]:
    """path_covers' value for one mount, working out only its chain; `known` memoizes across calls.

    Targets sit in a few mounts of a big tree: following their chains costs
    what they hold, not what the tree holds.
    """
    if not known:
        known[tree.root.mount_id] = ()
    pending = []
    mount = tree.by_id[mount_id]
    while mount.mount_id not in known:
        pending.append(mount)
        mount = tree.by_id[mount.parent_id]
    for mount in reversed(pending):  # parents first
        _add_through(tree, mount, known)
    return known[mount_id]


def movers_for(tree: MountTree, covers: tuple[Cover, ...]) -> tuple[int, ...]:
    """Mounts to move, in order: each cover's stack top-down, then the cover itself."""
    out: list[int] = []
    for cover in covers:
        mount = tree.by_id[cover.mount]
        out.extend(m.mount_id for m in reversed(tree.stack_on(mount)))
        out.append(cover.mount)
    return tuple(dict.fromkeys(out))


def validate_target(tree: MountTree, target: Target) -> None:
    if target.kind not in KINDS:
        raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: unknown kind {target.kind!r} (one of {', '.join(KINDS)})")
    if not tree.listed(target.mount):
        raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: mount {target.mount} is not in the mount table")
    if not is_clean(target.path):
        raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: path {target.path!r} must be absolute with no '.', '..' or empty parts")
    mountpoint = tree.by_id[target.mount].mountpoint
    if not is_under(target.path, mountpoint):
        raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: path {target.path} is not under mount {target.mount}'s mountpoint {mountpoint}")
    if target.kind == "mount-source" and (target.to is None or not is_clean(target.to)):
        raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: mount-source needs an absolute clean 'to' path")
    for what, path in (("path", target.path), ("to", target.to)):
        problem = unusable(path) if path is not None else None
        if problem is not None:
            raise TargetError(target.origin or tree.source, target.line_no, f"target {target.id}: {what} {problem}")


def analyze(tree: MountTree, targets: list[Target] | tuple[Target, ...] = ()) -> Analysis:
    """The targets' findings now; the whole tree's hidden mounts (`mount_covers`) when first asked for."""
    through: dict[int, tuple[Cover, ...]] = {}
    seen: set[str] = set()
    findings = []
    for target in targets:
        if target.id in seen:
            raise TargetError(target.origin or tree.source, target.line_no, f"target id {target.id} appears twice")
        seen.add(target.id)
        validate_target(tree, target)
        mount = tree.by_id[target.mount]
        covers = chain_covers(tree, mount.mount_id, through) + tuple(level_covers(tree, mount, target.path, None))
        unlisted = tree.unlisted_on(target.path, target.mount)
        if target.to is not None:
            unlisted += tree.unlisted_on(target.to, target.mount)
        alias = visible_alias(tree, target) if covers and target.kind == "bind" else None
        findings.append(TargetFinding(target, covers, movers_for(tree, covers), tuple(unlisted), alias))
    twins = same_file(tree, targets)
    if twins:
        findings = [dataclasses.replace(f, same_file=twins.get(f.target.id, ())) for f in findings]
    return Analysis(tree, tuple(findings))
