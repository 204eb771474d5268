"""Every way a dump comes in, one module each, behind one table (formats.py):

- mountinfo_text.py  a bare /proc/PID/mountinfo (targets from --target)
- dump_json.py       overmount-dump/1 JSON, what capture writes
- scenario.py        scenario TOML (scenarios/*.toml)
- criu/              CRIU dumps: crit_json.py the source of image entries, layout.py which images
                     belong together, entries.py entries -> mounts and targets
- capture/           a live process, read from /proc and the kernel (the thin shell)

source.py reads bytes, text and JSON once for all of them (size limit, UTF-8, the one JSON
loader, line numbers); targets.py holds the target readers and the one target collector.
"""

from planner.inputs.formats import load

__all__ = ["load"]
