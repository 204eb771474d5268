"""The command line end to end: outputs, exit statuses, one-line errors."""

import json
import os
import subprocess
import sys
import tomllib

from tests.conftest import REPO

SEED = os.path.join(REPO, "scenarios", "01-seed-lxd-cgroup.toml")


def overmount(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner", *args], input=stdin, capture_output=True, cwd=REPO, check=False)


def test_analyze_marks_123_hidden_under_128() -> None:
    out = overmount("analyze", SEED)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    line_123 = next(l for l in text.splitlines() if "/sys/fs/cgroup/cgmanager " in l and " 123 " in l)
    assert line_123.endswith("HIDDEN, covered by 128")
    assert "* target t1 bind /sys/fs/cgroup/cgmanager/sock  [HIDDEN, covered by 128; bound through alias mount 129, no move]" in text


def test_analyze_json_contract() -> None:
    out = overmount("analyze", SEED, "--json")
    data = json.loads(out.stdout)
    assert data["hidden_mounts"] == [107, 109, 122, 123]
    by_id = {t["id"]: t for t in data["targets"]}
    assert (by_id["t1"]["hidden"], by_id["t1"]["covered_by"]) == (True, [128])
    assert (by_id["t4"]["hidden"], by_id["t4"]["covered_by"]) == (False, [])


def test_bare_mountinfo_from_stdin_with_target_options() -> None:
    with open(SEED, "rb") as handle:
        text = tomllib.load(handle)["mountinfo"]
    out = overmount("analyze", "-", "--json", "--target", "123:/sys/fs/cgroup/cgmanager/sock:bind", stdin=text.encode())
    assert out.returncode == 0, out.stderr
    target = json.loads(out.stdout)["targets"][0]
    assert target == {"id": "t1", "kind": "bind", "mount": 123, "path": "/sys/fs/cgroup/cgmanager/sock",
                      "hidden": True, "covered_by": [128], "must_move": [128], "alias": 129, "same_file": []}


def test_plan_json_then_check(tmp_path) -> None:
    plan_file = tmp_path / "plan.json"
    assert overmount("plan", SEED, "--format", "json", "-o", str(plan_file)).returncode == 0
    plan = json.loads(plan_file.read_text())
    assert plan["format"] == "overmount-plan/1"
    # t1's socket is bound through 129 (an alias of 123, see How it decides), then one bracket.
    assert [s["op"] for s in plan["steps"]][:3] == ["bind", "yard-create", "move-aside"]
    assert plan["steps"][0]["via"] == 129
    assert (plan["moves"], plan["lower_bound"], plan["lower_bound_with_aliases"], plan["naive_moves"]) == (1, 1, 1, 3)
    out = overmount("check", SEED, str(plan_file))
    assert (out.returncode, out.stdout.decode()) == (0, "ok: 8 steps, 1 move, 4 targets reached, tree restored\n")


def test_check_rejects_an_edited_plan_with_exit_1(tmp_path) -> None:
    plan = json.loads(overmount("plan", SEED, "--format", "json").stdout)
    plan["steps"] = [s for s in plan["steps"] if s["op"] != "move-back"]
    (tmp_path / "bad.json").write_text(json.dumps(plan))
    out = overmount("check", SEED, str(tmp_path / "bad.json"))
    assert out.returncode == 1
    assert out.stderr.decode() == "overmount: step 6 (yard-remove /.overmount-yard): yard /.overmount-yard still holds mount 128\n"


def test_shell_rendering_uses_util_linux() -> None:
    text = overmount("plan", SEED, "--format", "shell").stdout.decode()
    assert "mkdir -m 0700 /.overmount-yard/0\nmount --move /sys/fs/cgroup /.overmount-yard/0; om_made2=1  # mount 128" in text
    assert "mount --move /.overmount-yard/0 /sys/fs/cgroup; om_made2=0  # mount 128" in text
    assert "# no command: the restoring process does bind(/sys/fs/cgroup/cgmanager/sock) now" in text


def test_refused_plan_exits_1() -> None:
    out = overmount("plan", os.path.join(REPO, "scenarios", "16-shared-parent-with-peer.toml"), "--kernel", "5.4")
    assert out.returncode == 1
    assert "MOVE_MOUNT_SET_GROUP (Linux 5.15+), planning for 5.4" in out.stderr.decode()
    assert out.stdout == b""


def test_unknown_mount_in_target_option_is_exit_2() -> None:
    out = overmount("analyze", SEED, "--target", "999:/x")
    assert out.returncode == 2
    assert out.stderr.decode() == "overmount: --target 999:/x: target t5: mount 999 is not in the mount table\n"


def test_path_outside_its_mount_is_exit_2() -> None:
    out = overmount("plan", SEED, "--target", "123:/etc/passwd")
    assert out.returncode == 2
    assert "path /etc/passwd is not under mount 123's mountpoint /sys/fs/cgroup/cgmanager" in out.stderr.decode()


def test_missing_file_and_usage_errors_are_exit_2() -> None:
    assert overmount("analyze", "/nonexistent").returncode == 2
    assert overmount("plan").returncode == 2
    assert overmount("plan", SEED, "--kernel", "six").returncode == 2


def test_stdin_takes_a_scenario_and_a_crit_mountpoints_file() -> None:
    with open(SEED, "rb") as handle:
        out = overmount("analyze", "-", "--json", stdin=handle.read())
    assert out.returncode == 0 and json.loads(out.stdout)["hidden_mounts"] == [107, 109, 122, 123]
    crit = os.path.join(REPO, "tests", "data", "criu", "socket-dir-covered", "mountpoints-10.json")
    with open(crit, "rb") as handle:
        out = overmount("analyze", "-", "--json", stdin=handle.read())
    assert out.returncode == 0 and 45 in [m["id"] for m in json.loads(out.stdout)["mounts"]]


def test_a_mistyped_kind_is_refused_not_taken_as_path() -> None:
    out = overmount("plan", SEED, "--target", "122:/sys/fs/cgroup/x:chdri")
    assert (out.returncode, out.stderr.decode().count("\n")) == (2, 1)
    assert "unknown kind 'chdri'" in out.stderr.decode()
    out = overmount("analyze", SEED, "--json", "--target", "122:/sys/fs/cgroup/a:b:open")
    assert json.loads(out.stdout)["targets"][-1]["path"] == "/sys/fs/cgroup/a:b"


def test_usage_errors_are_one_line_and_exit_2(tmp_path) -> None:
    for args in (["plan"], ["plan", SEED, "--format", "xml"], ["plan", SEED, "--yard", "relative"],
                 ["plan", SEED, "--yard", "/"], ["plan", SEED, "-o", str(tmp_path / "no" / "such.json")],
                 ["plan", SEED, "-o", str(tmp_path)], ["run", SEED, "--plan", "x.json", "--yard", "/y"]):
        out = overmount(*args)
        err = out.stderr.decode()
        assert (out.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False), (args, err)
    assert os.listdir(tmp_path) == []  # no half-written plan left anywhere


def test_check_rejects_a_plan_whose_move_count_lies(tmp_path) -> None:
    plan = json.loads(overmount("plan", SEED, "--format", "json").stdout)
    plan["moves"] = 5
    (tmp_path / "p.json").write_text(json.dumps(plan, indent=2))
    out = overmount("check", SEED, str(tmp_path / "p.json"))
    assert out.returncode == 2
    assert "'moves' says 5, the steps hold 1 move-asides" in out.stderr.decode()


def test_run_json_answers_even_when_the_plan_is_refused() -> None:
    out = overmount("run", os.path.join(REPO, "scenarios", "20-locked-cover-in-userns.toml"), "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["ok"] is False and "mount 41 is locked to its parent" in report["error"]


def test_a_hostile_plan_file_is_exit_2_not_a_traceback(tmp_path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000)
    out = overmount("check", SEED, str(tmp_path / "deep.json"))
    err = out.stderr.decode()
    assert (out.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False)
    assert err.startswith(f"overmount: {tmp_path / 'deep.json'}: not usable JSON")


def test_a_plan_step_with_a_list_for_its_op_is_exit_2(tmp_path) -> None:
    plan = json.loads(overmount("plan", SEED, "--format", "json").stdout)
    plan["steps"][1]["op"] = ["open"]  # was a TypeError (unhashable list) and a traceback
    (tmp_path / "p.json").write_text(json.dumps(plan, indent=2))
    for command in ("check", "run"):
        args = [command, SEED, str(tmp_path / "p.json")] if command == "check" else [command, SEED, "--plan", str(tmp_path / "p.json")]
        out = overmount(*args)
        err = out.stderr.decode()
        assert (out.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False), err
        assert "step 1: unknown op ['open']" in err


# The review's tracebacks, each also through `run`, which used to get as far as the namespace child.
RUN_REFUSED = [
    ("mi-group-id-superscript.txt", "shared is not a peer group number"),
    ("mi-group-id-5000-digits.txt", "master is not a peer group number"),
    ("mi-mountpoint-dotdot.txt", "has '.', '..' or empty components"),  # was FileExistsError in the replica
    ("dump-target-path-lone-surrogate.json", "lone surrogate"),  # was UnicodeEncodeError
    ("dump-target-path-over-path-max.json", "over PATH_MAX"),  # was ENAMETOOLONG from the namespace
    ("dump-target-name-over-name-max.json", "over NAME_MAX"),
]


def test_run_refuses_the_reviews_inputs_with_one_line() -> None:
    for name, fragment in RUN_REFUSED:
        path = os.path.join("tests", "data", "bad", name)
        out = overmount("run", path)
        err = out.stderr.decode()
        assert (out.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False), (name, err[-500:])
        assert err.startswith(f"overmount: {path}") and fragment in err, (name, err)


def test_json_callers_get_an_error_object_on_stdout() -> None:
    bad = os.path.join("tests", "data", "bad", "mi-mountpoint-dotdot.txt")
    for args in (["analyze", bad, "--json"], ["run", bad, "--json"], ["plan", bad, "--format", "json"],
                 ["plan", bad, "--format=json", "-o", "/nonexistent/never-written"]):
        out = overmount(*args)
        assert out.returncode == 2
        answer = json.loads(out.stdout)
        assert answer == {
            "ok": False,
            "error": f"{bad}:3: mount point '/srv/..' has '.', '..' or empty components (the kernel never writes them)",
            "exit_status": 2, "source": bad, "line": 3,
            "reason": "mount point '/srv/..' has '.', '..' or empty components (the kernel never writes them)",
        }, args
        assert out.stderr.decode() == f"overmount: {answer['error']}\n"
    usage = overmount("run", SEED, "--json", "--yard", "relative")  # a usage error click raises while parsing
    assert usage.returncode == 2 and json.loads(usage.stdout)["exit_status"] == 2
    refused = overmount("plan", os.path.join(REPO, "scenarios", "16-shared-parent-with-peer.toml"), "--kernel", "5.4",
                        "--format", "json")
    answer = json.loads(refused.stdout)
    assert refused.returncode == 1 and answer["exit_status"] == 1 and "MOVE_MOUNT_SET_GROUP" in answer["error"]
    assert "error" not in json.loads(overmount("analyze", SEED, "--json").stdout)  # not on success


def test_inputs_past_the_stated_limits_are_refused_with_one_line(tmp_path) -> None:
    def with_limit(variable: str, value: int, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "planner", *args], input=stdin, capture_output=True, cwd=REPO,
                              check=False, env={**os.environ, variable: str(value)})
        err = done.stderr.decode()
        assert (done.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False), err
        return err

    err = with_limit("OVERMOUNT_MAX_INPUT_BYTES", 1000, "analyze", SEED)
    assert err == (f"overmount: {SEED}: more bytes, over the limit of 1,000 bytes per input "
                   "(set OVERMOUNT_MAX_INPUT_BYTES to raise it)\n")
    with open(SEED, "rb") as handle:
        assert "<stdin>: more bytes" in with_limit("OVERMOUNT_MAX_INPUT_BYTES", 1000, "plan", "-", stdin=handle.read())
    err = with_limit("OVERMOUNT_MAX_MOUNTS", 10, "analyze", SEED)
    assert err.endswith("mount 11, over the limit of 10 mounts per table (set OVERMOUNT_MAX_MOUNTS to raise it)\n")
    plan = tmp_path / "plan.json"
    assert overmount("plan", SEED, "--format", "json", "-o", str(plan)).returncode == 0
    err = with_limit("OVERMOUNT_MAX_STEPS", 3, "check", SEED, str(plan))
    assert err.startswith(f"overmount: {plan}:4: 8 steps, over the limit of 3 steps per plan (set OVERMOUNT_MAX_STEPS")


def test_the_default_limits_are_the_documented_ones() -> None:
    from planner import limits

    assert (limits.INPUT_BYTES.default, limits.MOUNTS.default, limits.STEPS.default) == (64 << 20, 200_000, 1_000_000)
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    for limit in (limits.INPUT_BYTES, limits.MOUNTS, limits.STEPS):
        assert limit.variable in readme


def test_a_crit_directory_with_absurdly_nested_json_is_exit_2_not_a_traceback(tmp_path) -> None:
    """The CRIU reader reads JSON through the one loader: nesting past the recursion limit is bad input
    (it was a traceback, exit 1, when the CRIU reader had a json.loads of its own)."""
    (tmp_path / "mountpoints-1.json").write_text('{"magic": "MNTS", "entries": ' + "[" * 100_000)
    for dump in (str(tmp_path), str(tmp_path / "mountpoints-1.json")):
        out = overmount("analyze", dump)
        err = out.stderr.decode()
        assert (out.returncode, err.count("\n"), "Traceback" in err) == (2, 1, False), err
        assert "mountpoints-1.json: not usable JSON" in err, err
