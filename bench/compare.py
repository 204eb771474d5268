"""Real commands on the same generated tables: util-linux's findmnt beside overmount, and every input form.

Side by side, per size (1e2 to 1e5 mounts, a tenth of them holding a hidden target):

- `findmnt -l --tab-file T`: libmount parses the table and prints it as a flat list (C, no tree);
- `findmnt --tab-file T`: the same as a tree. Its time grows with the square of the table (about
  2 s at 1e4 mounts; not done after 12 minutes at 1e5, issue 14), so it runs up to 1e4 mounts and
  within TREE_LIMIT seconds, and says so where it did not;
- `overmount analyze T`: the table as a tree with every hidden mount and what covers it;
- `overmount plan DUMP.json`: the same table with its targets, as `capture` writes it, planned and
  checked, the plan printed as text.

Every input form, per size (1e3 to 1e5 mounts): `overmount plan` of the same host given as
mountinfo with `--target` options, as capture's dump JSON, as a scenario TOML and as a directory of
crit-decoded CRIU images (bench/forms.py).

All of them run as processes whose output is drained through a pipe (bench/measure.py); the best
of a few runs counts. Peak memory is the process's own peak RSS; per mount, over what the
interpreter and the program take before reading anything (`overmount --version`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import forms
from bench.generate import generate
from bench.measure import Run, best_of

REPO = str(Path(__file__).resolve().parent.parent)
OVERMOUNT = (sys.executable, "-m", "planner")
HIDDEN = 0.10  # share of mounts holding a hidden target: 1e4 targets at 1e5 mounts
TREE_UP_TO = 10_000  # findmnt's tree view runs up to this many mounts
TREE_LIMIT = 120.0  # and is stopped after this many seconds


def _runs(mounts: int) -> int:
    return 3 if mounts >= 100_000 else 5 if mounts >= 10_000 else 7


@dataclass
class Side:
    """One size, four commands."""

    mounts: int
    targets: int
    findmnt_list: Run
    findmnt_tree: Run | None  # None: not run at this size
    analyze: Run
    plan: Run

    def ratio(self, run: Run, to: Run | None) -> float | None:
        return None if to is None or not to.finished else run.wall / to.wall

    def as_json(self) -> dict[str, Any]:
        def one(run: Run | None) -> dict[str, Any] | None:
            return None if run is None else {"wall_s": run.wall, "cpu_s": run.cpu, "peak_mib": run.peak_mib,
                                             "finished": run.finished, "status": run.status, "out_bytes": run.out_bytes}
        return {"mounts": self.mounts, "targets": self.targets, "findmnt_list": one(self.findmnt_list),
                "findmnt_tree": one(self.findmnt_tree), "analyze": one(self.analyze), "plan": one(self.plan)}


@dataclass
class FormRow:
    form: str
    mounts: int
    targets: int
    run: Run
    kib_per_mount: float
    growth: float | None = None  # wall here / wall at a tenth the mounts, same form
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"form": self.form, "mounts": self.mounts, "targets": self.targets, "wall_s": self.run.wall,
                "cpu_s": self.run.cpu, "peak_mib": self.run.peak_mib, "kib_per_mount": self.kib_per_mount,
                "growth": self.growth, "status": self.run.status}


def _overmount(*args: str, runs: int) -> Run:
    run = best_of([*OVERMOUNT, *args], runs, cwd=REPO)
    if run.status != 0:
        raise RuntimeError(f"overmount {' '.join(args)[:200]} exited {run.status}: {run.err}")
    return run


def baseline() -> Run:
    """The interpreter with the program loaded and nothing read (`overmount --version`): what every
    command costs before it reads its input, in time and in peak RSS."""
    return _overmount("--version", runs=5)


def side_by_side(work: Path, sizes: tuple[int, ...], log: Callable[[str], None]) -> list[Side]:
    rows = []
    for mounts in sizes:
        host = generate(mounts, HIDDEN)
        table = work / f"mountinfo-{mounts}"
        table.write_text(host.mountinfo)
        dump = work / f"dump-{mounts}.json"
        dump.write_text(forms.dump_json(host))
        runs = _runs(mounts)
        log(f"  side by side: {mounts:,} mounts, {len(host.targets):,} targets ({runs} runs each)")
        listed = best_of(["findmnt", "-l", "--tab-file", str(table)], runs)
        tree = None
        if mounts <= TREE_UP_TO:
            tree = best_of(["findmnt", "--tab-file", str(table)], min(runs, 3), limit=TREE_LIMIT)
        rows.append(Side(mounts, len(host.targets), listed, tree, _overmount("analyze", str(table), runs=runs),
                         _overmount("plan", str(dump), runs=runs)))
    return rows


def every_form(work: Path, sizes: tuple[int, ...], base_mib: float, log: Callable[[str], None]) -> list[FormRow]:
    rows: list[FormRow] = []
    for mounts in sizes:
        host = generate(mounts, HIDDEN)
        log(f"  every form: {mounts:,} mounts, {len(host.targets):,} targets (CRIU images through crit, once)")
        arguments = forms.write_forms(host, work)
        for form in forms.FORMS:
            run = _overmount("plan", *arguments[form], runs=_runs(mounts))
            rows.append(FormRow(form, mounts, len(host.targets), run, (run.peak_mib - base_mib) * 1024 / mounts))
    by_key = {(r.form, r.mounts): r for r in rows}
    for row in rows:
        smaller = by_key.get((row.form, row.mounts // 10))
        if smaller is not None:
            row.growth = row.run.wall / smaller.run.wall
    return rows


# --- tables -------------------------------------------------------------------------------------


def _s(run: Run | None, skipped: str = "-") -> str:
    if run is None:
        return skipped
    if not run.finished:
        return f">{run.wall:.0f}"
    return f"{run.wall:.3f}" if run.wall < 10 else f"{run.wall:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(head: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    rows = [head, *lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def side_table(rows: list[Side]) -> str:
    head = ("mounts", "targets", "findmnt -l s", "findmnt tree s", "analyze s", "/ -l", "/ tree", "plan s", "/ -l",
            "/ tree", "MiB: -l", "tree", "analyze", "plan")
    lines = []
    for r in rows:
        lines.append((
            f"{r.mounts:,}", f"{r.targets:,}", _s(r.findmnt_list), _s(r.findmnt_tree, "skipped"), _s(r.analyze),
            _x(r.ratio(r.analyze, r.findmnt_list)), _x(r.ratio(r.analyze, r.findmnt_tree)), _s(r.plan),
            _x(r.ratio(r.plan, r.findmnt_list)), _x(r.ratio(r.plan, r.findmnt_tree)),
            f"{r.findmnt_list.peak_mib:.0f}", "-" if r.findmnt_tree is None else f"{r.findmnt_tree.peak_mib:.0f}",
            f"{r.analyze.peak_mib:.0f}", f"{r.plan.peak_mib:.0f}",
        ))
    return format_table(head, lines)


def form_table(rows: list[FormRow]) -> str:
    head = ("form", "mounts", "targets", "wall s", "CPU s", "growth", "peak MiB", "KiB/mount")
    lines = [(r.form, f"{r.mounts:,}", f"{r.targets:,}", _s(r.run), f"{r.run.cpu:.3f}",
              "-" if r.growth is None else f"{r.growth:.1f}", f"{r.run.peak_mib:.0f}", f"{r.kib_per_mount:.2f}")
             for r in sorted(rows, key=lambda r: (forms.FORMS.index(r.form), r.mounts))]
    return format_table(head, lines)
