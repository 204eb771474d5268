"""Command line: parse options, call the library, print, choose the exit status.

Exit status: 0 done; 1 the plan cannot be made, failed verification, or ran and
was rolled back; 2 bad input or usage (one line naming the file and line); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from typing import Any

import click

from planner import render
from planner.analysis import analyze
from planner.check import check_plan
from planner.dump import Dump, decode, json_element_lines, key_line, load, load_json, read_input
from planner.errors import DumpError, InputError, PlannerError, PlanRejected
from planner.output import write_output
from planner.paths import is_clean, unusable
from planner.plan import DEFAULT_YARD, make_plan
from planner.steps import FORMAT, Step, step_from_json
from planner.tree import MountTree

TARGET_HELP = "add a target MOUNT:PATH[:KIND]; KIND is open (default), chdir, root, bind, mmap or mount-source=TO"


def _tree(dump: Dump) -> MountTree:
    return MountTree(dump.mounts, dump.table_name)


def _emit(text: str, output: str | None) -> None:
    # surrogateescape: a path the dump holds as undecodable bytes goes out as those bytes.
    write_output(output, text.encode("utf-8", "surrogateescape"))


def _running_kernel() -> tuple[int, int]:
    release = os.uname().release.split("-")[0].split(".")
    return int(release[0]), int(release[1])


def _kernel_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int]:
    if value is None:
        return _running_kernel()
    # X.Y, or what `uname -r` prints (6.18.44-fc-v595): only X.Y matters here.
    parts = value.split("-")[0].split(".")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts[:2]):
        raise click.BadParameter(f"expected X.Y, got {value!r}")
    return int(parts[0]), int(parts[1])


def _yard_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (not is_clean(value) or value == "/"):
        raise click.BadParameter(f"{value!r} must be an absolute path below /, with no '.', '..' or empty parts")
    problem = unusable(value) if value is not None else None
    if problem is not None:
        raise click.BadParameter(f"the path {problem}")
    return value


def load_plan(path: str) -> list[Step]:
    source, data = read_input(path)
    text = decode(data, source)
    raw = load_json(text, source)
    if not isinstance(raw, dict):
        raise DumpError(source, 1, f"expected a {FORMAT} object")
    if raw.get("format") != FORMAT:
        raise DumpError(source, key_line(text, "format"), f"format must be {FORMAT!r}, got {raw.get('format')!r}")
    if not isinstance(raw.get("steps"), list):
        raise DumpError(source, key_line(text, "steps"), "'steps' must be a list")
    lines = json_element_lines(text, "steps")
    steps = []
    for index, item in enumerate(raw["steps"]):
        try:
            steps.append(step_from_json(item))
        except ValueError as err:
            raise DumpError(source, lines[index] if index < len(lines) else None, f"step {index}: {err}") from None
    moves = sum(1 for s in steps if s.op == "move-aside")
    if "moves" in raw and raw["moves"] != moves:
        raise DumpError(source, key_line(text, "moves"), f"'moves' says {raw['moves']!r}, the steps hold {moves} move-asides")
    return steps


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Plan and prove move-aside restores of objects hidden under overmounts.

    DUMP is an overmount-dump/1 JSON file, a scenario .toml, a bare mountinfo
    file, a directory of `crit decode --pretty` JSON, or - for standard input.
    """


@cli.command("analyze")
@click.argument("dump_path", metavar="DUMP")
@click.option("--target", "targets", multiple=True, metavar="MOUNT:PATH[:KIND]", help=TARGET_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the analysis as JSON")
def analyze_cmd(dump_path: str, targets: tuple[str, ...], as_json: bool) -> None:
    """Which mounts and targets are hidden, and by which mounts."""
    dump = load(dump_path, targets)
    analysis = analyze(_tree(dump), dump.targets)
    if as_json:
        click.echo(json.dumps(render.analysis_json(analysis), indent=2))
    else:
        click.echo(render.analysis_text(analysis), nl=False)


@cli.command()
@click.argument("dump_path", metavar="DUMP")
@click.option("--target", "targets", multiple=True, metavar="MOUNT:PATH[:KIND]", help=TARGET_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "shell"]), default="text", show_default=True)
@click.option("--yard", callback=_yard_option,
              help=f"where covering mounts are parked [default: {DEFAULT_YARD}, or in a forest whose / is not listed, "
                   "the same name in a listed tmpfs]")
@click.option("--kernel", callback=_kernel_option, metavar="X.Y", help="plan for this kernel (default: the running one)")
@click.option("-o", "--output", metavar="FILE", help="write the plan here instead of standard output")
def plan(dump_path: str, targets: tuple[str, ...], fmt: str, yard: str | None, kernel: tuple[int, int], output: str | None) -> None:
    """An ordered move-aside plan that reaches every target and restores the tree."""
    dump = load(dump_path, targets)
    result = make_plan(_tree(dump), dump.targets, yard=yard, kernel=kernel, locked=dump.locked_mounts)
    if fmt == "json":
        _emit(json.dumps(render.plan_json(result), indent=2) + "\n", output)
    elif fmt == "shell":
        _emit(render.plan_shell(result, dump.source, dump.file_mounts), output)
    else:
        _emit(render.plan_text(result, dump.source), output)


@cli.command()
@click.argument("dump_path", metavar="DUMP")
@click.argument("plan_path", metavar="PLAN")
@click.option("--target", "targets", multiple=True, metavar="MOUNT:PATH[:KIND]", help=TARGET_HELP)
def check(dump_path: str, plan_path: str, targets: tuple[str, ...]) -> None:
    """Verify a plan symbolically: right mounts moved, every target reached, tree restored."""
    dump = load(dump_path, targets)
    steps = load_plan(plan_path)
    tree = _tree(dump)
    analyze(tree, dump.targets)  # the targets themselves must make sense first (exit 2 if not)
    problems = check_plan(tree, dump.targets, steps, dump.locked_mounts)
    if problems:
        raise PlanRejected(problems)
    moves = sum(1 for s in steps if s.op == "move-aside")
    click.echo(f"ok: {len(steps)} steps, {moves} moves, {len(dump.targets)} targets reached, tree restored")


@cli.command()
@click.argument("dump_path", metavar="DUMP")
@click.option("--target", "targets", multiple=True, metavar="MOUNT:PATH[:KIND]", help=TARGET_HELP)
@click.option("--plan", "plan_path", metavar="PLAN", help="run this plan instead of planning afresh")
@click.option("--yard", callback=_yard_option, help="where covering mounts are parked (as plan's --yard)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (also when it stops early)")
def run(dump_path: str, targets: tuple[str, ...], plan_path: str | None, yard: str | None, as_json: bool) -> None:
    """Build a replica in a throwaway namespace, run the plan, verify with the kernel."""
    from planner import execute

    if plan_path is not None and yard is not None:
        raise click.UsageError("--yard plans afresh; a --plan brings its own yard")
    dump = load(dump_path, targets)
    tree = _tree(dump)
    if plan_path is not None:
        steps = load_plan(plan_path)
        analyze(tree, dump.targets)
        problems = check_plan(tree, dump.targets, steps, dump.locked_mounts)
        if problems:
            raise PlanRejected(problems)
    else:
        plan = make_plan(tree, dump.targets, yard=yard, kernel=_running_kernel(), locked=dump.locked_mounts)
        steps = list(plan.steps)
    report: dict[str, Any] = execute.execute(
        list(dump.mounts), list(dump.targets), [s.as_json() for s in steps], file_mounts=dump.file_mounts
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(execute.report_text(report), nl=False)
    if not report.get("ok"):
        sys.exit(1)


@cli.command()
@click.option("--pid", required=True, type=int, help="the process to capture")
@click.option("-o", "--output", metavar="FILE", help="write the dump here instead of standard output")
def capture(pid: int, output: str | None) -> None:
    """Write an overmount-dump/1 of a live process: mounts, open files, cwd, mappings, unix sockets."""
    from planner.capture import capture_pid

    _emit(json.dumps(capture_pid(pid), indent=2) + "\n", output)


class Interrupted(BaseException):
    """SIGINT, raised as our own class: click turns KeyboardInterrupt into "Aborted!" after a blank line."""


def _interrupted(_signum: int, _frame: object) -> None:
    raise Interrupted


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    json_errors = _wants_json(sys.argv[1:])
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as err:
        # One line, like every other bad input (click's own three lines add nothing a script reads).
        where = f"{err.ctx.info_name}: " if err.ctx is not None and err.ctx.parent is not None else ""
        _fail(f"{where}{err.format_message()} (see --help)", 2, json_errors)
    except click.ClickException as err:
        _fail(err.format_message(), 2 if err.exit_code in (1, 2) else err.exit_code, json_errors)
    except (Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        # 128 + SIGINT, as a shell reports a command ended by Ctrl-C; a namespace child was
        # killed and reaped on the way out (kernel.run_in_namespace), so nothing runs on.
        _fail("interrupted", 130, json_errors)
    except PlannerError as err:
        _fail(str(err), err.exit_status, json_errors, err)
    except BrokenPipeError:
        sys.exit(1)


def _wants_json(args: list[str]) -> bool:
    """--json (analyze, run) or --format json (plan) on the command line: errors come as JSON too.

    Read from argv, not from click, so that usage errors click raises while parsing get one as well.
    """
    if "--json" in args or "--format=json" in args:
        return True
    return any(a == "--format" and b == "json" for a, b in itertools.pairwise(args))


def _fail(message: str, status: int, json_errors: bool, err: PlannerError | None = None) -> None:
    """One line on standard error; for a --json caller also an error object on standard output."""
    line = render.printable(message)
    if json_errors:
        answer: dict[str, object] = {"ok": False, "error": line, "exit_status": status}
        if isinstance(err, InputError):
            answer.update(source=err.source, line=err.line_no, reason=err.reason)
        if isinstance(err, PlanRejected):
            answer["problems"] = err.problems
        click.echo(json.dumps(answer, indent=2))
    click.echo(f"overmount: {line}", err=True)
    sys.exit(status)
