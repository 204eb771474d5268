"""Counts from the stress runs, kept in bench/results/reliability.json for the README to cite."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

import hypothesis

from tests.conftest import REPO

RESULTS = os.path.join(REPO, "bench", "results", "reliability.json")


def record(section: str, summary: dict[str, Any]) -> None:
    """Replace one section of the results file, keeping the others (fuzz and properties write separately)."""
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    try:
        with open(RESULTS, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        data = {}
    data[section] = {
        **summary,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "hypothesis": hypothesis.__version__,
    }
    tmp = RESULTS + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, RESULTS)
