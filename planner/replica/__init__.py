"""Build a dumped mount tree for real, inside a throwaway mount namespace.

`build_replica` must run in a namespace child (see kernel.run_in_namespace): it
attaches mounts and finally chroots into the replica's root, so the dump's
absolute paths (and a plan's, yard included) work verbatim.

How the tree is made:
- one fresh tmpfs superblock (fsopen/fsmount) per distinct major:minor of the
  dump; every directory a mount root, a mountpoint or a target needs is created
  through its fd, then it is parked on scratch/sb/N and named by path;
- every mount a clone (open_tree OPEN_TREE_CLONE) of its root path in its
  superblock, attached depth first through an O_PATH fd on its mountpoint opened
  from its parent's own fd (siblings deepest mountpoint first). So each mount
  lands on exactly the (parent, dentry) the dump names, whatever covers that path
  later, and stacks come out as parent and child;
- propagation per mount once its subtree is complete (nothing is attached below
  it afterwards, so nothing propagates): per peer group an *anchor* (a full-root
  clone of the superblock, made shared, on scratch/anchors/G) that members join
  with move_mount(MOVE_MOUNT_SET_GROUP); slaves join their master's group, then
  become slaves. Anchors of groups with members in the tree are unmounted (their
  peers keep the group); an anchor whose group has no member in the dump (a master
  outside the namespace) stays, outside the chroot.

Open fds stay bounded by the depth of the tree plus a few, not its size.

Nothing of the scaffolding stays reachable by path: the parked superblocks are
unmounted, the scratch tmpfs holding the replica's root and the kept anchors lies
outside the chroot.

Parts: shape.py the tree as relations (what is compared), spec.py what the replica must hold
(pure: check_replicable), build.py the syscalls that build it (build_replica, Replica).
"""

from planner.replica.build import Replica, TargetObject, build_replica
from planner.replica.shape import Key, TreeShape
from planner.replica.spec import check_replicable, sb_path

__all__ = ["Key", "Replica", "TargetObject", "TreeShape", "build_replica", "check_replicable", "sb_path"]
