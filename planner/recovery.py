"""What a plan stopped part way (its restorer killed with -9) left in its yard, and the steps that
put it back: pure, from the plan and the mount table of the namespace as it is now.

A path yard is what makes this possible: a mount parked in it, and a keeper holding a peer group,
can be found by path after the process that parked them is gone (a mount held only by an fd of a
dead process would be gone for good). Each slot holds what the last move-aside or keeper-bind into
it put there, so the steps are the plan's own ending: the parked mounts go home in reverse order
of their move-aside, then each keeper's mount rejoins its group (unless it is still in it) and the
keeper goes, newest first, then the yard. The steps' `mount` fields are the ids of the live table,
not the dump's: they are what the namespace has now.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.mountinfo import Mount
from planner.simulate import Namespace, SimError
from planner.steps import Step
from planner.tree import MountTree


@dataclass(frozen=True)
class Recovery:
    steps: tuple[Step, ...]
    lost: tuple[str, ...]  # what cannot be put back, each saying why
    notes: tuple[str, ...] = ()


def recovery_plan(plan: list[Step], table: list[Mount], source: str = "<mountinfo>") -> Recovery:
    tree = MountTree(table, source)
    ns = Namespace(tree)
    by_id = {m.mount_id: m for m in table}
    placed: dict[str, tuple[int, Step]] = {}  # slot -> the last step that put a mount there
    for index, step in enumerate(plan):
        if step.op in ("move-aside", "keeper-bind") and step.to is not None:
            placed[step.to] = (index, step)
    moves: list[tuple[int, Step]] = []
    keepers: list[tuple[int, int, str, Step]] = []  # (index, keeper's live id, slot, its keeper-bind)
    ending: list[Step] = []
    lost: list[str] = []
    notes: list[str] = []
    yards = list(dict.fromkeys(s.path for s in plan if s.op == "yard-create" and s.path is not None))
    found = 0
    for yard in yards:
        landing = ns.walk(yard)
        if landing.rel or by_id.get(landing.mount, None) is None or by_id[landing.mount].mountpoint != yard:
            continue  # no yard there: never made, or already removed
        found += 1
        strangers: list[str] = []
        for (parent, rel), ids in sorted(ns.children.items()):
            if parent != landing.mount:
                continue
            slot = yard + rel
            what = placed.get(slot)
            if what is None or rel.count("/") != 1:
                strangers.extend(f"mount {i} at {slot}" for i in ids)
                continue
            index, step = what
            live = ids[-1]
            if step.op == "move-aside":
                assert step.src is not None
                moves.append((index, Step("move-back", mount=live, src=slot, to=step.src,
                                          why=f"mount {step.mount} of the dump, parked at {slot}, goes home")))
            else:
                keepers.append((index, live, slot, step))
        if strangers:
            lost.append(f"yard {yard} holds {', '.join(strangers)}, which the plan did not put there: left in place")
        else:
            ending.append(Step("yard-remove", path=yard, why="every parked mount is home"))
            notes.append(f"the directory {yard} is left: it may have been there before the plan")
    steps: list[Step] = []
    for _, step in sorted(moves, key=lambda item: -item[0]):
        steps.append(step)
        assert step.mount is not None and step.to is not None
        ns.detach(step.mount)  # as the kernel will have it, for the keepers' mounts below
        ns.attach(step.mount, step.to)
    holding = {step.src for _, _, _, step in keepers}
    for _, keeper, slot, bind in sorted(keepers, key=lambda item: -item[0]):
        assert bind.src is not None
        try:
            parent = ns.mount_at(bind.src)
        except SimError as err:
            lost.append(f"the keeper at {slot} holds the peer group of mount {bind.mount} of the dump, but {err}")
            continue
        if ns.group[parent] is None and ns.master[parent] is None:
            steps.append(Step("rejoin-group", mount=parent, src=slot, to=bind.src,
                              why=f"mount {parent} at {bind.src} went private for the plan; its keeper brings it back"))
        steps.append(Step("keeper-remove", mount=keeper, path=slot, why="the keeper has done its job"))
    for bind in (s for s in plan if s.op == "keeper-bind"):
        assert bind.src is not None
        if bind.src in holding:
            continue
        try:
            parent = ns.mount_at(bind.src)
        except SimError:
            continue
        if ns.group[parent] is None and ns.master[parent] is None:
            # The plan keeps a group only for a shared mount. Private now, with no keeper in a yard:
            # it went private while its keeper waited, detached, for the yard to be made (a crash
            # between the two), and no member of its group is at hand to rejoin. Without any yard
            # there is no sign the plan ran here at all: then it may have been private all along.
            why = (f"mount {parent} at {bind.src} is private, and no keeper of its peer group is in a yard: if the plan "
                   "stopped between its make-private and the yard taking the keeper, its propagation is lost "
                   "(its peers and slaves keep theirs)")
            (lost if found else notes).append(why if found else why + "; no yard of the plan is here, so it may "
                                              "never have run here, and the mount may have been private before")
    return Recovery(tuple(steps + ending), tuple(lost), tuple(notes))
