"""Without the kernel, namespace tests skip with the reason; under CI or --require-kernel they fail.

The machine without namespaces is made for real: tests/no_namespaces.py has the kernel refuse
unshare(2) (seccomp) for a pytest run of one namespace test.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

ONE_KERNEL_TEST = "tests/namespace/test_kernel.py::test_mount_api_in_a_namespace"
pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter uses x86_64 syscall numbers")


def pytest_without_namespaces(*options: str, ci: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "tests/no_namespaces.py", sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         ONE_KERNEL_TEST, *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_without_namespaces_kernel_tests_skip_with_the_reason() -> None:
    run = pytest_without_namespaces()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "cannot make a mount namespace here" in run.stdout, run.stdout
    assert "Operation not permitted" in run.stdout  # the kernel's own answer to unshare(2)


@pytest.mark.parametrize("how", ["CI=true", "--require-kernel"])
def test_under_ci_or_require_kernel_they_fail(how: str) -> None:
    run = pytest_without_namespaces(how) if how.startswith("--") else pytest_without_namespaces(ci=how.split("=")[1])
    assert run.returncode == 1, run.stdout + run.stderr
    assert "this run requires the kernel" in run.stdout and "1 error" in run.stdout, run.stdout


def test_ci_false_is_not_ci() -> None:
    assert pytest_without_namespaces(ci="false").returncode == 0
