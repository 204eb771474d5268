import glob
import os
import sys
import tomllib
from collections.abc import Callable

import pytest

from planner.progress import Progress, every, on_stderr

HERE = os.path.dirname(__file__)
REPO = os.path.dirname(HERE)
SAMPLES = os.path.join(HERE, "data", "mountinfo")
SCENARIOS = sorted(glob.glob(os.path.join(REPO, "scenarios", "*.toml")))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-kernel",
        action="store_true",
        help="fail, not skip, the tests that need a mount namespace when this machine cannot make one "
        "(on by itself when the CI environment variable is set)",
    )


def kernel_required(config: pytest.Config) -> bool:
    """--require-kernel, or CI set (GitHub, GitLab and most others set CI=true): a run that cannot
    reach the kernel must not pass on the pure tests alone."""
    return bool(config.getoption("--require-kernel")) or os.environ.get("CI", "").lower() not in ("", "0", "false")


def scenario_ids() -> list[str]:
    return [os.path.basename(p)[:-5] for p in SCENARIOS]


@pytest.fixture(params=SCENARIOS, ids=scenario_ids())
def scenario_path(request: pytest.FixtureRequest) -> str:
    return request.param


def load_expect(path: str) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle).get("expect", {})


@pytest.fixture
def progress(pytestconfig: pytest.Config) -> Progress:
    """Progress of a long test (the stress runs) on the terminal pytest was started from.

    pytest captures standard error while a test runs; each report steps out of the capture
    (as pytest's own live logging does) and draws on the real standard error, which shows it
    only when that is a terminal (planner.progress.on_stderr): `make stress > log` stays quiet."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    bars: list[Progress] = []

    def report(what: str, done: int, total: int) -> None:
        with capture.global_and_fixture_disabled():
            if not bars:
                bars.append(on_stderr(sys.stderr))
            bars[0](what, done, total)

    return report


def counted(progress: Progress, what: str, total: int) -> Callable[[], None]:
    """A tick for each example of a hypothesis run of `total`; progress hears every hundredth."""
    done = [0]
    step = every(total)

    def tick() -> None:
        done[0] += 1
        if done[0] % step == 0:
            progress(what, min(done[0], total - 1), total)  # a shrink can run past the total

    return tick
