"""CRIU dumps as inputs: a source of image entries, and entries -> mounts and targets.

- crit_json.py reads `crit decode` JSON (a dump directory, files by kind, or one mountpoints
  image on standard input) into images;
- layout.py finds which images of a dump directory belong to the root task (any source);
- entries.py turns one task set's image entries into the dump (pure).

A new source (binary images, a checkpoint archive) only brings images; the rest is shared.

Checked against CRIU 4.2 (crit 4.2, kernel 6.18). Decode the images of a dump
directory to JSON with crit first; this module never reads the binary .img files::

    cd /path/to/criu-dump
    crit decode --pretty -i mountpoints-10.img -o mountpoints-10.json  # the mount table (required)
    crit decode --pretty -i files.img        -o files.json             # REG and UNIXSK file entries
    crit decode --pretty -i pstree.img       -o pstree.json            # which pid is the root task
    crit decode --pretty -i ids-1.img        -o ids-1.json             # its mnt_ns_id / files_id
    crit decode --pretty -i fdinfo-2.img     -o fdinfo-2.json          # its open fds
    crit decode --pretty -i fs-1.img         -o fs-1.json              # its cwd and root
    crit decode --pretty -i mm-1.img         -o mm-1.json              # its file mappings
    crit decode --pretty -i inventory.img    -o inventory.json         # fdinfo per id or per pid

or all at once: ``for i in *.img; do crit decode --pretty -i "$i" -o "${i%.img}.json"; done``.
``crit decode`` without ``--pretty`` is accepted too (numbers instead of flag names).

``crit_json.dump_from_crit(directory)`` finds the files by those names: the root task is the
first ``pstree.json`` entry; its ``ids-PID.json`` names the mount namespace
(``mountpoints-<mnt_ns_id>.json``) and the fd table (``fdinfo-<files_id>.json``,
or ``fdinfo-PID.json`` when ``inventory.json`` says ``fdinfo_per_id`` is false).
Other tasks in that mount namespace contribute their targets too. Without
pstree/ids, a directory holding exactly one file of each kind is used as is.

``dump_from_crit({"mountpoints": ..., "files": ..., "fdinfo": ..., "fs": ..., "mm": ...})``
takes the paths of one task's images; only "mountpoints" is required.

What the result holds (overmount-dump/1 plus two extra fields):

- ``mountinfo``: one line per mnt_entry, rebuilt from the image. CRIU does not
  carry everything mountinfo shows: the filesystem type of mounts it calls
  "unsupported" (``fstype`` 0: ext4, btrfs, xfs, ... on the root or external
  mounts) becomes ``unknown``; ``propagate_from:N`` is not kept; a mount with
  neither relatime nor noatime lost its other per-mount flags in CRIU's parser
  (``*flags = MS_STRICTATIME``); uid=/gid= options are already mapped into the
  dumped user namespace.
- ``targets``: ``open`` for each REG or FIFO fd (``fdN``, the lowest of the fds
  sharing one open file; a FIFO's path is in the REG entry of its id), with
  ``file_type`` from the entry's ``mode`` and ``access`` from its ``flags``;
  ``chdir`` for the cwd (``cwd``) and ``root`` for a root that is not ``/``
  (``root``, from fs ``root_id``); ``mmap`` per mapped file (``map-<file id>``),
  ``bind`` per unix socket bound to a path (``sk-<file id>``; connected stream
  sockets, which CRIU does not re-bind, and abstract names are left out). Tasks
  other than the root one get ``@PID`` appended to ``fdN``, ``cwd`` and ``root``.
- ``skipped``: ``{"id", "kind", "path", "mount", "reason"}`` for objects that
  cannot be targets (no mount id, a mount outside the table, external files, a
  root that is the namespace's own, fds of other types: pipes, eventfds, ...).
- ``notes``: what the conversion could not carry, one string each.
"""

# How to turn a CRIU dump directory's images into what we read, and where crit comes from.
CRIT_DECODE = ("decode the images first: for i in *.img; do crit decode --pretty -i \"$i\" -o \"${i%.img}.json\"; done "
               "(crit comes with CRIU: apt install criu)")

# The image kinds a paths dict may name, with the magic crit prints for each.
MAGICS = {
    "mountpoints": "MNTS",
    "files": "FILES",
    "fdinfo": "FDINFO",
    "fs": "FS",
    "mm": "MM",
    "pstree": "PSTREE",
    "ids": "IDS",
    "inventory": "INVENTORY",
}
