import glob
import os
import tomllib

import pytest

HERE = os.path.dirname(__file__)
REPO = os.path.dirname(HERE)
SAMPLES = os.path.join(HERE, "data", "mountinfo")
SCENARIOS = sorted(glob.glob(os.path.join(REPO, "scenarios", "*.toml")))


def scenario_ids() -> list[str]:
    return [os.path.basename(p)[:-5] for p in SCENARIOS]


@pytest.fixture(params=SCENARIOS, ids=scenario_ids())
def scenario_path(request: pytest.FixtureRequest) -> str:
    return request.param


def load_expect(path: str) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle).get("expect", {})
