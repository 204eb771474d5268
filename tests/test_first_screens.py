"""What a new user meets first: bare usage, every --help, --version, plans that show what matters,
--target paths with colons, tables that stay in line, ASCII where box characters cannot be shown,
and refusals that name the way out."""

import json
import os
import re
import subprocess
import sys

import click
import pytest

from planner import __version__, render
from planner.analysis import analyze
from planner.cli import cli
from planner.inputs import load
from planner.plan import make_plan
from planner.tree import MountTree
from tests.conftest import REPO

CAN_NAMESPACE = __import__("planner.kernel", fromlist=["can_make_namespaces"]).can_make_namespaces()[0]

SEED = os.path.join("scenarios", "01-seed-lxd-cgroup.toml")
CAPTURED = os.path.join("scenarios", "26-captured-web-server.toml")
BOX = set("├└│─…")


def overmount(*args: str, env: dict[str, str] | None = None, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *args], capture_output=True, cwd=cwd, check=False,
                          env={**os.environ, "LANG": "C.UTF-8", **(env or {})}, timeout=120)


# --- bare usage, help, version ---------------------------------------------------------------

def test_bare_overmount_prints_readable_usage_and_the_commands() -> None:
    out = overmount()
    err = out.stderr.decode()
    assert out.returncode == 2 and out.stdout == b""  # a usage error: nothing on stdout for a script
    assert "\\n" not in err and err.count("\n") > 15  # lines, not one line of literal escapes
    assert err.startswith("Usage: ") and "COMMAND [ARGS]..." in err.splitlines()[0]
    listed = [line.split()[0] for line in err.split("Commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed == ["capture", "analyze", "plan", "check", "run", "recover"]  # the order a user meets them
    assert "Exit status:" in err and "Examples:" in err


def _commands() -> list[str]:
    return list(cli.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_command_says_what_it_does_and_what_each_option_takes(command: str) -> None:
    out = overmount(command, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    summary = text.split("\n\n")[1].strip()
    assert summary.endswith(".") and "\n" not in summary  # one line on what it does
    cmd = cli.commands[command]  # type: ignore[attr-defined]
    for param in cmd.params:
        if not isinstance(param, click.Option):
            continue
        assert param.help, (command, param.name)
        if not param.is_flag:
            # a metavar that says what it takes, shown in the help as typed
            shown = param.make_metavar(click.Context(cmd))
            assert shown not in ("TEXT", "INTEGER"), (command, param.name, shown)
            assert f"{param.opts[-1]} {shown}" in text, (command, param.opts, shown)
    exits = text.split("Exit status:\n")[1]
    assert re.search(r"^  0  ", exits, re.MULTILINE) and re.search(r"^  2  ", exits, re.MULTILINE)
    examples = text.split("Examples:\n")[1].split("\n\n")[0].splitlines()
    assert 1 <= len(examples) <= 2 and all(e.startswith("  overmount ") for e in examples)
    assert any(f"overmount {command} " in e for e in examples)


def test_the_options_users_named_show_what_they_take() -> None:
    plan_help = overmount("plan", "-h").stdout.decode()
    for shown in ("--yard PATH", "--format [text|json|shell]", "--kernel X.Y", "--target MOUNT:PATH[:KIND]",
                  "-o, --output FILE"):
        assert shown in plan_help, shown
    assert "--pid PID" in overmount("capture", "-h").stdout.decode()
    assert "--plan PLAN" in overmount("run", "-h").stdout.decode()


def test_help_examples_that_need_only_the_repository_run_as_shown(tmp_path) -> None:
    os.symlink(os.path.join(REPO, "scenarios"), tmp_path / "scenarios")
    for command in ("analyze", "plan", "check"):
        examples = overmount(command, "-h").stdout.decode().split("Examples:\n")[1].split("\n\n")[0].splitlines()
        for example in examples:
            args = example.split()[1:]
            if any(a in ("dump.json", "4242") or a.startswith("/proc/") for a in args):
                continue
            out = overmount(*args, cwd=str(tmp_path))
            assert out.returncode == 0, (example, out.stderr)


def test_version_prints_the_version_and_the_formats() -> None:
    for flag in ("--version", "-V"):
        out = overmount(flag)
        assert (out.returncode, out.stdout.decode()) == (0, f"overmount {__version__} (overmount-plan/1, overmount-dump/1)\n")
    from importlib.metadata import version

    assert version("overmount-planner") == __version__  # pyproject reads the same attribute


def test_a_usage_error_names_the_help_to_read() -> None:
    out = overmount("plan")
    assert out.stderr.decode() == "overmount: plan: Missing argument 'DUMP'. (see 'python -m planner plan --help')\n"


# --- plans that show what matters --------------------------------------------------------------

def test_text_plan_lists_hidden_targets_and_summarises_the_rest_in_one_line() -> None:
    text = overmount("plan", CAPTURED).stdout.decode()
    data = json.loads(overmount("plan", CAPTURED, "--format", "json").stdout)
    steps = data["steps"]
    hidden_ids = {t["id"] for t in json.loads(overmount("analyze", CAPTURED, "--json").stdout)["targets"] if t["hidden"]}
    in_view = [i for i, s in enumerate(steps) if s.get("target") and s["target"] not in hidden_ids]
    assert len(in_view) >= 10
    for index, step in enumerate(steps):  # every other step is there under its own number
        shown = re.search(rf"^ *{index}  {re.escape(step['op'])} ", text, re.MULTILINE) is not None
        assert shown == (index not in in_view), (index, step)
    summary = [line for line in text.splitlines() if "not hidden" in line and "--all" in line]
    assert len(summary) == 1
    assert summary[0].strip().startswith(f"{len(in_view)} targets not hidden (")
    assert "reached at their own paths, no move needed" in summary[0]
    full = overmount("plan", CAPTURED, "--all").stdout.decode()
    assert all(re.search(rf"^ *{i}  ", full, re.MULTILINE) for i in range(len(steps))) and "--all" not in full


def test_json_keeps_every_step_and_check_and_run_plan_take_it(tmp_path) -> None:
    plan_file = tmp_path / "plan.json"
    assert overmount("plan", CAPTURED, "--format", "json", "-o", str(plan_file)).returncode == 0
    steps = json.loads(plan_file.read_text())["steps"]
    targets = json.loads(overmount("analyze", CAPTURED, "--json").stdout)["targets"]
    assert sorted(s["target"] for s in steps if "target" in s) == sorted(t["id"] for t in targets)
    out = overmount("check", CAPTURED, str(plan_file))
    assert out.returncode == 0 and out.stdout.decode().startswith(f"ok: {len(steps)} steps, 2 moves, {len(targets)} targets")


def test_the_shell_rendering_summarises_comments_only_and_runs_the_same_commands() -> None:
    short = overmount("plan", CAPTURED, "--format", "shell").stdout.decode()
    full = overmount("plan", CAPTURED, "--format", "shell", "--all").stdout.decode()

    def commands(script: str) -> list[str]:
        return [line for line in script.splitlines() if not line.lstrip().startswith("#")]

    assert commands(short) == commands(full)
    assert short.count("# no command: the restoring process does") < full.count("# no command: the restoring process does")
    assert "before or after this script" in short and "--all marks them" in short


def test_a_summary_never_takes_a_mount_source_step() -> None:
    """A not-hidden mount-source makes a mount: listed in text and a command in shell, never summarised."""
    text = overmount("plan", os.path.join("scenarios", "13-not-hidden.toml")).stdout.decode()
    assert "mount-source  t5: /var/lib/images -> /mnt/images (mount 26)" in text
    assert "4 targets not hidden (2 chdir, 1 open, 1 bind)" in text
    assert text.splitlines()[0].endswith("5 targets (none hidden), no move needed")


def test_analyze_and_run_summarise_targets_in_view_too() -> None:
    text = overmount("analyze", CAPTURED).stdout.decode()
    assert re.search(r"\* \d+ targets not hidden: \d+ mmap, .*\(--all lists them\)", text)
    listed = overmount("analyze", CAPTURED, "--all").stdout.decode()
    assert text.count("[not hidden]") == 1 and listed.count("[not hidden]") == 16  # one alone in its mount stays
    run = overmount("run", CAPTURED) if CAN_NAMESPACE else None
    if run is not None:
        assert run.returncode == 0, run.stderr
        assert "16 targets not hidden (10 mmap, 5 open, 1 chdir): ok, each in its own mount (--all lists them)" in run.stdout.decode()


# --- --target with colons in the path ----------------------------------------------------------

@pytest.mark.parametrize(("option", "kind", "path", "to"), [
    ("122:/sys/fs/cgroup/a:b", "open", "/sys/fs/cgroup/a:b", None),
    ("122:/sys/fs/cgroup/pci-0000:00:1f.2", "open", "/sys/fs/cgroup/pci-0000:00:1f.2", None),
    ("123:/sys/fs/cgroup/cgmanager/bus:1:bind", "bind", "/sys/fs/cgroup/cgmanager/bus:1", None),
    ("122:/sys/fs/cgroup/x:open:chdir", "chdir", "/sys/fs/cgroup/x:open", None),
    ("122:/sys/fs/cgroup/a:b:mount-source=/mnt/c:d", "mount-source", "/sys/fs/cgroup/a:b", "/mnt/c:d"),
])
def test_a_path_with_colons_is_a_path(option: str, kind: str, path: str, to: str | None) -> None:
    out = overmount("analyze", SEED, "--json", "--target", option)
    assert out.returncode == 0, out.stderr
    target = json.loads(out.stdout)["targets"][-1]
    assert (target["kind"], target["path"], target.get("to")) == (kind, path, to)


def test_a_mistyped_kind_is_still_refused_with_the_way_out() -> None:
    out = overmount("plan", SEED, "--target", "122:/sys/fs/cgroup/x:chdri")
    err = out.stderr.decode()
    assert (out.returncode, err.count("\n")) == (2, 1)
    assert "unknown kind 'chdri': did you mean chdir?" in err and "122:/sys/fs/cgroup/x:chdri:open" in err
    out = overmount("plan", SEED, "--target", "122:/sys/fs/cgroup/x:mount-source")
    assert "MOUNT:PATH:mount-source=TO" in out.stderr.decode() and out.returncode == 2


# --- tables and words ---------------------------------------------------------------------------

LONG_SOURCE = "/dev/disk/by-id/nvme-SAMSUNG_MZVL21T0HCLR-00B00_S676NX0T123456-part2"
TABLE = "\n".join((
    f"1 0 259:2 / / rw - ext4 {LONG_SOURCE} rw",
    "20 1 0:21 / /run rw shared:5 - tmpfs tmpfs rw",
    "21 20 0:22 / /run/user rw shared:6 - tmpfs tmpfs rw",
    "22 1 0:23 / /srv rw - tmpfs x rw",
    "23 22 0:24 / /srv/a rw - tmpfs y rw",
    "24 22 0:25 / /srv rw master:5 - tmpfs z rw",
)) + "\n"


def _columns(line: str, header: str) -> list[int]:
    return [header.index(name) for name in ("ID", "FSTYPE", "SOURCE", "PROPAGATION", "STATUS")]


def test_columns_stay_in_line_with_a_long_source(tmp_path) -> None:
    (tmp_path / "mi").write_text(TABLE)
    text = overmount("analyze", str(tmp_path / "mi"), "--target", "23:/srv/a/f").stdout.decode()
    lines = text.splitlines()
    header = lines[0]
    rows = [line for line in lines[1:] if line and "target" not in line and not line.startswith(("6 mounts",))]
    assert len(rows) == 6
    assert LONG_SOURCE in text  # sized to content, nothing cut when not on a terminal
    for row in rows:
        # each field starts where its header does
        assert row[header.index("PROPAGATION")] != " " and row[header.index("PROPAGATION") - 1] == " ", row
    hidden = next(r for r in rows if " 23 " in r)
    assert hidden[header.index("STATUS"):] == "HIDDEN, covered by 24"


def test_on_a_terminal_the_source_is_cut_with_an_ellipsis_as_findmnt_does() -> None:
    tree = MountTree(tuple(__import__("planner.mountinfo", fromlist=["parse"]).parse(TABLE)), "<t>")
    analysis = analyze(tree, [])
    text = render.analysis_text(analysis, style=render.TableStyle(width=90))
    lines = text.splitlines()
    assert all(len(line) <= 90 for line in lines if line and not line[0].isdigit()), text
    assert LONG_SOURCE not in text and LONG_SOURCE[:20] in text and "…" in text
    status = lines[0].index("STATUS")
    assert next(line for line in lines if " 23 " in line)[status:] == "HIDDEN, covered by 24"
    ascii_text = render.analysis_text(analysis, style=render.TableStyle(unicode=False, width=90))
    assert "..." in ascii_text and not BOX & set(ascii_text)


def test_target_lines_keep_the_tree_bars() -> None:
    text = overmount("analyze", SEED).stdout.decode()
    # 122 has children: its targets hang on the bar that leads down to them; 123 has a sibling below
    assert "      │ * target t2 open /sys/fs/cgroup/notes.txt  [HIDDEN, covered by 128]" in text
    assert "      │   * target t1 bind /sys/fs/cgroup/cgmanager/sock  [HIDDEN, covered by 128; bound through alias mount 129, no move]" in text
    assert "│ │ * target t4 open /dev/foo  [not hidden]" in text


def test_words_count_right_and_say_what_was_verified() -> None:
    plan = overmount("plan", SEED).stdout.decode()
    assert ": 4 targets (3 hidden), 1 move aside and back (lower bound 1, 1 with aliases, naive 3)" in plan.splitlines()[0]
    tree = MountTree(load(os.path.join(REPO, SEED)).mounts, "<seed>")
    assert render.plural(1, "move") == "1 move" and render.plural(2, "move") == "2 moves"
    assert make_plan(tree, load(os.path.join(REPO, SEED)).targets, kernel=(6, 1)).moves == 1


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}])
def test_ascii_tree_where_stdout_cannot_show_box_characters(env: dict[str, str], tmp_path) -> None:
    (tmp_path / "mi").write_text(TABLE.replace("/srv/a ", "/srv/caf\\303\\251 "))
    out = overmount("analyze", SEED, env=env)
    text = out.stdout.decode("ascii")  # nothing but ASCII
    assert out.returncode == 0 and "Traceback" not in out.stderr.decode()
    assert "|-/dev " in text and "`-/sys " in text and "  | * target t2 open" in text and "| | * target t4" in text
    out = overmount("analyze", str(tmp_path / "mi"), env=env)
    assert out.returncode == 0, out.stderr
    assert "/srv/caf" in out.stdout.decode("utf-8")


def test_utf8_stdout_keeps_box_characters() -> None:
    assert BOX & set(overmount("analyze", SEED).stdout.decode())


# --- messages that name the way out -----------------------------------------------------------

def test_refusals_name_the_way_out(tmp_path) -> None:
    plan_file = tmp_path / "p.json"
    overmount("plan", SEED, "--format", "json", "-o", str(plan_file))
    cases = [
        (["plan", os.path.join("scenarios", "16-shared-parent-with-peer.toml"), "--kernel", "5.4"],
         "restore on 5.15 or later (--kernel 5.15 plans for it)"),
        (["analyze", str(plan_file)], "that is a plan; give the dump it was made for"),
        (["check", str(plan_file), str(plan_file)], "that is a plan; give the dump it was made for"),
        (["check", SEED, SEED], "not a JSON plan: PLAN is overmount-plan/1 JSON (overmount plan DUMP --format json -o PLAN)"),
        (["plan", SEED, "--yard", "/sys/fs/cgroup/y"], "choose --yard on a mount that stays in place"),
        (["plan", SEED, "--yard", "/dev"], "choose another --yard"),
    ]
    for args, way_out in cases:
        out = overmount(*args)
        err = out.stderr.decode()
        assert out.returncode in (1, 2) and err.count("\n") == 1 and way_out in err, (args, err)
    images = tmp_path / "criu-dump"
    images.mkdir()
    (images / "mountpoints-12.img").write_bytes(b"\x54\x56\x43\x19\x00\xff")
    for where in (images, images / "mountpoints-12.img"):
        err = overmount("analyze", str(where)).stderr.decode()
        assert "crit decode --pretty" in err and "apt install criu" in err, err


def test_a_missing_package_is_named_with_how_to_get_it(tmp_path) -> None:
    """pyroute2 (sock_diag) missing: capture skips the socket saying how to get it; run stops saying so."""
    code = ("import os, socket, sys; sys.modules['pyroute2'] = None; from planner.cli import main; "
            f"s = socket.socket(socket.AF_UNIX); s.bind({str(tmp_path / 'sock')!r}); "
            "sys.argv = ['overmount', 'capture', '--pid', str(os.getpid())]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, check=False, timeout=60)
    skipped = json.loads(out.stdout)["skipped"]
    assert any("pyroute2 is not installed here: pip install pyroute2" in s["reason"] for s in skipped), skipped
    if not CAN_NAMESPACE:
        pytest.skip("run needs a throwaway mount namespace, which this machine cannot make")
    code = ("import sys; sys.modules['pyroute2'] = None; from planner.cli import main; "
            f"sys.argv = ['overmount', 'run', {SEED!r}]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO, check=False, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 1 and err.count("\n") == 1, err
    assert "'pyroute2', which is not installed here: pip install pyroute2" in err, err
