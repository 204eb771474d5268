"""Symbolic execution of a plan against a dumped tree: does it do what it must?"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from planner.aliases import is_alias, target_place
from planner.errors import PlanRejected
from planner.paths import is_clean, relative
from planner.progress import Progress, every, quiet
from planner.simulate import Landing, Namespace, SimError
from planner.steps import TARGET_OPS, MissingField, Step, arguments, handlers_for
from planner.targets import Target
from planner.tree import MountTree


@dataclass
class Session:
    """A namespace being worked on, plus what the plan has created in it."""

    ns: Namespace
    targets: dict[str, Target]
    tree: MountTree
    # Where each target's mount sits and where each mount-source's `to` leads, as dumped.
    homes: dict[int, str] = field(default_factory=dict)
    unbindable: set[int] = field(default_factory=set)
    unbindable_before: frozenset[int] = frozenset()  # as dumped: the end state must have the same
    locked: frozenset[int] = frozenset()
    stand_in: int | None = None  # a forest's stand-in for what the table does not list (MountTree.stand_in)
    destinations: dict[str, Landing] = field(default_factory=dict)
    yards: dict[str, int] = field(default_factory=dict)
    # Yards the plan creates (its yard-create paths), and keepers bound into one of them before it
    # exists: they wait detached and are attached into their slot as the yard is made.
    planned_yards: set[str] = field(default_factory=set)
    waiting: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # yard -> [(keeper, slot)]
    keepers: dict[int, int] = field(default_factory=dict)  # keeper id -> the mount it keeps
    # Bind mounts made by mount-source targets -> target id. Each is attached where the dump has its
    # `to` (checked at its step) and no step can move it, so it ends there: in a parked mount's
    # place, it travels back with it.
    created: dict[int, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    # Socket files bound by live names (an unlinked one is bound and unlinked again): place -> target id.
    bound: dict[object, str] = field(default_factory=dict)
    # Paths already found clean: a plan names each move's home and slot twice (out and back).
    clean_paths: set[str] = field(default_factory=set)
    # What exists inside each yard's tmpfs, as paths relative to it ("/0", "/0/x"): only what
    # yard-create (nothing) and earlier steps made; a move-aside or keeper-bind makes its `to`.
    in_yard: dict[int, set[str]] = field(default_factory=dict)


# Filesystems whose directories only the kernel makes (or where mkdir does something else):
# no yard directory can be made there. Read-only mounts cannot take one either (EROFS).
NO_YARD = {
    **dict.fromkeys(("proc", "sysfs", "debugfs", "tracefs", "securityfs", "pstore", "bpf", "efivarfs",
                     "fusectl", "selinuxfs", "binfmt_misc", "nsfs", "devpts", "mqueue", "rpc_pipefs", "nfsd"),
                    "its directories are the kernel's own, no directory can be made there"),
    "cgroup": "a directory made there is a new cgroup",
    "cgroup2": "a directory made there is a new cgroup",
    "configfs": "a directory made there is a new configuration item",
    "autofs": "a directory there is an automount trigger",
    **dict.fromkeys(("squashfs", "iso9660", "erofs", "cramfs", "romfs"), "it is a read-only filesystem"),
}


def yard_unfit(session: Session, mount_id: int) -> str | None:
    """Why a yard's directory cannot be made in dumped mount `mount_id` (None when it can, or
    when the mount is one the plan made: a yard or keeper is a tmpfs or a bind of a dumped one)."""
    found = session.tree.by_id.get(mount_id)
    if found is None or mount_id == session.stand_in:
        return None
    fstype, options, super_options = found.fstype, found.options, found.super_options
    reason = NO_YARD.get(fstype)
    if reason is None and ("ro" in options.split(",") or "ro" in super_options.split(",")):
        reason = "it is mounted read-only"
    return None if reason is None else f"mount {mount_id} ({fstype}) cannot hold one: {reason}"


def _in_yard(session: Session, landing: Landing, path: str, makes_it: bool) -> None:
    """A destination inside a yard's own tmpfs must exist, or be made by this very step (its last
    component only, as mkdir would): the kernel refuses a move onto a path that is not there."""
    names = session.in_yard.get(landing.mount)
    if names is None or landing.rel == "" or landing.rel in names:
        return
    parent = landing.rel.rsplit("/", 1)[0]
    if makes_it and (parent == "" or parent in names):
        names.add(landing.rel)
        return
    raise SimError(f"{path} does not exist: nothing made it in the yard (yard-create makes an empty tmpfs; "
                   "a move-aside or keeper-bind makes its own slot)")


def _name(ns: Namespace, mount_id: int) -> str:
    return ns.label(mount_id)


def _place(session: Session, mount_id: int, path: str, what: str, makes_it: bool = False,
           landing: Landing | None = None) -> None:
    """Attach onto `path` (where a walk of it lands, if the caller has walked it), refusing a shared
    destination (copies would reach every peer).

    makes_it: the step makes `path` first when it is missing (move-aside, keeper-bind)."""
    ns = session.ns
    if landing is None:
        landing = ns.walk(path)
    _in_yard(session, landing, path, makes_it)
    if landing.mount == session.stand_in:
        raise SimError(f"{what} lands in a mount the table does not list: whether it is shared (copies would "
                       "propagate to its peers) is unknown")
    if ns.group[landing.mount] is not None:
        raise SimError(f"{what} lands in {_name(ns, landing.mount)}, which is shared: copies would propagate to its peers")
    ns.attach_at(mount_id, landing)


def _named(ns: Namespace, path: str, mount_id: int, role: str) -> None:
    actual = ns.mount_at(path)
    if actual != mount_id:
        raise SimError(f"{role} {path} names {_name(ns, actual)}, not {_name(ns, mount_id)}")


def apply_step(session: Session, step: Step) -> None:
    """Do one step symbolically; SimError says why the kernel would refuse it or why it is wrong."""
    for path in (step.path, step.src, step.to):
        if path is None or path in session.clean_paths:
            continue
        if not is_clean(path):
            raise SimError(f"path {path!r} must be absolute with no '.', '..' or empty parts")
        session.clean_paths.add(path)
    if step.mount is not None and step.mount == session.stand_in:
        raise SimError(f"mount {step.mount} is not in the dump")
    handler = _OPS.get(step.op)
    if handler is None:
        raise SimError(f"unknown op {step.op!r}")
    try:
        args = arguments(step)
    except MissingField as err:
        raise SimError(str(err)) from None
    handler(session, *args)


def _yard_create(session: Session, path: str) -> None:
    ns = session.ns
    yard = ns.add(f"yard {path}")
    landing = ns.walk(path)
    unfit = yard_unfit(session, landing.mount)
    if unfit is not None:
        raise SimError(f"yard {path} would lie in {unfit}; choose --yard on a writable filesystem (a tmpfs)")
    _place(session, yard, path, f"yard {path}")
    session.yards[path] = yard
    session.in_yard[yard] = set()
    for keeper, slot in session.waiting.pop(path, ()):
        _place(session, keeper, slot, f"keeper {slot}", makes_it=True)


def _yard_remove(session: Session, path: str) -> None:
    ns = session.ns
    if path not in session.yards:
        raise SimError(f"no yard was created at {path}")
    yard = session.yards[path]
    _named(ns, path, yard, "yard")
    left = [key for key in ns.children if key[0] == yard]
    if left:
        raise SimError(f"yard {path} still holds {', '.join(_name(ns, i) for k in left for i in ns.children[k])}")
    ns.detach(yard)
    del session.yards[path]
    del session.in_yard[yard]


def _move_aside(session: Session, mount: int, src: str, to: str) -> None:
    _move(session, mount, src, to, makes_it=True)


def _move_back(session: Session, mount: int, src: str, to: str) -> None:
    _move(session, mount, src, to, makes_it=False)


def _move(session: Session, mount: int, src: str, to: str, makes_it: bool) -> None:
    """move_mount(2) of the mount `src` names onto `to`; makes_it: a move-aside makes its slot."""
    ns = session.ns
    if mount not in ns.parent or mount < 0:
        raise SimError(f"mount {mount} is not in the dump")
    _named(ns, src, mount, "source")
    parent = ns.parent[mount]
    if parent is None:
        raise SimError(f"{_name(ns, mount)} is the root mount: it cannot be moved")
    if parent == session.stand_in:
        raise SimError(f"{_name(ns, mount)}'s parent is not in the table: the kernel refuses the move if it is "
                       "shared, and nothing says whether it is")
    if mount in session.locked:
        # fs/namespace.c do_move_mount(): a mount locked to its parent cannot leave it
        raise SimError(f"the kernel would refuse (EINVAL): {_name(ns, mount)} is locked to its parent (inherited into a user namespace)")
    if ns.group[parent] is not None:
        # fs/namespace.c do_move_mount(): "moving a mount residing under a shared mount is unsupported"
        raise SimError(f"the kernel would refuse (EINVAL): {_name(ns, mount)}'s parent {_name(ns, parent)} is shared")
    landing = ns.walk(to)
    if ns.in_subtree(landing.mount, mount):
        raise SimError(f"the kernel would refuse (ELOOP): {to} lies inside {_name(ns, mount)}, the mount being moved")
    ns.detach(mount)
    try:
        # The walk of `to` did not enter the moved mount, so taking it away leaves that walk as it was.
        _place(session, mount, to, f"destination {to}", makes_it=makes_it, landing=landing)
    except SimError:
        ns.attach(mount, src)
        raise


def _keeper_bind(session: Session, mount: int, src: str, to: str) -> None:
    ns = session.ns
    _named(ns, src, mount, "keeper source")
    if mount in session.unbindable:
        raise SimError(f"the kernel would refuse (EINVAL) to bind {_name(ns, mount)}: it is unbindable, so no keeper can join its group")
    # A bind of a shared mount joins its peer group (and its master, if it is a slave).
    keeper = ns.add(f"keeper of {ns.label(mount)}", ns.group[mount], ns.master[mount])
    yard_path, _, name = to.rpartition("/")
    if yard_path in session.planned_yards and yard_path not in session.yards and name:
        # The yard is not made yet (its own mount is being bracketed): the keeper waits for it.
        session.waiting.setdefault(yard_path, []).append((keeper, to))
    else:
        _place(session, keeper, to, f"keeper {to}", makes_it=True)
    session.keepers[keeper] = mount


def _make_private(session: Session, mount: int, path: str) -> None:
    ns = session.ns
    _named(ns, path, mount, "path")
    ns.group[mount] = ns.master[mount] = None
    session.unbindable.discard(mount)  # MS_PRIVATE clears MNT_UNBINDABLE too (change_mnt_propagation)


def _rejoin_group(session: Session, mount: int, src: str, to: str) -> None:
    ns = session.ns
    keeper = ns.mount_at(src)
    if session.keepers.get(keeper) != mount:
        raise SimError(f"{src} names {_name(ns, keeper)}, not a keeper of mount {mount}")
    _named(ns, to, mount, "destination")
    if ns.group[mount] is not None or ns.master[mount] is not None:
        raise SimError(f"MOVE_MOUNT_SET_GROUP needs {ns.label(mount)} private first")
    ns.group[mount], ns.master[mount] = ns.group[keeper], ns.master[keeper]


def _keeper_remove(session: Session, mount: int, path: str) -> None:
    ns = session.ns
    keeper = ns.mount_at(path)
    if session.keepers.get(keeper) != mount:
        raise SimError(f"{path} names {_name(ns, keeper)}, not a keeper of mount {mount}")
    parent, rel = ns.parent[keeper], ns.rel[keeper]
    ns.detach(keeper)
    del session.keepers[keeper]
    if parent in session.in_yard and (parent, rel) not in ns.children:  # the executor removes the keeper's slot
        session.in_yard[parent].discard(rel)


def _reach_target(session: Session, step: Step) -> None:
    """The step must reach the dumped mount and the object's place inside it, by whatever path.

    The path may lead through the yard (the mount rode aside inside a moved cover): the kernel
    opens, enters, chroots into, maps or clones the same mount and inode there. Only bind(2) takes its path
    as the socket's name, so a bind step must use the target's own path.
    """
    ns = session.ns
    target = session.targets.get(step.target or "")
    if target is None:
        raise SimError(f"target {step.target!r} is not in the dump")
    if (target.kind, target.mount) != (step.op, step.mount) or step.path is None:
        raise SimError(f"step does not match target {target.id} ({target.kind} {target.path} in mount {target.mount})")
    if target.kind == "bind" and step.path != target.path:
        raise SimError(
            f"bind of {target.id} at {step.path}: bind(2) names the socket by its path, so the step must use "
            f"{target.path}, the name the dump has"
        )
    if target.id in session.done:
        raise SimError(f"target {target.id} is done twice")
    if target.mount not in session.homes:
        raise SimError(f"mount {target.mount} of target {target.id} is not in the dump")
    landing = ns.walk(step.path)
    if target.kind == "bind":
        _bind(session, step, target, landing)
        return
    if landing.mount != target.mount:
        hidden = ": still hidden" if step.path == target.path else ""
        raise SimError(f"{step.path} leads into {_name(ns, landing.mount)}, not mount {target.mount}{hidden}")
    inside = relative(target.path, session.homes[target.mount])
    if landing.rel != inside:
        # The right mount, the wrong place in it: something on the path was moved, not removed.
        raise SimError(f"{step.path} leads to {landing.rel or '/'} inside mount {target.mount}, not to {inside or '/'}")
    if target.kind == "mount-source":
        if step.to is None:
            raise SimError(f"mount-source of {target.id} needs 'to'")
        if target.mount in session.unbindable:
            raise SimError(f"the kernel would refuse (EINVAL) to bind from mount {target.mount}: it is unbindable")
        dumped = session.destinations[target.id]
        now = ns.walk(step.to)
        if place_below_binds(session, now.mount, now.rel) != (dumped.mount, dumped.rel):
            raise SimError(
                f"{step.to} leads into {_name(ns, now.mount)} now, but {target.to} leads into {_name(ns, dumped.mount)} "
                "in the dumped tree: the new bind mount would not end up where the dump has it"
                + ("" if step.to != target.to else " (while that mount is moved aside, bind onto its place in the yard)")
            )
        if ns.group[now.mount] is not None:
            raise SimError(
                f"{step.to} leads into {_name(ns, now.mount)}, which is shared: the new bind mount would propagate "
                "copies to its peers"
            )
        # A bind of a shared mount joins its peer group, of a slave its master (fs/namespace.c clone_mnt()).
        made = ns.add(f"bind mount of {target.id}", ns.group[target.mount], ns.master[target.mount])
        ns.attach_at(made, now)
        session.created[made] = target.id
    session.done.add(target.id)


def _bind(session: Session, step: Step, target: Target, landing: Landing) -> None:
    """bind(2) at the target's own path makes its socket file where the walk ends: in its own
    mount at its place, or in a visible alias that shows the same file (planner.aliases). The
    kernel refuses a second live name for one file (EADDRINUSE)."""
    ns = session.ns
    inside = relative(target.path, session.homes[target.mount])
    if step.via is not None and landing.mount != step.via:
        raise SimError(f"{target.path} leads into {_name(ns, landing.mount)}, not through mount {step.via} as the step says")
    own = (landing.mount, landing.rel) == (target.mount, inside)
    if not own and not (landing.mount >= 0 and is_alias(session.tree, target, landing.mount, landing.rel)):
        if landing.mount == target.mount:
            raise SimError(f"{target.path} leads to {landing.rel or '/'} inside mount {target.mount}, not to {inside or '/'}")
        alias = "" if landing.mount < 0 else " or a writable, not idmapped mount showing the same file"
        raise SimError(f"{target.path} leads into {_name(ns, landing.mount)}, not mount {target.mount}{alias}: still hidden")
    place = target_place(session.tree, target) or (target.mount, inside)
    other = session.bound.get(place)
    if other is not None:
        raise SimError(f"the kernel would refuse (EADDRINUSE): {target.path} names the socket file {other} is bound to")
    if not target.unlinked:
        session.bound[place] = target.id
    session.done.add(target.id)


# Each op's symbolic handler, through the op table both check and the executor follow (planner.steps).
_OPS: dict[str, Callable[..., None]] = handlers_for({
    "yard-create": _yard_create,
    "yard-remove": _yard_remove,
    "move-aside": _move_aside,
    "move-back": _move_back,
    "keeper-bind": _keeper_bind,
    "make-private": _make_private,
    "rejoin-group": _rejoin_group,
    "keeper-remove": _keeper_remove,
    **dict.fromkeys(TARGET_OPS, _reach_target),
}, "check")


def place_below_binds(session: Session, mount: int, rel: str) -> tuple[int, str]:
    """(mount, rel) with the plan's own bind mounts on that place looked through: a second
    mount-source onto one `to` lands on the first one's root, and is still at that place."""
    ns = session.ns
    while mount in session.created and not rel:
        parent = ns.parent[mount]
        if parent is None:
            break
        mount, rel = parent, ns.rel[mount]
    return mount, rel


def destination_now(session: Session, target: Target) -> str | None:
    """A path that leads now to the place the dump has a mount-source's `to`: `to` itself, or, while
    the mount holding it is moved aside, its place in the yard (the new mount then travels back
    with it). None when no path leads there."""
    assert target.to is not None
    ns = session.ns
    dumped = session.destinations[target.id]
    for path in (target.to, ns.path_to(dumped.mount, dumped.rel)):
        if path is None:
            continue
        now = ns.walk(path)
        if place_below_binds(session, now.mount, now.rel) == (dumped.mount, dumped.rel):
            return path
    return None


def new_session(
    tree: MountTree, targets: list[Target] | tuple[Target, ...], locked: frozenset[int] = frozenset(),
    steps: Iterable[Step] = (), unattached: Iterable[int] = (),
) -> Session:
    """A session before the first step; `steps`, the plan to come, tells which yards it creates.

    unattached: mounts the plan attaches itself (a strategy that builds the tree), detached at the
    start; where targets and mount-source destinations lie is still read from the tree as dumped."""
    session = Session(Namespace(tree), {t.id: t for t in targets}, tree, locked=locked, stand_in=tree.stand_in)
    session.planned_yards = {s.path for s in steps if s.op == "yard-create" and s.path is not None}
    session.unbindable = {m.mount_id for m in tree.mounts if m.optional and m.unbindable}
    session.unbindable_before = frozenset(session.unbindable)
    for target in targets:
        mount = tree.by_id.get(target.mount)
        if mount is None:
            continue  # analysis refuses such a target; a hand plan naming it fails on "not in the dump"
        session.homes[target.mount] = mount.mountpoint
        if target.kind == "mount-source" and target.to is not None:
            session.destinations[target.id] = session.ns.walk(target.to)
    for mount_id in unattached:
        session.ns.detach(mount_id)
    return session


def _describe(step: Step) -> str:
    return f"{step.op} {step.target}" if step.target else f"{step.op} {step.mount if step.mount is not None else step.path}"


def check_plan(
    tree: MountTree, targets: list[Target] | tuple[Target, ...], steps: list[Step], locked: frozenset[int] = frozenset(),
    progress: Progress = quiet, unattached: Iterable[int] = (),
) -> list[str]:
    """Every problem with the plan, or [] when it reaches every target and leaves the tree as dumped.

    `locked`: mounts locked to their parent (the dump's locked_mounts), which no move may take;
    `unattached`: mounts the plan itself attaches (they start detached; see new_session).
    """
    session = new_session(tree, targets, locked, steps, unattached)
    problems: list[str] = []
    every_so_often = every(len(steps))
    for index, step in enumerate(steps):
        if index % every_so_often == 0:
            progress("checking the plan", index, len(steps))
        try:
            apply_step(session, step)
        except SimError as err:
            problems.append(f"step {index} ({_describe(step)}): {err}")
            return problems
    progress("checking the plan", len(steps), len(steps))
    return final_problems(session, None, targets)


def require_valid_plan(
    tree: MountTree, targets: list[Target] | tuple[Target, ...], steps: list[Step], locked: frozenset[int] = frozenset(),
    progress: Progress = quiet,
) -> None:
    """PlanRejected (exit 1) naming the problems, unless check_plan finds none."""
    problems = check_plan(tree, targets, steps, locked, progress)
    if problems:
        raise PlanRejected(problems)


Shape = dict[int, tuple[int | None, str, int | None, int | None]]


def final_problems(session: Session, before: Shape | None, targets: list[Target] | tuple[Target, ...]) -> list[str]:
    """After the last step: every target reached, the tree as `before` (None: as dumped), no yard left."""
    problems = []
    missing = [t.id for t in targets if t.id not in session.done]
    if missing:
        problems.append(f"targets never reached: {', '.join(missing)}")
    # The end state is judged against the tree as dumped, not as the namespace started (a strategy
    # may start with mounts not yet attached). A namespace exactly as dumped has the dumped shape;
    # only one that is not (a mount elsewhere, a bind mount made, a legacy sibling back on top of its
    # lower one) is judged mount by mount. On a 1e5-mount tree that spares two passes over every mount.
    if before is not None or not session.ns.is_as_dumped():
        if before is None:
            before = Namespace.as_dumped(session.ns).shape()
        after = {k: v for k, v in session.ns.shape().items() if k not in session.created}
        # Only the mounts that differ are sorted for the report: on a big tree that is none or a few.
        changed = [mount_id for mount_id in before.keys() | after.keys() if before.get(mount_id) != after.get(mount_id)]
        for mount_id in sorted(changed, key=lambda i: (i < 0, abs(i))):
            was, now = before.get(mount_id), after.get(mount_id)
            problems.append(f"tree not restored: {_shape_text(session.ns, mount_id, was)} became "
                            f"{_shape_text(session.ns, mount_id, now)}")
    for mount_id in sorted(session.unbindable_before - session.unbindable):
        problems.append(f"tree not restored: {_name(session.ns, mount_id)} is no longer unbindable")
    if session.yards:
        problems.append(f"yard left mounted: {', '.join(session.yards)}")
    for yard, keepers in session.waiting.items():
        names = ", ".join(session.ns.label(keeper) for keeper, _ in keepers)
        problems.append(f"{names} waited for yard {yard}, which was never created")
    return problems


def _shape_text(ns: Namespace, mount_id: int, shape: tuple[int | None, str, int | None, int | None] | None) -> str:
    if shape is None:
        return f"{_name(ns, mount_id)} (absent)"
    parent, rel, group, master = shape
    if parent is None:
        where = "the root mount"
    else:  # rel is the mount point inside the parent mount, not an absolute path
        where = f"on {_name(ns, parent)}, " + (f"at {rel} inside it" if rel else "on its root")
    prop = f", shared:{group}" if group is not None else ""
    prop += f", master:{master}" if master is not None else ""
    return f"{_name(ns, mount_id)} {where}{prop}"

