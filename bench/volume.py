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


def _steps(stored: int, total: int) -> list[int]:
    """Messages to send between RSS samples: up to a tenth, a third, then all of `total`."""
    steps, reached = [], stored
    for mark in (total // 10, total // 3, total):
        if mark > reached:
            steps.append(mark - reached)
            reached = mark
    return steps


def _rate(figures: dict[str, float | None]) -> float:
    rate = figures["requests_per_s"]
    assert rate is not None
    return rate


def _warm_up(tool: str, target: Target, state: Path, seconds: float) -> None:
    """The throughput cases as dry runs, which store nothing: the server's threads, gRPC's
    buffers and the allocator's arenas reach the size that serving brings whatever the volume
    stored, so that the first sample compares like with like."""
    for case in THROUGHPUT_CASES:
        dry = state / f"volume-{case.messages}-dry.body"
        dry.write_bytes(cases.body(case, dry_run=True))
        measure(tool, target, case, dry, seconds)


def run(tool: str, state: Path, total: int, seconds: float, repeats: int) -> dict[str, object]:
    """RSS (now and peak) after FIRST_SAMPLE accepted messages, cold and then warmed up by dry
    runs (`_warm_up`), and after `total`; throughput just after the first sample and again at
    the end, with the stored count at each."""
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
        rss_cold, peak_cold = memory_kib(target.server_pid)
        print(f"volume: {FIRST_SAMPLE:,} accepted, cold: RSS {rss_cold / 1024:.1f} MiB", flush=True)
        _warm_up(tool, target, state, seconds)
        rss_first, peak_first = memory_kib(target.server_pid)
        accepted_first = stored_messages(database_url)
        print(f"volume: {accepted_first:,} accepted, RSS {rss_first / 1024:.1f} MiB", flush=True)
        empty = _throughput(tool, target, bodies, seconds, repeats)
        now, peak = memory_kib(target.server_pid)
        after_runs = {"accepted": stored_messages(database_url), "now": now, "peak": peak}
        print(f"volume: after the empty-database runs, RSS {now / 1024:.1f} MiB", flush=True)
        checkpoints: list[dict[str, int]] = []
        for step in _steps(stored_messages(database_url), total):
            send(tool, target, bulk, bodies[bulk], math.ceil(step / bulk.messages))
            now, peak = memory_kib(target.server_pid)
            accepted = stored_messages(database_url)
            checkpoints.append({"accepted": accepted, "now": now, "peak": peak})
            print(f"volume: {accepted:,} accepted, RSS {now / 1024:.1f} MiB", flush=True)
        rss_last, peak_last = memory_kib(target.server_pid)
        accepted_last = stored_messages(database_url)
        full = _throughput(tool, target, bodies, seconds, repeats)
    ratios = {name: _rate(full[name]) / _rate(empty[name]) for name in empty}
    return {
        "rss_kib_cold": {"accepted": accepted_first, "now": rss_cold, "peak": peak_cold},
        "peak_rss_ratio_from_cold": peak_last / peak_cold,
        "rss_kib": {"accepted": accepted_first, "now": rss_first, "peak": peak_first},
        "rss_kib_at_total": {"accepted": accepted_last, "now": rss_last, "peak": peak_last},
        "rss_kib_after_empty_runs": after_runs,
        "rss_kib_on_the_way": checkpoints,
        "peak_rss_ratio": peak_last / peak_first,
        "throughput_empty": {"stored_before": accepted_first, **empty},
        "throughput_full": {"stored_before": accepted_last, **full},
        "full_vs_empty": ratios,
        "full_vs_empty_min": min(ratios.values()),
    }
