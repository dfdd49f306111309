"""Volume: the server's memory while it accepts 1,000,000 messages (1000-message requests),
and its throughput with them stored against a (nearly) empty database, on a fresh stack."""

from __future__ import annotations

import math
from pathlib import Path

from bench import cases
from bench.cases import Case
from bench.measure import Run, check_once, measure, median_of, send
from bench.stack import Target, memory_kib, mplus_stack, stored_messages

FIRST_SAMPLE = 10_000
THROUGHPUT_CASES = (Case("grpc", 1, 8), cases.BULK)


def _throughput(
    tool: str, target: Target, bodies: dict[Case, Path], seconds: float, repeats: int
) -> dict[str, dict[str, float | None]]:
    samples: dict[Case, list[Run]] = {case: [] for case in THROUGHPUT_CASES}
    for _ in range(repeats):
        for case in THROUGHPUT_CASES:
            samples[case].append(measure(tool, target, case, bodies[case], seconds))
    return {case.name: median_of(runs, case.messages) for case, runs in samples.items()}


def _rate(figures: dict[str, float | None]) -> float:
    rate = figures["requests_per_s"]
    assert rate is not None
    return rate


def run(tool: str, state: Path, total: int, seconds: float, repeats: int) -> dict[str, object]:
    """RSS (now and peak) after FIRST_SAMPLE and after `total` accepted messages; throughput
    just after the first sample and again at the end, with the stored count at each."""
    state.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{state / 'mplus' / 'mplus.db'}"
    bodies: dict[Case, Path] = {}
    for case in THROUGHPUT_CASES:
        bodies[case] = state / f"volume-{case.messages}.body"
        bodies[case].write_bytes(cases.body(case))
    bulk = cases.BULK
    with mplus_stack(state / "mplus", database_url) as target:
        check_once(target, bulk, bodies[bulk].read_bytes())
        send(tool, target, bulk, bodies[bulk], FIRST_SAMPLE // bulk.messages - 1)
        rss_first, peak_first = memory_kib(target.server_pid)
        accepted_first = stored_messages(database_url)
        print(f"volume: {accepted_first:,} accepted, RSS {rss_first / 1024:.1f} MiB", flush=True)
        empty = _throughput(tool, target, bodies, seconds, repeats)
        remaining = total - stored_messages(database_url)
        if remaining > 0:
            send(tool, target, bulk, bodies[bulk], math.ceil(remaining / bulk.messages))
        rss_last, peak_last = memory_kib(target.server_pid)
        accepted_last = stored_messages(database_url)
        print(f"volume: {accepted_last:,} accepted, RSS {rss_last / 1024:.1f} MiB", flush=True)
        full = _throughput(tool, target, bodies, seconds, repeats)
    ratios = {name: _rate(full[name]) / _rate(empty[name]) for name in empty}
    return {
        "rss_kib": {"accepted": accepted_first, "now": rss_first, "peak": peak_first},
        "rss_kib_at_total": {"accepted": accepted_last, "now": rss_last, "peak": peak_last},
        "peak_rss_ratio": peak_last / peak_first,
        "throughput_empty": {"stored_before": accepted_first, **empty},
        "throughput_full": {"stored_before": accepted_last, **full},
        "full_vs_empty": ratios,
        "full_vs_empty_min": min(ratios.values()),
    }
