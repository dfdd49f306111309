"""Reliability runs record what they did (requests sent, faults injected, acknowledged vs
stored, fuzz cases, 5xx seen) so that docs/reliability.md can quote the last run's figures.

`make test` runs the fast part; `make soak` sets MPLUS_SOAK=1 for the long part.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

SOAK = os.environ.get("MPLUS_SOAK") == "1"
RESULTS = Path(os.environ.get("MPLUS_RELIABILITY_RESULTS", "var/reliability"))


def scaled(fast: int, soak: int) -> int:
    """`fast` in `make test`, `soak` in `make soak`."""
    return soak if SOAK else fast


def record(area: str, **figures: Any) -> None:
    """Keeps this run's figures for `area` (one file each: the last run wins)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    entry = {
        "area": area,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
        "soak": SOAK,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / f"{area}.json").write_text(json.dumps(entry | figures, indent=2) + "\n")
