"""An independent judge of plans: a brute-force mount namespace written from the kernel's rules.

Nothing here comes from planner/ (no simulate, no check, no analysis): the tests use it to
judge what the planner and `check` say. It is deliberately naive: a dict of mounts, a list
of the mounts on each place, and a walk that looks every component up afresh.

The model (DESIGN.md, "Path resolution" and "Kernel rules"; fs/namespace.c):
- a mount sits on a dentry of its parent's filesystem (here: its parent and the path of that
  dentry inside the parent's superblock); its root is a path inside its own superblock;
- a walk starts at the root mount's root and, at each component, steps onto the topmost
  mount on that dentry, then onto whatever is stacked on that mount's root, and so on;
- legacy shadow siblings (two mounts on one dentry of one parent, from kernels before 4.11):
  the one listed first is on top; nothing a plan does creates new siblings, since mount(2)
  and move_mount(2) attach on top of what a walk of the destination reaches;
- move_mount: the source path must be a mount's root (EINVAL), a locked mount cannot move
  (EINVAL), a mount whose parent is shared cannot move (EINVAL), a destination inside the
  moved subtree is ELOOP, an unbindable subtree cannot go under a shared mount (EINVAL);
- attaching under a shared mount propagates a copy to every peer and slave that can see the
  dentry, and makes the attached subtree shared (new peer groups where it was private);
  since 4.11 a copy landing where a mount already is goes beneath it; a group may have
  members the dump does not list (other namespaces), so such an attachment always leaves
  copies behind somewhere;
- a bind (open_tree clone) of a shared mount is its peer, of a slave a slave of the same
  master; an unbindable mount cannot be bound (EINVAL);
- making a mount private takes it out of its group and its master (and clears unbindable);
  when a group loses its last member, its slaves pass to the group's own master, or become private;
- MOVE_MOUNT_SET_GROUP: both mount roots, one superblock, `to`'s root inside `from`'s, `to`
  private, `from` shared or a slave (EINVAL otherwise); `to` joins `from`'s group and master;
- umount of a mount with mounts on it is EBUSY.

A plan (overmount-plan/1 JSON steps) is valid when every step is one the kernel accepts and
does what it says (a step's `mount` is the mount its path names), every target is reached
once, in its own mount at its own dentry by whatever path (a bind at its own path, the
socket's name, in its own mount or through a writable mount of the same superblock showing
that dentry below its root: the socket is the file; a second live socket on one file is
EADDRINUSE), each mount-source bind lands on the dentry where the dump's `to` led, and at
the end the tree (parents, dentries, stacking, peer groups and slaves as relations, unbindable
mounts) equals the dump's, with no mount the dump does not have except the binds the
mount-source targets asked for. A keeper bound for a yard the plan has not made yet waits,
unattached, until the yard is made (the executor does the same). A table that is a forest
hangs from one stand-in mount at /.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Refused(Exception):
    """The kernel would refuse the step, or it does not do what it says."""


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _join(top: str, rel: str) -> str:
    return "/" + "/".join(_parts(top) + _parts(rel))


def _inside(path: str, top: str) -> str | None:
    """`path` relative to `top` ('' or 'a/b'), or None when it is not below it."""
    p, t = _parts(path), _parts(top)
    return "/".join(p[len(t):]) if p[: len(t)] == t else None


def _clean(path: Any) -> bool:
    return (
        isinstance(path, str)
        and path.startswith("/")
        and (path == "/" or not path.endswith("/"))
        and all(p not in ("", ".", "..") for p in path.split("/")[1:] if path != "/")
    )


@dataclass
class Mnt:
    id: int
    dev: str
    root: str  # path of its root inside its superblock
    parent: int | None
    dentry: str  # the dentry of the parent's superblock it sits on ("" for the root mount)
    group: int | None = None  # peer group when shared
    master: int | None = None  # the group it is a slave of
    unbindable: bool = False
    writable: bool = True  # bind(2) can make a socket file through it


STAND_IN = -(10**6)  # the id of the mount standing for what a forest's table does not list


@dataclass(frozen=True)
class Record:
    """One mount as the dump lists it (mountpoint absolute in the namespace)."""

    id: int
    parent: int
    dev: str
    root: str
    mountpoint: str
    shared: int | None = None
    master: int | None = None
    unbindable: bool = False
    writable: bool = True  # not mounted ro or idmapped, on a superblock that is not ro


@dataclass
class Kernel:
    """The namespace: mounts, and on each (parent, dentry) the mounts there, topmost first."""

    mounts: dict[int, Mnt] = field(default_factory=dict)
    on: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    root: int = 0
    locked: frozenset[int] = frozenset()
    _ids: int = 0
    # Attachments under a shared mount: a peer group may have members the dump does not list
    # (in other namespaces: on a systemd host / is shared with every container's), and each
    # gets a copy; nothing a plan does takes those back.
    shared_attachments: int = 0
    unlisted_peers: bool = True  # False: the dump's mounts are all there is (a replica)

    @classmethod
    def from_records(cls, records: Iterable[Record], locked: Iterable[int] = ()) -> Kernel:
        records = list(records)
        ns = cls(locked=frozenset(locked))
        known = {r.id for r in records}
        by_id = {r.id: r for r in records}
        tops = [r for r in records if r.parent not in known or r.parent == r.id]
        if len(tops) == 1 and tops[0].mountpoint == "/":
            root = tops[0]
        else:
            # A forest (a chrooted process's table, an excerpt): what it does not list is one
            # mount at /, and each top sits on it at its own mountpoint.
            root = Record(STAND_IN, STAND_IN, "not listed", "/", "/")
            by_id[STAND_IN] = root
            records = [root] + [Record(**{**vars(r), "parent": STAND_IN}) if r in tops else r for r in records]
        ns.root = root.id
        for r in records:  # listing order: on a shared dentry the first listed ends up on top
            if r is root:
                ns.mounts[r.id] = Mnt(r.id, r.dev, r.root, None, "", r.shared, r.master, r.unbindable, r.writable)
                continue
            parent = by_id[r.parent]
            rel = _inside(r.mountpoint, parent.mountpoint)
            assert rel is not None, (r, parent)
            dentry = _join(parent.root, rel)
            ns.mounts[r.id] = Mnt(r.id, r.dev, r.root, r.parent, dentry, r.shared, r.master, r.unbindable, r.writable)
            ns.on.setdefault((r.parent, dentry), []).append(r.id)
        return ns

    def copy(self) -> Kernel:
        out = Kernel(root=self.root, locked=self.locked, _ids=self._ids, shared_attachments=self.shared_attachments,
                     unlisted_peers=self.unlisted_peers)
        out.mounts = {i: Mnt(**vars(m)) for i, m in self.mounts.items()}
        out.on = {k: list(v) for k, v in self.on.items()}
        return out

    # --- the walk ----------------------------------------------------------------------

    def climb(self, mount: int, dentry: str) -> tuple[int, str]:
        while self.on.get((mount, dentry)):
            mount = self.on[(mount, dentry)][0]
            dentry = self.mounts[mount].root
        return mount, dentry

    def walk(self, path: str) -> tuple[int, str]:
        """(mount, dentry) a walk of the absolute `path` ends on."""
        mount, dentry = self.climb(self.root, self.mounts[self.root].root)
        for part in _parts(path):
            mount, dentry = self.climb(mount, _join(dentry, part))
        return mount, dentry

    def trail(self, path: str) -> list[int]:
        """Every mount a walk of `path` steps onto, in order."""
        out = [self.root]
        mount, dentry = self.root, self.mounts[self.root].root
        for part in [None, *_parts(path)]:
            if part is not None:
                dentry = _join(dentry, part)
            while self.on.get((mount, dentry)):
                mount = self.on[(mount, dentry)][0]
                dentry = self.mounts[mount].root
                out.append(mount)
        return out

    def named(self, path: str) -> int:
        """The mount whose root `path` names (the topmost there); EINVAL when it names no mount root."""
        mount, dentry = self.walk(path)
        if dentry != self.mounts[mount].root:
            raise Refused(f"EINVAL: {path} is not a mount point")
        return mount

    def subtree(self, top: int) -> list[int]:
        out, todo = [], [top]
        while todo:
            m = todo.pop()
            out.append(m)
            todo.extend(c for (p, _), kids in self.on.items() if p == m for c in kids)
        return out

    def attached(self, mount: int) -> bool:
        """Hangs from the root (not detached)."""
        seen = set()
        while mount != self.root:
            if mount in seen or self.mounts[mount].parent is None:
                return False
            seen.add(mount)
            mount = self.mounts[mount].parent  # type: ignore[assignment]
        return True

    # --- changes ---------------------------------------------------------------------------

    def new_id(self) -> int:
        self._ids -= 1
        return self._ids

    def detach(self, mount: int) -> None:
        m = self.mounts[mount]
        assert m.parent is not None
        self.on[(m.parent, m.dentry)].remove(mount)
        if not self.on[(m.parent, m.dentry)]:
            del self.on[(m.parent, m.dentry)]
        m.parent, m.dentry = None, ""

    def put(self, mount: int, parent: int, dentry: str) -> None:
        """Attach `mount` on top of (parent, dentry), which a walk reached, so nothing is there."""
        assert not self.on.get((parent, dentry)), "a walk never ends on a dentry that has a mount"
        m = self.mounts[mount]
        m.parent, m.dentry = parent, dentry
        self.on[(parent, dentry)] = [mount]

    def attach(self, mount: int, path: str) -> None:
        """mount(2)/move_mount(2) of an unattached `mount` onto `path`, with propagation."""
        parent, dentry = self.walk(path)
        if self.mounts[parent].group is not None:
            if any(self.mounts[m].unbindable for m in self.subtree(mount)):
                raise Refused(f"EINVAL: an unbindable mount cannot go under shared mount {parent}")
            self._propagate(mount, parent, dentry)
            self.shared_attachments += self.unlisted_peers
        self.put(mount, parent, dentry)

    def _propagate(self, mount: int, dest: int, dentry: str) -> None:
        """A copy of `mount` to every peer and slave of shared `dest` that sees `dentry`;
        the attached subtree becomes shared (private members get new groups)."""
        for m in self.subtree(mount):
            if self.mounts[m].group is None:
                self.mounts[m].group = self.new_id()
        src = self.mounts[dest]
        groups, receivers = {src.group}, []
        changed = True
        while changed:
            changed = False
            for m in self.mounts.values():
                if m.id == dest or m.id in receivers or not self.attached(m.id):
                    continue
                if m.group in groups or m.master in groups:
                    receivers.append(m.id)
                    if m.group is not None and m.group not in groups:
                        groups.add(m.group)
                        changed = True
        source = self.mounts[mount]
        for r in receivers:
            peer = self.mounts[r]
            if peer.dev != src.dev or _inside(dentry, peer.root) is None:
                continue  # the dentry is not visible through this peer
            copy = Mnt(self.new_id(), source.dev, source.root, None, "", source.group, None)
            self.mounts[copy.id] = copy
            below = self.on.pop((r, dentry), [])
            self.put(copy.id, r, dentry)
            for other in below:  # tucked beneath what was there
                self.mounts[other].parent, self.mounts[other].dentry = copy.id, copy.root
                self.on.setdefault((copy.id, copy.root), []).append(other)

    def leave_group(self, mount: int) -> None:
        """Private: out of its peer group and its master; an emptied group's slaves move up."""
        m = self.mounts[mount]
        group, master = m.group, m.master
        m.group = m.master = None
        m.unbindable = False  # MS_PRIVATE clears MNT_UNBINDABLE as well (change_mnt_propagation)
        if group is not None and not any(o.group == group for o in self.mounts.values()):
            for o in self.mounts.values():
                if o.master == group:
                    o.master = master

    def umount(self, mount: int) -> None:
        if any(p == mount for (p, _) in self.on):
            raise Refused(f"EBUSY: mount {mount} has mounts on it")
        self.leave_group(mount)
        self.detach(mount)
        del self.mounts[mount]

    def clone(self, source: int, dentry: str) -> int:
        """open_tree(OPEN_TREE_CLONE) of `source` at `dentry` (non-recursive): unattached."""
        s = self.mounts[source]
        if s.unbindable:
            raise Refused(f"EINVAL: mount {source} is unbindable")
        new = Mnt(self.new_id(), s.dev, dentry, None, "", s.group, s.master)
        self.mounts[new.id] = new
        return new.id

    # --- what must come back ----------------------------------------------------------

    def top_of(self, mount: int) -> int:
        """The top of what stands on `mount`'s root, siblings taken as the stack a walk sees."""
        kids = self.on.get((mount, self.mounts[mount].root))
        return self.top_of(kids[0]) if kids else mount

    def shape(self, leave_out: Iterable[int] = ()) -> dict[str, Any]:
        """Parents and dentries (legacy siblings as the stack a walk sees: each lower one first,
        the upper on the top of its stack), propagation as relations, and which are unbindable."""
        skip = set(leave_out)
        places: dict[int, tuple[int | None, str]] = {self.root: (None, "")}
        for (parent, dentry), kids in self.on.items():
            for below, mount in zip([None, *reversed(kids)], reversed(kids)):
                if below is None:
                    places[mount] = (parent, dentry)
                else:
                    top = self.top_of(below)
                    places[mount] = (top, self.mounts[top].root)
        live = {i for i in places if i not in skip and self.attached(i)}
        members: dict[int, frozenset[int]] = {}
        for m in self.mounts.values():
            if m.id in live and m.group is not None:
                members[m.group] = members.get(m.group, frozenset()) | {m.id}
        slaves: dict[int, frozenset[int]] = {}
        for m in self.mounts.values():
            if m.id in live and m.master is not None:
                slaves[m.master] = slaves.get(m.master, frozenset()) | {m.id}
        return {
            "mounts": {i: places[i] for i in live},
            "groups": frozenset(members.values()),
            "slaves": frozenset((members.get(g, frozenset()), s) for g, s in slaves.items()),
            "unbindable": frozenset(i for i in live if self.mounts[i].unbindable),
            "propagated beyond the dump": self.shared_attachments,
        }


@dataclass
class Goal:
    """A target as the dump has it: its mount, its dentry there, and for a bind its path."""

    id: str
    kind: str
    mount: int
    path: str
    dev: str
    dentry: str
    to: str | None = None
    to_place: tuple[int, str] | None = None
    unlinked: bool = False  # a socket whose name was unlinked after bind (it is bound, then unlinked again)


def goals_of(ns: Kernel, targets: Iterable[Any], homes: Mapping[int, str]) -> dict[str, Goal]:
    """`targets`: objects with id, kind, mount, path, to; `homes`: each mount's dumped mountpoint."""
    out = {}
    for t in targets:
        rel = _inside(t.path, homes[t.mount])
        assert rel is not None, t
        to_place = ns.walk(t.to) if t.to is not None else None
        out[t.id] = Goal(t.id, t.kind, t.mount, t.path, ns.mounts[t.mount].dev, _join(ns.mounts[t.mount].root, rel),
                         t.to, to_place, bool(getattr(t, "unlinked", False)))
    return out


class Judge:
    """Applies plan steps (JSON dicts) one by one; `problems()` after the last."""

    def __init__(self, ns: Kernel, goals: Mapping[str, Goal]) -> None:
        self.ns = ns
        self.before = ns.shape()
        self.goals = goals
        self.yards: dict[str, int] = {}
        self.keepers: dict[int, int] = {}  # keeper -> the mount whose group it keeps
        self.made: list[int] = []  # binds made by mount-source targets
        self.done: set[str] = set()
        self.planned_yards: set[str] = set()  # the plan's yard-create paths (set by judge())
        self.socket_files: set[tuple[str, str]] = set()  # (dev, dentry) of sockets bound and not unlinked
        self.waiting: dict[str, list[tuple[int, str]]] = {}  # keepers bound before their yard exists

    def step(self, step: Mapping[str, Any]) -> None:
        op = step.get("op")
        for key in ("path", "from", "to"):
            if key in step and not _clean(step[key]):
                raise Refused(f"{key} {step[key]!r} is not a clean absolute path")
        ns = self.ns
        if op == "yard-create":
            if step["path"] in self.yards:
                raise Refused(f"a yard is already at {step['path']}")
            yard = self.new_mount()
            ns.attach(yard, step["path"])
            ns.leave_group(yard)  # the executor makes it private once attached
            self.yards[step["path"]] = yard
            for keeper, path in self.waiting.pop(step["path"], []):
                ns.attach(keeper, path)
        elif op == "yard-remove":
            yard = ns.named(step["path"])
            if self.yards.get(step["path"]) != yard:
                raise Refused(f"{step['path']} names mount {yard}, not a yard this plan made there")
            ns.umount(yard)
            del self.yards[step["path"]]
        elif op in ("move-aside", "move-back"):
            mount = self.expect(step["from"], step["mount"])
            m = ns.mounts[mount]
            if m.parent is None:
                raise Refused("EINVAL: the root mount cannot move")
            if mount in ns.locked:
                raise Refused(f"EINVAL: mount {mount} is locked to its parent")
            if ns.mounts[m.parent].group is not None:
                raise Refused(f"EINVAL: mount {mount}'s parent {m.parent} is shared")
            dest, _ = ns.walk(step["to"])
            if dest in ns.subtree(mount):
                raise Refused(f"ELOOP: {step['to']} is inside mount {mount}")
            parent, dentry = m.parent, m.dentry
            ns.detach(mount)
            try:
                ns.attach(mount, step["to"])
            except Refused:
                ns.put(mount, parent, dentry)
                raise
        elif op == "keeper-bind":
            parent = self.expect(step["from"], step["mount"])
            keeper = ns.clone(parent, ns.mounts[parent].root)
            yard, _, slot = step["to"].rpartition("/")
            if yard in self.planned_yards and yard not in self.yards and slot:
                # a keeper of the mount the yard will sit in: cloned now, attached once the yard is made
                self.waiting.setdefault(yard, []).append((keeper, step["to"]))
            else:
                ns.attach(keeper, step["to"])
            self.keepers[keeper] = parent
        elif op == "make-private":
            ns.leave_group(self.expect(step["path"], step["mount"]))
        elif op == "rejoin-group":
            keeper = ns.named(step["from"])
            if self.keepers.get(keeper) != step["mount"]:
                raise Refused(f"{step['from']} names mount {keeper}, not a keeper of mount {step['mount']}")
            to = self.expect(step["to"], step["mount"])
            k, m = ns.mounts[keeper], ns.mounts[to]
            if k.dev != m.dev or _inside(m.root, k.root) is None:
                raise Refused("EINVAL: SET_GROUP needs one superblock, to's root inside from's")
            if m.group is not None or m.master is not None:
                raise Refused(f"EINVAL: SET_GROUP needs mount {to} private")
            if k.group is None and k.master is None:
                raise Refused(f"EINVAL: SET_GROUP from a private mount {keeper}")
            m.group, m.master = k.group, k.master
        elif op == "keeper-remove":
            keeper = ns.named(step["path"])
            if self.keepers.get(keeper) != step["mount"]:
                raise Refused(f"{step['path']} names mount {keeper}, not a keeper of mount {step['mount']}")
            ns.umount(keeper)
            del self.keepers[keeper]
        elif op in ("open", "chdir", "root", "bind", "mmap", "mount-source"):
            self.reach(step)
        else:
            raise Refused(f"unknown op {op!r}")

    def new_mount(self) -> int:
        mount = Mnt(self.ns.new_id(), f"yard{len(self.yards)}", "/", None, "")
        self.ns.mounts[mount.id] = mount
        return mount.id

    def expect(self, path: str, mount: int) -> int:
        named = self.ns.named(path)
        if named != mount:
            raise Refused(f"{path} names mount {named}, the step says {mount}")
        return named

    def reach(self, step: Mapping[str, Any]) -> None:
        goal = self.goals.get(step.get("target", ""))
        if goal is None or goal.kind != step["op"] or goal.mount != step["mount"]:
            raise Refused(f"step does not match a target: {step}")
        if goal.id in self.done:
            raise Refused(f"target {goal.id} done twice")
        if goal.kind == "bind" and step["path"] != goal.path:
            raise Refused("a socket is bound at its own path")  # the name is the path bind(2) gets
        landing = self.ns.walk(step["path"])
        if goal.kind == "bind":
            self.bind(goal, landing, step.get("via"))
        elif landing != (goal.mount, goal.dentry):
            raise Refused(f"{step['path']} leads to {landing}, not ({goal.mount}, {goal.dentry})")
        if goal.kind == "mount-source":
            # `to` may lead through the yard, onto the place the dump's `to` has in a parked mount:
            # the new mount then travels back with it.
            bind = self.ns.clone(goal.mount, goal.dentry)
            if self.below_binds(*self.ns.walk(step["to"])) != goal.to_place:
                raise Refused(f"{step['to']} leads to {self.ns.walk(step['to'])}, the dump's {goal.to} to {goal.to_place}")
            self.ns.attach(bind, step["to"])
            self.made.append(bind)
        self.done.add(goal.id)

    def bind(self, goal: Goal, landing: tuple[int, str], via: Any) -> None:
        """bind(2) makes the socket file where its path leads: in the target's own mount, or in
        another mount of the same superblock showing that place strictly inside its root (an
        alias), writable; the socket is that file, whichever mount made it."""
        mount, dentry = landing
        m = self.ns.mounts[mount]
        own = landing == (goal.mount, goal.dentry)
        alias = m.dev == goal.dev and dentry == goal.dentry and bool(_inside(dentry, m.root)) and m.writable
        if not own and not alias:
            raise Refused(f"{goal.path} leads to {landing}, not to ({goal.mount}, {goal.dentry}) or a writable alias of it")
        if via is not None and via != mount:
            raise Refused(f"{goal.path} leads into mount {mount}, the step says through {via}")
        if (goal.dev, goal.dentry) in self.socket_files:
            raise Refused(f"EADDRINUSE: a socket is bound at {goal.path} already")
        if not goal.unlinked:
            self.socket_files.add((goal.dev, goal.dentry))

    def below_binds(self, mount: int, dentry: str) -> tuple[int, str]:
        """The place under the binds earlier mount-source steps stacked on it (a later one lands on them)."""
        while mount in self.made and dentry == self.ns.mounts[mount].root:
            mount, dentry = self.ns.mounts[mount].parent, self.ns.mounts[mount].dentry  # type: ignore[assignment]
        return mount, dentry

    def problems(self) -> list[str]:
        out = []
        missing = sorted(set(self.goals) - self.done)
        if missing:
            out.append(f"targets never reached: {missing}")
        # A new bind mount sits on the dentry of the dump's `to` from the step on (it is checked
        # there), and no step names it to move it: it is where the dump's `to` is once its parent is.
        after = self.ns.shape(leave_out=self.made)
        for key in ("mounts", "groups", "slaves", "unbindable", "propagated beyond the dump"):
            if after[key] != self.before[key]:
                out.append(f"{key} differ: {_diff(self.before[key], after[key])}")
        return out


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, int):
        return f"{a} -> {b}"
    if isinstance(a, dict):
        keys = sorted(set(a) | set(b))
        return ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in keys if a.get(k) != b.get(k))
    return f"{sorted(map(str, a - b))} -> {sorted(map(str, b - a))}"


def judge(
    records: Iterable[Record],
    targets: Iterable[Any],
    steps: Iterable[Mapping[str, Any]],
    locked: Iterable[int] = (),
    unlisted_peers: bool = True,
) -> list[str]:
    """Every problem with the plan, [] when it is valid; the first refused step ends the run.

    unlisted_peers=False judges the namespace as a replica has it: the dump's mounts and nothing
    else, so a shared group's copies go only to the members it lists."""
    records = list(records)
    ns = Kernel.from_records(records, locked)
    ns.unlisted_peers = unlisted_peers
    judge_ = Judge(ns, goals_of(ns, targets, {r.id: r.mountpoint for r in records}))
    steps = list(steps)
    judge_.planned_yards = {s["path"] for s in steps if s.get("op") == "yard-create" and isinstance(s.get("path"), str)}
    for index, step in enumerate(steps):
        try:
            judge_.step(step)
        except Refused as err:
            return [f"step {index} ({step.get('op')}): {err}"]
        except KeyError as err:
            return [f"step {index} ({step.get('op')}): missing {err}"]
    return judge_.problems()


# --- brute force over what must move -----------------------------------------------------


def reaches(ns: Kernel, goal: Goal) -> bool:
    return ns.walk(goal.path) == (goal.mount, goal.dentry)


def minimal_movers(records: list[Record], target: Any) -> list[frozenset[int]]:
    """Every smallest set of mounts whose moves (each named by its path, one at a time, in some
    order) let a walk of the target's path reach it; a move takes the mount's subtree along.

    Breadth-first over sets of moved mounts. Each move tries every mount the walk passes
    through that its path names (the top of its stack): moving a mount the walk does not pass
    through changes neither the walk nor which of its mounts a path names (every ancestor of a
    mount on the walk is on it), so no smallest set holds one.
    """
    homes = {r.id: r.mountpoint for r in records}
    start = Kernel.from_records(records)
    goal = goals_of(start, [target], homes)[target.id]
    layer: dict[frozenset[int], Kernel] = {frozenset(): start}
    while layer:
        found = [moved for moved, ns in layer.items() if reaches(ns, goal)]
        if found:
            return found
        nxt: dict[frozenset[int], Kernel] = {}
        for moved, ns in layer.items():
            for mount in ns.trail(goal.path):
                if mount == ns.root or moved | {mount} in nxt:
                    continue
                try:
                    if ns.named(homes[mount]) != mount:
                        continue
                except Refused:
                    continue
                after = ns.copy()
                after.detach(mount)  # aside: off the tree, with its subtree
                nxt[moved | {mount}] = after
        layer = nxt
    return []


def lone_covers(records: list[Record], target: Any) -> set[int]:
    """Mounts on a mount of the target's chain (not the next one of it) that would hide the target
    if they were the only other mount: the brute-force meaning of `covered_by`."""
    by_id = {r.id: r for r in records}
    known = set(by_id)
    chain = [by_id[target.mount]]
    while chain[-1].parent in known and chain[-1].parent != chain[-1].id:
        chain.append(by_id[chain[-1].parent])
    chain_ids = {r.id for r in chain}
    out = set()
    for r in records:
        if r.id in chain_ids or r.parent not in chain_ids:
            continue
        alone = [x for x in records if x.id in chain_ids or x.id == r.id]  # listing order kept
        ns = Kernel.from_records(alone)
        goal = goals_of(ns, [target], {x.id: x.mountpoint for x in alone})[target.id]
        if not reaches(ns, goal):
            out.add(r.id)
    return out


def records_of_mounts(mounts: Iterable[Any]) -> list[Record]:
    """From planner.mountinfo.Mount records (scenarios; the parsed text is all they share)."""
    def writable(m: Any) -> bool:
        return not {"ro", "idmapped"} & set(m.options.split(",")) and "ro" not in m.super_options.split(",")

    return [
        Record(m.mount_id, m.parent_id, m.dev, m.root, m.mountpoint, m.shared, m.master, m.unbindable, writable(m))
        for m in mounts
    ]
