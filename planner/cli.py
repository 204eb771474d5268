"""Command line: parse options, call the library, print, choose the exit status.

Exit status: 0 done; 1 the plan cannot be made, failed verification, or ran and
was rolled back; 2 bad input or usage (one line naming the file and line); 130
interrupted (Ctrl-C).
"""

from __future__ import annotations

import gc
import itertools
import json
import locale
import os
import shutil
import signal
import sys
from typing import Any

import click

from planner import __version__, render
from planner.analysis import analyze
from planner.check import require_valid_plan
from planner.dump import DUMP_FORMAT, Dump
from planner.errors import InputError, PlannerError, PlanRejected
from planner.inputs import load
from planner.inputs.plan_file import load_plan
from planner.output import write_output
from planner.paths import is_clean, unusable
from planner.plan import DEFAULT_YARD, make_plan
from planner.progress import on_stderr, quiet
from planner.steps import FORMAT
from planner.tree import MountTree

TARGET_HELP = (
    "add a target (repeatable): the object at PATH in mount MOUNT; KIND is open (default), chdir, root, bind, "
    "mmap or mount-source=TO. PATH may hold ':' (KIND is read only when it is one of these)"
)
DUMP_HELP = (
    "DUMP is an overmount-dump/1 JSON file (what capture writes), a scenario .toml, a bare /proc/PID/mountinfo "
    "(targets then come from --target), a directory of `crit decode --pretty` JSON, or - for standard input."
)
SEED = "scenarios/01-seed-lxd-cgroup.toml"


class _Command(click.Command):
    """A command whose --help ends with examples and its exit statuses (the group's too)."""

    def __init__(self, *args: Any, examples: tuple[str, ...] = (), exits: tuple[tuple[str, str], ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = examples
        self.exits = exits

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.help = "show this help and exit"  # worded like every other option here
        return option

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        if any(isinstance(p, click.Argument) and p.metavar == "DUMP" for p in self.params):
            with formatter.indentation():
                formatter.write_paragraph()
                formatter.write_text(DUMP_HELP)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _examples_and_exits(formatter, self.examples, self.exits)
        super().format_epilog(ctx, formatter)


class _Group(_Command, click.Group):
    """Commands listed in the order a user meets them, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text(f"Run '{ctx.command_path} COMMAND --help' for a command's options.")


def _examples_and_exits(formatter: click.HelpFormatter, examples: tuple[str, ...], exits: tuple[tuple[str, str], ...]) -> None:
    if examples:
        with formatter.section("Examples"):
            for example in examples:  # as typed: never rewrapped
                formatter.write(f"{'':>{formatter.current_indent}}{example}\n")
    if exits:
        with formatter.section("Exit status"):
            formatter.write_dl(list(exits))


EXIT_USAGE = ("2", "bad input or usage: one line on standard error naming the file and line")
EXIT_INTERRUPTED = ("130", "interrupted (Ctrl-C); anything made in a namespace went with it")

def _count(count: int, noun: str) -> str:
    return render.plural(count, noun)


def _table_style() -> render.TableStyle:
    """Box-drawing tree bars where standard output can show them, ASCII where not (as findmnt):
    an encoding without them, or a locale whose charset is not UTF-8 (Python speaks UTF-8 in the
    C locale, PEP 540, but the terminal need not). On a terminal, its width to fit into."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "├└│─…".encode(encoding)
        unicode = locale.nl_langinfo(locale.CODESET).upper().replace("-", "") == "UTF8"
    except (UnicodeEncodeError, LookupError):
        unicode = False
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    return render.TableStyle(unicode=unicode, width=width)


def _echo(text: str) -> None:
    """Text for people on standard output, in its encoding; what it cannot show is escaped, not fatal."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    write_output(None, text.encode(encoding, "backslashreplace"))


def _tree(dump: Dump) -> MountTree:
    return MountTree(dump.mounts, dump.table_name)


def _emit(text: str, output: str | None) -> None:
    # surrogateescape: a path the dump holds as undecodable bytes goes out as those bytes.
    write_output(output, text.encode("utf-8", "surrogateescape"))


def _echo_json(data: object) -> None:
    """JSON on standard output, written as it is encoded: a 200,000-mount analysis is a 90 MB text,
    which json.dumps would hold whole (and join from its pieces, twice that at the peak)."""
    pieces: list[str] = []
    size = 0
    for piece in json.JSONEncoder(indent=2).iterencode(data):
        pieces.append(piece)
        size += len(piece)
        if size >= 1 << 16:
            click.echo("".join(pieces), nl=False)
            pieces.clear()
            size = 0
    click.echo("".join(pieces))


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


TARGET_OPTION = click.option("--target", "targets", multiple=True, metavar="MOUNT:PATH[:KIND]", help=TARGET_HELP)
ALL_OPTION = click.option("--all", "show_all", is_flag=True,
                          help="list every target; by default those not hidden are summarised in one line")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             examples=(f"overmount analyze {SEED}",
                       "overmount capture --pid 4242 -o dump.json && overmount run dump.json"),
             exits=(("0", "done"), ("1", ("no plan the kernel would accept, a plan failed check or run (rolled back), "
                                          "or recover could not put something back")),
                    EXIT_USAGE, EXIT_INTERRUPTED))
@click.version_option(__version__, "-V", "--version", message=f"overmount %(version)s ({FORMAT}, {DUMP_FORMAT})",
                      help="print the version and the formats it reads and writes")
def cli() -> None:
    """Plan and prove move-aside restores of objects hidden under overmounts.

    A checkpointed process held files, a cwd, sockets or mappings on paths that
    another mount now covers. overmount shows which, plans the moves that uncover
    them and put every mount back, checks the plan, and proves it with real
    syscalls in a throwaway mount namespace.
    """


@cli.command(cls=_Command, examples=("overmount capture --pid 4242 -o dump.json",),
             exits=(("0", "the dump is written"), ("2", "no such process, no permission, or it exited meanwhile")))
@click.option("--pid", required=True, type=int, metavar="PID", help="the process to capture (needs root or ptrace access)")
@click.option("-o", "--output", metavar="FILE", help="write the dump here instead of standard output")
def capture(pid: int, output: str | None) -> None:
    """Dump a live process: its mounts and every object it holds.

    Writes an overmount-dump/1: the process's mount table and its open files,
    cwd, root, file mappings and bound unix sockets as targets, each in the
    mount it really lives in; what cannot be a target is listed under
    "skipped" with the reason.
    """
    from planner.inputs.capture import capture_pid

    _emit(json.dumps(capture_pid(pid), indent=2) + "\n", output)


@cli.command("analyze", cls=_Command,
             examples=(f"overmount analyze {SEED}", "overmount analyze /proc/4242/mountinfo --target 123:/run/app.sock:bind"),
             exits=(("0", "the analysis is printed"), EXIT_USAGE))
@click.argument("dump_path", metavar="DUMP")
@TARGET_OPTION
@ALL_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the analysis as JSON (every mount and target)")
def analyze_cmd(dump_path: str, targets: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Show which mounts and targets are hidden, and by what.

    Prints the mount tree as findmnt does; each hidden mount and target says
    which mounts cover it, and the last line how few mounts a plan must move.
    """
    progress = on_stderr()
    dump = load(dump_path, targets, progress)
    analysis = analyze(_tree(dump), dump.targets)
    analysis.find_hidden(progress)
    if as_json:
        _echo_json(render.analysis_json(analysis))
    else:
        _echo(render.analysis_text(analysis, show_all=show_all, style=_table_style(), progress=progress))


@cli.command(cls=_Command,
             examples=(f"overmount plan {SEED}", "overmount plan dump.json --format json -o plan.json"),
             exits=(("0", "the plan is written"),
                    ("1", "no plan the kernel would accept exists (the reason, and the way out where there is one)"),
                    EXIT_USAGE))
@click.argument("dump_path", metavar="DUMP")
@TARGET_OPTION
@click.option("--format", "fmt", type=click.Choice(["text", "json", "shell"]), default="text", show_default=True,
              help=f"text for people; json ({FORMAT}) for check, run --plan and other tools; shell: util-linux commands")
@click.option("--yard", callback=_yard_option, metavar="PATH",
              help=f"where covering mounts are parked [default: {DEFAULT_YARD}, or in a forest whose / is not listed, "
                   "the same name in a listed tmpfs]")
@click.option("--kernel", callback=_kernel_option, metavar="X.Y",
              help="plan for this kernel release (default: the running one)")
@ALL_OPTION
@click.option("-o", "--output", metavar="FILE", help="write the plan here instead of standard output")
def plan(dump_path: str, targets: tuple[str, ...], fmt: str, yard: str | None, kernel: tuple[int, int],
         show_all: bool, output: str | None) -> None:
    """Plan the moves that reach every target and restore the tree.

    Covering mounts move into a private yard, each target is reached, and the
    mounts move back in reverse order. Targets that share covers share one
    move. The JSON keeps every step; text and shell list the hidden targets
    and summarise the rest unless --all is given.
    """
    progress = on_stderr()
    dump = load(dump_path, targets, progress)
    result = make_plan(_tree(dump), dump.targets, yard=yard, kernel=kernel, locked=dump.locked_mounts, progress=progress)
    if fmt == "json":
        _emit(json.dumps(render.plan_json(result), indent=2) + "\n", output)
    elif fmt == "shell":
        _emit(render.plan_shell(result, dump.source, dump.file_mounts, show_all=show_all), output)
    else:
        text = render.plan_text(result, dump.source, show_all=show_all)
        if output in (None, "-"):
            _echo(text)  # for a person: in the terminal's encoding
        else:
            _emit(text, output)


@cli.command(cls=_Command,
             examples=(f"overmount plan {SEED} --format json -o plan.json",
                       f"overmount check {SEED} plan.json"),
             exits=(("0", "the plan reaches every target and restores the tree"),
                    ("1", "it does not: the first problem is printed"), EXIT_USAGE))
@click.argument("dump_path", metavar="DUMP")
@click.argument("plan_path", metavar="PLAN")
@TARGET_OPTION
def check(dump_path: str, plan_path: str, targets: tuple[str, ...]) -> None:
    """Verify a plan without running it.

    Executes PLAN (overmount-plan/1 JSON, ours or hand-edited) symbolically on
    DUMP's tree: each move takes the mount it names and the kernel would allow
    it, each target step reaches its own mount, and the tree ends as it began.
    """
    progress = on_stderr()
    dump = load(dump_path, targets, progress)
    steps = load_plan(plan_path)
    tree = _tree(dump)
    analyze(tree, dump.targets)  # the targets themselves must make sense first (exit 2 if not)
    require_valid_plan(tree, dump.targets, steps, dump.locked_mounts, progress)
    moves = sum(1 for s in steps if s.op == "move-aside")
    click.echo(f"ok: {_count(len(steps), 'step')}, {_count(moves, 'move')}, "
               f"{_count(len(dump.targets), 'target')} reached, tree restored")


@cli.command(cls=_Command,
             examples=(f"overmount run {SEED}", "overmount run dump.json --plan plan.json --json"),
             exits=(("0", "every target was reached in its own mount, the tree is identical, the yard gone"),
                    ("1", "refused, or a step or a verification failed (rolled back; the report says what)"),
                    EXIT_USAGE, EXIT_INTERRUPTED))
@click.argument("dump_path", metavar="DUMP")
@TARGET_OPTION
@click.option("--plan", "plan_path", metavar="PLAN", help="run this plan (checked first) instead of planning afresh")
@click.option("--yard", callback=_yard_option, metavar="PATH", help="where covering mounts are parked (as plan's --yard)")
@ALL_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON (also when it stops early)")
def run(dump_path: str, targets: tuple[str, ...], plan_path: str | None, yard: str | None, show_all: bool,
        as_json: bool) -> None:
    """Prove a plan with real syscalls in a throwaway mount namespace.

    Builds a replica of DUMP's tree (a tmpfs per filesystem), runs the plan,
    and asks the kernel where each target landed; at the end the tree must be
    identical and the yard gone. Nothing happens in the caller's namespace;
    without root it runs in a user namespace.
    """
    from planner.executor import execute

    if plan_path is not None and yard is not None:
        raise click.UsageError("--yard plans afresh; a --plan brings its own yard")
    progress = on_stderr()
    dump = load(dump_path, targets, progress)
    tree = _tree(dump)
    if plan_path is not None:
        steps = load_plan(plan_path)
        in_view = {f.target.id for f in analyze(tree, dump.targets).targets if not f.hidden}
        require_valid_plan(tree, dump.targets, steps, dump.locked_mounts, progress)
    else:
        plan = make_plan(tree, dump.targets, yard=yard, kernel=_running_kernel(), locked=dump.locked_mounts,
                         progress=progress)
        steps = list(plan.steps)
        in_view = {t.id for t in dump.targets} - plan.hidden
    # The namespace child draws its own progress (the replica, the steps) on the same standard error.
    report: dict[str, Any] = execute(
        list(dump.mounts), list(dump.targets), steps, file_mounts=dump.file_mounts,
        show_progress=progress is not quiet,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _echo(render.run_report_text(report, summarise=set() if show_all else in_view))
    if not report.get("ok"):
        sys.exit(1)


@cli.command(cls=_Command,
             examples=("overmount recover plan.json --pid 4242 --dry-run", "overmount recover plan.json --pid 4242"),
             exits=(("0", "what the plan left is back, or it left nothing"),
                    ("1", "something could not be put back: each is named"), EXIT_USAGE, EXIT_INTERRUPTED))
@click.argument("plan_path", metavar="PLAN")
@click.option("--pid", type=int, metavar="PID", help="work in this process's mount namespace, paths as its root sees them")
@click.option("--ns", "ns_path", metavar="PATH", help="work in the mount namespace of this nsfs file "
              "(/proc/PID/ns/mnt, or a bind mount of one), paths from that namespace's root")
@click.option("--dry-run", is_flag=True, help="print what would be put back; change nothing")
@click.option("--own-namespace", is_flag=True, help="allow working in overmount's own mount namespace (refused otherwise)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def recover(plan_path: str, pid: int | None, ns_path: str | None, dry_run: bool, own_namespace: bool, as_json: bool) -> None:
    """Put back what a plan stopped part way left in its yard.

    A restorer killed with -9 in the middle of PLAN leaves covers parked in its
    yard and shared parents private. recover enters the mount namespace named
    (by --pid or --ns) and finishes the plan from what is there: parked mounts go
    home in reverse order, parents rejoin their peer groups, keepers and the yard
    go. Each step acts only on the mount the table showed at its path.
    """
    from planner import recover as recovering

    if (pid is None) == (ns_path is None):
        raise click.UsageError("name the namespace to work in: --pid PID or --ns PATH (one of them)")
    steps = load_plan(plan_path)
    report = recovering.recover(steps, pid=pid, ns_path=ns_path, dry_run=dry_run, own_namespace=own_namespace,
                                source=plan_path)
    click.echo(json.dumps(report, indent=2) if as_json else render.recover_report_text(report), nl=as_json)
    if not report["ok"]:
        sys.exit(1)


class Interrupted(BaseException):
    """SIGINT, raised as our own class: click turns KeyboardInterrupt into "Aborted!" after a blank line."""


def _interrupted(_signum: int, _frame: object) -> None:
    raise Interrupted


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    # One command, then exit: what it builds (a table's records, a plan) lives until the end and
    # holds no cycles, and the cyclic collector would only rescan it, again and again as it grows
    # (a fifth of `plan` on a 1e5-mount table). Memory is freed by reference counting as before.
    gc.disable()
    json_errors = _wants_json(sys.argv[1:])
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.NoArgsIsHelpError as bare:
        # `overmount` alone: what it does and its commands, readable (a usage error all the same).
        click.echo(bare.ctx.get_help() if bare.ctx is not None else cli.name, err=True)
        sys.exit(2)
    except click.UsageError as err:
        # One line, like every other bad input (click's own three lines add nothing a script reads).
        where = f"{err.ctx.info_name}: " if err.ctx is not None and err.ctx.parent is not None else ""
        helper = f"{err.ctx.command_path} --help" if err.ctx is not None else "--help"
        _fail(f"{where}{err.format_message()} (see '{helper}')", 2, json_errors)
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
    except ModuleNotFoundError as err:  # a dependency missing from this environment: say which, and how to get it
        package = (err.name or "?").split(".")[0]
        _fail(f"this needs the Python package {package!r}, which is not installed here: pip install {package} "
              "(or install overmount-planner with its dependencies)", 1, json_errors)


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
