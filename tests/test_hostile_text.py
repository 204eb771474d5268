"""Terminal escape injection: nothing from a dump reaches the terminal raw, in any text the tool prints.

The kernel escapes only space, tab, newline and backslash in mountinfo, so an OSC or CSI sequence
in a container's directory name arrives raw. Every line of plan text, analysis, check messages
and errors must be printable; the run report is checked in tests/namespace/test_execute.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

OSC = "\x1b]0;owned\x07"
CSI = "\x1b[2J"
BIDI = "\u202e"
EVIL = f"/srv/{OSC}"
MOUNTINFO = (
    "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
    "20 1 0:20 / /srv rw - tmpfs srv rw\n"
    f"21 20 0:21 / {EVIL} rw - tmpfs a{CSI} rw\n"
    f"22 21 0:22 / {EVIL} rw - tmpfs cover{BIDI} rw\n"
)
DUMP = {"format": "overmount-dump/1", "mountinfo": MOUNTINFO,
        "targets": [{"id": f"t{CSI}1", "kind": "open", "mount": 21, "path": f"{EVIL}/f{CSI}"}]}


def overmount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner", *args], cwd=REPO, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def assert_printable(text: str) -> None:
    for line in text.splitlines():
        assert line.isprintable(), repr(line)


def test_every_text_output_escapes_control_characters(tmp_path) -> None:
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(DUMP))
    plan = json.loads(overmount("plan", str(dump), "--format", "json").stdout)
    plan["steps"][1]["from"] = f"{EVIL}/x{CSI}"  # check must name this path in its message
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    outputs = [
        overmount("analyze", str(dump)),
        overmount("plan", str(dump)),
        overmount("plan", str(dump), "--format", "shell"),
        overmount("check", str(dump), str(tmp_path / "plan.json")),
        overmount("analyze", str(dump), "--target", f"21:/etc/{OSC}"),  # an error naming the path
        overmount("plan", str(dump), "--yard", f"/y{OSC}"),  # a usage error naming the option
    ]
    assert [o.returncode for o in outputs] == [0, 0, 0, 1, 2, 0]
    for out in outputs:
        assert_printable(out.stdout)
        assert_printable(out.stderr)
    assert "\\x1b]0;owned\\x07" in outputs[1].stdout  # escaped, still there to read
    assert "\\x1b[2J" in outputs[3].stderr
    assert "\\u202e" in outputs[0].stdout
