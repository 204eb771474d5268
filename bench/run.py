"""make bench: overmount beside util-linux on the same tables, every input form, the planner's
phases, the executor at scale, the security review's hostile inputs; tables, JSON, PASS/FAIL lines.

    python -m bench.run [--quick] [--no-exec] [--strict]

Writes bench/results/bench.json (every number, the machine, the load, the verdicts) and
bench/results/planner.csv, execution.csv, hostile.json. Each goal of issue 14 is judged on
figures measured in this one run, as ratios where it compares two things, so that a loaded
machine moves both sides. Progress goes to standard error when it is a terminal; nothing does
otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import compare, exec_bench, hostile_bench, planner_bench
from bench.compare import FormRow, Side, format_table
from bench.exec_bench import ExecRow
from bench.planner_bench import PlannerRow
from planner import progress

RESULTS = Path(__file__).resolve().parent / "results"
SIDE_SIZES = (100, 1_000, 10_000, 100_000)
FORM_SIZES = (1_000, 10_000, 100_000)
PHASE_SIZES = (1_000, 10_000, 100_000)
PHASE_FRACTIONS = (0.01, 0.10)
EXEC_SIZES = exec_bench.SIZES

# The goals of issue 14.
WITHIN_FINDMNT_LIST = 2.0  # analyze and plan, at 1e4 and 1e5 mounts, over findmnt -l
JSON_PLAN_SECONDS = 1.0  # parse + plan of a 1e5-mount, 1e4-target dump JSON, wall
JSON_WITHIN_FINDMNT_LIST = 1.5
MAX_GROWTH = 11.0  # time at 10x the mounts over time at x (10 is linear)
MAX_OVERHEAD = 1.5  # executor over a bare ctypes loop of the same syscalls


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    findmnt = subprocess.run(["findmnt", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(), "machine": platform.machine(),
            "python": sys.version.split()[0], "findmnt": findmnt, "load_at_start": os.getloadavg()}


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu'] or info['machine']}, {info['cpus']} CPUs, Linux {info['kernel']}, Python {info['python']}, "
            f"{info['findmnt']}; load average {info['load_at_start'][0]:.2f} at the start, "
            f"{info['load_at_end'][0]:.2f} at the end")


# --- verdicts -------------------------------------------------------------------------------------


def _verdict(check: str, ok: bool | None, text: str, **numbers: Any) -> dict[str, Any]:
    mark = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    return {"check": check, "ok": ok, "text": f"{mark}  {text}", **numbers}


def verdicts(sides: list[Side], forms: list[FormRow], phases: list[PlannerRow], exec_rows: list[ExecRow],
             exec_skipped: str | None, start: float) -> list[dict[str, Any]]:
    out = []
    started = f" (overmount's own start, the interpreter and its imports, takes {start:.3f} s)"
    for name in ("analyze", "plan"):
        judged = [s for s in sides if s.mounts >= 10_000]
        ratios = [(s.mounts, s.ratio(getattr(s, name), s.findmnt_list)) for s in judged]
        ok = bool(ratios) and all(r is not None and r <= WITHIN_FINDMNT_LIST for _, r in ratios)
        what = "overmount analyze T" if name == "analyze" else "overmount plan DUMP.json"
        out.append(_verdict(f"{name}_vs_findmnt_list", ok if ratios else None,
                            f"{what} within {WITHIN_FINDMNT_LIST:g}x of findmnt -l --tab-file T: "
                            + ", ".join(f"{r:.2f}x at {m:,} mounts" for m, r in ratios if r is not None) + started,
                            ratios=ratios))
        tree = [(s.mounts, s.ratio(getattr(s, name), s.findmnt_tree)) for s in sides if s.findmnt_tree is not None]
        ahead = all(r is not None and r < 1 for _, r in tree if r is not None)
        stopped = [s.mounts for s in sides if s.findmnt_tree is not None and not s.findmnt_tree.finished]
        skipped = [s.mounts for s in sides if s.findmnt_tree is None]
        out.append(_verdict(f"{name}_vs_findmnt_tree", ahead if tree else None,
                            f"{what} ahead of findmnt's tree view at every size: "
                            + ", ".join(f"{r:.2f}x at {m:,}" for m, r in tree if r is not None)
                            + started
                            + (f"; findmnt's tree stopped after {compare.TREE_LIMIT:.0f} s at {stopped}" if stopped else "")
                            + (f"; not run above {compare.TREE_UP_TO:,} mounts ({', '.join(f'{m:,}' for m in skipped)}:"
                               " it grows with the square of the table, not done after 12 minutes at 1e5)"
                               if skipped else ""),
                            ratios=tree))
    head = next((r for r in forms if r.form == "dump JSON" and r.mounts == 100_000), None)
    side = next((s for s in sides if s.mounts == 100_000), None)
    if head is None or side is None:
        out.append(_verdict("json_plan_1e5", None, "parse + plan of a 1e5-mount dump JSON: not run (--quick)"))
    else:
        ratio = head.run.wall / side.findmnt_list.wall
        ok = head.run.wall < JSON_PLAN_SECONDS and ratio <= JSON_WITHIN_FINDMNT_LIST
        out.append(_verdict("json_plan_1e5", ok,
                            f"overmount plan of a dump JSON, {head.mounts:,} mounts and {head.targets:,} targets: "
                            f"{head.run.wall:.2f} s wall ({head.run.cpu:.2f} s CPU), target under {JSON_PLAN_SECONDS:g} s; "
                            f"{ratio:.2f}x findmnt -l on the same table ({side.findmnt_list.wall:.2f} s), target "
                            f"within {JSON_WITHIN_FINDMNT_LIST:g}x", seconds=head.run.wall, ratio=ratio))
    grown = [r for r in forms if r.growth is not None]
    if grown:
        worst = max(grown, key=lambda r: r.growth or 0.0)
        out.append(_verdict("form_growth", all((r.growth or 0) <= MAX_GROWTH for r in grown),
                            f"every input form grows linearly: worst {worst.growth:.1f}x per decade of mounts "
                            f"({worst.form}, {worst.mounts // 10:,} -> {worst.mounts:,}) over {len(grown)} decades "
                            f"(target <= {MAX_GROWTH:g}; 10 is linear)", worst=worst.growth))
    big = [r for r in forms if r.mounts == max(f.mounts for f in forms)]
    if big:
        out.append({"check": "memory_per_mount", "ok": None,
                    "text": f"INFO  peak memory per mount at {big[0].mounts:,} mounts (over the interpreter's own): "
                            + ", ".join(f"{r.form} {r.kib_per_mount:.2f} KiB" for r in big)})
    served = [r for r in phases if r.one_bracket_serves]
    off = [r for r in served if r.moves != r.lower_bound]
    out.append(_verdict("lower_bound", bool(served) and not off,
                        f"moves equal the lower bound on {len(served) - len(off)} of {len(served)} generated cases "
                        "one bracket can serve"))
    if exec_skipped is not None:
        out.append(_verdict("executor", None, f"executor at scale: {exec_skipped}"))
    elif exec_rows:
        worst = max(exec_rows, key=lambda r: r.overhead)
        limits = {r.nofile for r in exec_rows}
        out.append(_verdict("executor_overhead", worst.overhead <= MAX_OVERHEAD,
                            "executor over a bare ctypes loop of the same syscalls: "
                            + ", ".join(f"{r.overhead:.2f}x at {r.mounts:,} mounts" for r in exec_rows)
                            + f" (target <= {MAX_OVERHEAD:g}x); RLIMIT_NOFILE {sorted(limits)}", worst=worst.overhead))
        out.append(_verdict("executor_nofile", all(r.nofile == (exec_bench.NOFILE, exec_bench.NOFILE) for r in exec_rows),
                            f"replica built and plan run under RLIMIT_NOFILE {exec_bench.NOFILE} (soft and hard) at "
                            + ", ".join(f"{r.mounts:,}" for r in exec_rows) + " mounts"))
        decades = [r for r in exec_rows if r.growth and r.growth.get("mounts_factor") == 10]
        if decades:
            growth = max(r.growth["replica"] or 0 for r in decades)
            out.append(_verdict("replica_growth", growth <= MAX_GROWTH,
                                "replica build grows linearly: "
                                + "; ".join(f"x{r.growth['replica']:.1f} from {r.mounts // 10:,} to {r.mounts:,} mounts"
                                            for r in decades)
                                + f" (target <= {MAX_GROWTH:g} per decade); µs per mount: "
                                + ", ".join(f"{r.replica_us_per_mount:.0f} at {r.mounts:,}" for r in exec_rows),
                                worst=growth))
        out.append({"check": "run_growth", "ok": None,
                    "text": "INFO  full run (snapshots, steps, verification), µs per step: "
                            + ", ".join(f"{r.run_us_per_step:.0f} at {r.mounts:,}" for r in exec_rows)
                            + "; the bare same-syscalls loop, µs per step: "
                            + ", ".join(f"{r.same_per_step_us:.1f}" for r in exec_rows)
                            + " (what grows is the kernel's own cost per syscall in a bigger namespace)"})
    return out


# --- tables ---------------------------------------------------------------------------------------


def exec_table(rows: list[ExecRow]) -> str:
    head = ("mounts", "targets", "steps", "replica s", "µs/mount", "growth", "run µs/step", "growth",
            "floor µs", "same-sc µs", "executor µs", "overhead", "exec/floor", "exec aside/open/back µs",
            "same-sc aside/open/back µs")
    lines = []
    for r in rows:
        lines.append((
            f"{r.mounts:,}", f"{r.hidden_targets:,}", f"{r.steps:,}", f"{r.replica_s:.2f}", f"{r.replica_us_per_mount:.0f}",
            f"x{r.growth['replica']:.1f}" if r.growth else "-", f"{r.run_us_per_step:.0f}",
            f"x{r.growth['run']:.1f}" if r.growth else "-", f"{r.bare_per_step_us:.1f}", f"{r.same_per_step_us:.1f}",
            f"{r.exec_per_step_us:.1f}", f"{r.overhead:.2f}x", f"{r.vs_floor:.1f}x",
            "/".join(f"{r.exec_us[op]:.1f}" for op in exec_bench.MOVE_OPS),
            "/".join(f"{r.same_us[op]:.1f}" for op in exec_bench.MOVE_OPS),
        ))
    return format_table(head, lines)


def phase_table(rows: list[PlannerRow]) -> str:
    head = ("mounts", "targets", "parse ms", "tree ms", "analysis ms", "plan ms", "(check ms)", "total ms", "growth",
            "peak MiB", "moves", "lower bd", "naive", "1 bracket")
    lines = []
    for r in rows:
        lines.append((
            f"{r.mounts:,}", f"{r.targets:,}", *(f"{r.wall[p] * 1e3:.1f}" for p in ("parse", "tree", "analysis", "plan")),
            f"({r.wall['check'] * 1e3:.1f})", f"{r.total * 1e3:.1f}",
            "-" if r.growth.get("total") is None else f"{r.growth['total']:.1f}", f"{r.peak_mib:.1f}",
            f"{r.moves:,}", f"{r.lower_bound:,}", f"{r.naive:,}", "yes" if r.one_bracket_serves else "no",
        ))
    return format_table(head, lines)


def write_results(document: dict[str, Any], phases: list[PlannerRow], exec_rows: list[ExecRow]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "planner.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mounts", "hidden_pct", "targets", "parse_s", "tree_s", "analysis_s", "plan_s", "check_s",
                         "total_s", "total_cpu_s", "growth_total", "peak_mib", "moves", "lower_bound", "naive", "steps",
                         "one_bracket_serves", "reps"])
        for r in phases:
            writer.writerow([r.mounts, r.hidden_pct, r.targets, *(f"{r.wall[p]:.6f}" for p in planner_bench.PHASES),
                             f"{r.total:.6f}", f"{r.total_cpu:.6f}",
                             "" if r.growth.get("total") is None else f"{r.growth['total']:.2f}",
                             f"{r.peak_mib:.2f}", r.moves, r.lower_bound, r.naive, r.steps, r.one_bracket_serves, r.reps])
    with open(RESULTS / "execution.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mounts", "hidden_targets", "steps", "nofile_soft", "nofile_hard", "replica_s",
                         "replica_us_per_mount", "run_s", "run_us_per_step", "bare_us_per_step", "same_us_per_step",
                         "exec_us_per_step", "overhead", "vs_floor", "reps"])
        for e in exec_rows:
            writer.writerow([e.mounts, e.hidden_targets, e.steps, *e.nofile, f"{e.replica_s:.3f}",
                             f"{e.replica_us_per_mount:.1f}", f"{e.full_run_s:.3f}", f"{e.run_us_per_step:.1f}",
                             f"{e.bare_per_step_us:.2f}", f"{e.same_per_step_us:.2f}", f"{e.exec_per_step_us:.2f}",
                             f"{e.overhead:.3f}", f"{e.vs_floor:.2f}", e.reps])
    with open(RESULTS / "bench.json", "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")


def _stage(report: progress.Progress, stages: list[str]) -> Callable[[str], None]:
    """A log for the bench's own stages: the progress bar's label says which case is running."""
    done = [0]

    def log(text: str) -> None:
        report(text.strip(), done[0], len(stages))
        done[0] += 1

    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 1e4 mounts, no hostile inputs (a minute or two)")
    parser.add_argument("--no-exec", action="store_true", help="skip the executor bench (needs mount namespaces)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails (default: report only)")
    args = parser.parse_args(argv)
    started = time.time()
    info = machine()
    cut = (lambda sizes: tuple(s for s in sizes if s <= 10_000)) if args.quick else (lambda sizes: sizes)
    side_sizes, form_sizes, phase_sizes = cut(SIDE_SIZES), cut(FORM_SIZES), cut(PHASE_SIZES)
    exec_sizes = cut(EXEC_SIZES)
    stages = ([f"side by side {n}" for n in side_sizes] + [f"forms {n}" for n in form_sizes]
              + [f"phases {n}" for n in phase_sizes for _ in PHASE_FRACTIONS]
              + ([] if args.no_exec else [f"executor {n}" for n in exec_sizes]) + ([] if args.quick else ["hostile"] * len(hostile_bench.CASES)))
    log = _stage(progress.on_stderr(), stages)

    with tempfile.TemporaryDirectory(prefix="overmount-bench-") as scratch:
        work = Path(scratch)
        base = compare.baseline()
        sides = compare.side_by_side(work, side_sizes, log)
        forms = compare.every_form(work, form_sizes, base.peak_mib, log)
    phases = planner_bench.run(phase_sizes, PHASE_FRACTIONS, log)
    exec_rows: list[ExecRow] = []
    exec_skipped: str | None = "not asked for (--no-exec)" if args.no_exec else None
    if not args.no_exec:
        try:
            exec_rows, exec_skipped = exec_bench.run(exec_sizes, log)
        except Exception as exc:  # noqa: BLE001 - the other results still stand; say why this part did not
            exec_skipped = f"failed: {type(exc).__name__}: {exc}"
    hostile = [] if args.quick else hostile_bench.run(log)
    info["load_at_end"] = os.getloadavg()
    checks = verdicts(sides, forms, phases, exec_rows, exec_skipped, base.wall)
    log("done")

    print(f"Machine: {machine_line(info)}.")
    print()
    print("Side by side with util-linux on the same generated tables (a tenth of the mounts hold a hidden target):")
    print("findmnt -l --tab-file T (flat list) and findmnt --tab-file T (tree view, up to "
          f"{compare.TREE_UP_TO:,} mounts, stopped after {compare.TREE_LIMIT:.0f} s);")
    print("overmount analyze T (the tree with what is hidden) and overmount plan DUMP.json (the same table and its")
    print("targets, planned, checked, printed). Processes, output drained through a pipe, best of a few runs, wall s;")
    print("ratios are overmount over findmnt -l and over findmnt's tree view.")
    print()
    print(compare.side_table(sides))
    print()
    print("Every input form: overmount plan of the same host as mountinfo + --target options, capture's dump JSON,")
    print("a scenario TOML and a crit-decoded CRIU directory. growth = wall here / wall at a tenth the mounts;")
    print("KiB/mount = (peak RSS - the interpreter's own) / mounts.")
    print()
    print(compare.form_table(forms))
    print()
    print("The planner's phases in process (bench/planner_bench.py), best of several runs, wall ms; total = parse +")
    print("tree + plan (plan checks every step as it makes it; (check ms) is a separate check_plan).")
    print()
    print(phase_table(phases))
    if exec_rows:
        print()
        print(f"The executor at scale, in a throwaway namespace under RLIMIT_NOFILE {exec_bench.NOFILE} (soft and hard):")
        print("replica build per mount, full run (replica snapshots, steps, verification) per step; then per")
        print("move-aside/open/move-back step: the floor (move_mount path->path, open+close, move_mount back), the executor's")
        print("own syscalls in a bare ctypes loop (same-sc), and the executor. overhead = executor / same-sc.")
        print()
        print(exec_table(exec_rows))
    if hostile:
        print()
        print("Hostile inputs (bench/hostile_bench.py), each at two sizes: real `overmount` processes, wall s, peak RSS.")
        print(hostile_bench.table(hostile))
    print()
    for check in checks:
        print(check["text"])
    document = {
        "format": "overmount-bench/2",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
        "machine": info,
        "start": {"wall_s": base.wall, "cpu_s": base.cpu, "peak_mib": base.peak_mib},
        "side_by_side": [s.as_json() for s in sides],
        "forms": [f.as_json() for f in forms],
        "planner": [r.as_json() for r in phases],
        "execution": [e.as_json() for e in exec_rows],
        "execution_skipped": exec_skipped,
        "checks": checks,
    }
    write_results(document, phases, exec_rows)
    if hostile:
        (RESULTS / "hostile.json").write_text(json.dumps(hostile, indent=2) + "\n")
    print()
    print(f"results: {RESULTS / 'bench.json'}, planner.csv, execution.csv ({time.time() - started:.0f} s)")
    return 1 if args.strict and any(check["ok"] is False for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
