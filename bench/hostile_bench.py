"""The security review's resource amplifications, measured at two sizes each: does the cost grow
with the input (x2 input -> about x2 cost), or faster?

    python -m bench.hostile_bench        (also run by make bench; writes bench/results/hostile.json)

- check of a plan of N steps (the review: 7.7 s at 16k steps, 54 s at 40k: line numbering);
- run of a dump whose targets lie 2,000 directories deep (the review: a 203 KB dump took 53 s
  and 257 MB: the replica's directories);
- analyze --json of a big mountinfo, peak memory (the review: a 50 MB table took 1.35 GB);
- plan of a stack of N mounts on one path (was a RecursionError at 1,000). Each walk of the
  stacked path climbs the whole stack, so this one grows with the square of the stack's height.

Every command runs as a real `python -m planner` process; time is wall time, memory the
process's peak RSS (ru_maxrss, the namespace child of run included).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
COVERED_SRV = "1 0 8:1 / / rw - ext4 /dev/vda rw\n2 1 0:20 / /srv rw - tmpfs srv rw\n3 2 0:21 / /srv rw - tmpfs cover rw\n"


def _dump(path: Path, targets: list[dict[str, Any]], mountinfo: str = COVERED_SRV) -> None:
    path.write_text(json.dumps({"format": "overmount-dump/1", "mountinfo": mountinfo, "targets": targets}, indent=2))


# A small interpreter runs the command and reports its children's peak RSS: a process forked from
# this one would start with this process's high-water mark (the big tables it just wrote).
_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
sys.stderr.write(done.stderr.decode()[-500:])
print(done.returncode, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _measure(*args: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one `python -m planner ARGS` process, its waited children included."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "planner", *args], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True)
    status, wall, peak_kib = done.stdout.split()
    if int(status) not in (0, 1):
        raise RuntimeError(f"{args}: {done.stderr}")
    return float(wall), int(peak_kib) / 1024


def _check_plan(scratch: Path, steps: int) -> dict[str, Any]:
    dump, plan = scratch / f"many{steps}.json", scratch / f"plan{steps}.json"
    _dump(dump, [{"id": f"t{k}", "kind": "open", "mount": 2, "path": f"/srv/f{k}"} for k in range(steps - 4)])
    subprocess.run([sys.executable, "-m", "planner", "plan", str(dump), "--format", "json", "-o", str(plan)],
                   cwd=REPO, check=True)
    wall, peak = _measure("check", str(dump), str(plan))
    return {"input": f"{steps:,}-step plan", "size": steps, "wall_s": wall, "peak_mib": peak}


def _deep_run(scratch: Path, targets: int) -> dict[str, Any]:
    dump = scratch / f"deep{targets}.json"
    _dump(dump, [{"id": f"t{k}", "kind": "open", "mount": 2, "path": f"/srv/b{k}" + "/a" * 2000 + "/f"}
                 for k in range(targets)])
    wall, peak = _measure("run", str(dump))
    return {"input": f"{targets} targets 2,000 dirs deep ({dump.stat().st_size // 1024} KB)", "size": targets,
            "wall_s": wall, "peak_mib": peak}


def _big_table(scratch: Path, megabytes: int) -> dict[str, Any]:
    table = scratch / f"big{megabytes}.txt"
    rng = random.Random(megabytes)
    lines = ["1 0 8:1 / / rw,relatime - ext4 /dev/vda rw"]
    size, mount_id = len(lines[0]), 2
    while size < megabytes * 1_000_000:
        line = (f"{mount_id} 1 0:{mount_id % 5000} / /var/lib/kubelet/pods/{rng.getrandbits(64):016x}/volumes/"
                f"kubernetes.io~secret/token-{mount_id} rw,nosuid,nodev,relatime shared:{mount_id} - tmpfs tmpfs "
                "rw,size=3993600k,mode=755,inode64")
        lines.append(line)
        size += len(line) + 1
        mount_id += 1
    table.write_text("\n".join(lines) + "\n")
    wall, peak = _measure("analyze", str(table), "--json", env={"OVERMOUNT_MAX_MOUNTS": "1000000"})
    return {"input": f"{megabytes} MB mountinfo ({mount_id - 1:,} mounts)", "size": megabytes, "wall_s": wall,
            "peak_mib": peak}


def _stack_plan(scratch: Path, height: int) -> dict[str, Any]:
    table = scratch / f"stack{height}.txt"
    lines = ["1 0 8:1 / / rw - ext4 /dev/vda rw", "2 1 0:20 / /srv rw - tmpfs srv rw"]
    lines += [f"{i} {i - 1} 0:{20 + i} / /srv rw - tmpfs s{i} rw" for i in range(3, height + 3)]
    table.write_text("\n".join(lines) + "\n")
    wall, peak = _measure("plan", str(table), "--target", "2:/srv/f")
    return {"input": f"stack of {height:,} mounts on one path", "size": height, "wall_s": wall, "peak_mib": peak}


CASES = (
    ("check of a plan", _check_plan, (16_000, 40_000)),
    ("run of deep targets", _deep_run, (50, 100)),
    ("analyze --json of a big table", _big_table, (25, 50)),
    ("plan of a stack on one path", _stack_plan, (1_000, 2_000)),
)


def run(log: Any = print) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, case, sizes in CASES:
            small, big = (case(Path(scratch), size) for size in sizes)
            factor = big["size"] / small["size"]
            for row in (small, big):
                row["case"] = name
            big["time_growth"] = big["wall_s"] / small["wall_s"]
            big["input_growth"] = factor
            rows += [small, big]
            log(f"{name}: {small['wall_s']:.2f} s -> {big['wall_s']:.2f} s for x{factor:g} input")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| input | wall s | peak MiB | time growth for the input's growth |", "|---|---:|---:|---|"]
    for row in rows:
        growth = f"x{row['time_growth']:.1f} for x{row['input_growth']:g}" if "time_growth" in row else ""
        out.append(f"| {row['input']} | {row['wall_s']:.2f} | {row['peak_mib']:.0f} | {growth} |")
    return "\n".join(out)


def main() -> int:
    rows = run(lambda text: print(text, file=sys.stderr, flush=True))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostile.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
