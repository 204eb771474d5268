import glob
import os
import tomllib

import pytest

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
