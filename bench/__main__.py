"""Runs every case against the no-op ceiling and mplus on SQLite and on PostgreSQL,
interleaved, then the volume runs; reports medians, ratios and the issue's targets.

.venv/bin/python -m bench [--seconds 3] [--repeats 3] [--volume 1000000] [--no-postgres]
    [--cases "grpc 1-msg c32,json 1-msg c8"]
(a quick look: --seconds 1 --repeats 1 --volume 20000; a few cases only, say while
profiling: --cases "grpc 1-msg c32" --volume 0, which judges no targets)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import cases, h2load, volume
from bench.cases import CASES, Case
from bench.driver import postgres_rows_per_s, sqlite_rows_per_s
from bench.measure import Run, check_once, measure, median_of, median_rate
from bench.report import Target, table, targets_table
from bench.stack import mplus_stack, noop_stack, stored_messages
from harness.postgres import fresh_postgres_database, postgres_server

RESULTS = Path(__file__).parent / "results"
DRIVERS = {
    "sqlite": "sqlite3 executemany, 1000-row transactions, WAL, synchronous=FULL",
    "postgres": "psycopg COPY, 1000-row transactions, PostgreSQL's defaults",
}


def _drivers(
    state: Path, postgres_base: str | None, seconds: float
) -> dict[str, Callable[[int], float]]:
    """Each database's bare-driver measurement: rows/s into a fresh database, by repeat."""
    drivers: dict[str, Callable[[int], float]] = {
        "sqlite": lambda repeat: sqlite_rows_per_s(state / f"driver-{repeat}", seconds)
    }
    if postgres_base is not None:

        def on_postgres(_repeat: int) -> float:
            with fresh_postgres_database(postgres_base) as url:
                return postgres_rows_per_s(url, seconds)

        drivers["postgres"] = on_postgres
    return drivers


def _measure_cases(
    selected: tuple[Case, ...],
    tool: str,
    state: Path,
    databases: dict[str, str],
    drivers: dict[str, Callable[[int], float]],
    seconds: float,
    repeats: int,
) -> tuple[dict[tuple[str, Case], list[Run]], dict[str, list[float]], dict[str, int]]:
    """Every case on the no-op and on mplus over each database, interleaved per repeat so that
    drift hits all alike, and the bare drivers beside the 1000-message case, whose ceiling
    they make; then how many messages each database holds."""
    samples: dict[tuple[str, Case], list[Run]] = {}
    driver_runs: dict[str, list[float]] = {database: [] for database in drivers}
    with ExitStack() as stacks:
        targets = [stacks.enter_context(noop_stack(state / "noop"))] + [
            stacks.enter_context(mplus_stack(state / database, url, database))
            for database, url in databases.items()
        ]
        for case in selected:
            raw = cases.body(case)
            body = state / f"{case.name.replace(' ', '-')}.body"
            body.write_bytes(raw)
            for target in targets:
                check_once(target, case, raw)
            for repeat in range(repeats):
                for target in targets:
                    sample = measure(tool, target, case, body, seconds)
                    samples.setdefault((target.name, case), []).append(sample)
                    print(
                        f"{case.name:<22} {target.name:<8} run {repeat + 1}: "
                        f"{sample.requests_per_s:9.1f} req/s  p50 {sample.p50_ms:.2f} ms  "
                        f"p99 {sample.p99_ms:.2f} ms",
                        flush=True,
                    )
                if case != cases.BULK:
                    continue
                for database, rows_per_s in drivers.items():
                    driver_runs[database].append(rows_per_s(repeat))
                    print(
                        f"{database} bare driver run {repeat + 1}: "
                        f"{driver_runs[database][-1]:9.0f} rows/s",
                        flush=True,
                    )
    stored = {database: stored_messages(url) for database, url in databases.items()}
    return samples, driver_runs, stored


def _rows(
    samples: dict[tuple[str, Case], list[Run]], databases: list[str], selected: tuple[Case, ...]
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for database in databases:
        for case in selected:
            runs, noop_runs = samples[(database, case)], samples[("no-op", case)]
            row: dict[str, object] = {
                "database": database,
                "case": case.name,
                **asdict(case),
                "mplus": median_of(runs, case.messages),
                "no-op": median_of(noop_runs, case.messages),
                "ratio_to_noop": median_rate(runs) / median_rate(noop_runs),
                "mplus_runs": [asdict(s) for s in runs],
                "noop_runs": [asdict(s) for s in noop_runs],
            }
            over_grpc = (database, case.over("grpc"))
            if case.transport == "json" and over_grpc in samples:
                row["json_vs_grpc"] = median_rate(runs) / median_rate(samples[over_grpc])
            rows.append(row)
    return rows


def _ceilings(
    samples: dict[tuple[str, Case], list[Run]], driver_runs: dict[str, list[float]]
) -> dict[str, dict[str, object]]:
    """Per database: the 1000-message case against 1 / (1/no-op + 1/driver)."""
    bulk = cases.BULK
    if ("no-op", bulk) not in samples:
        return {}
    noop = median_rate(samples[("no-op", bulk)]) * bulk.messages
    ceilings: dict[str, dict[str, object]] = {}
    for database, runs in driver_runs.items():
        driver = statistics.median(runs)
        combined = 1 / (1 / noop + 1 / driver)
        mplus = median_rate(samples[(database, bulk)]) * bulk.messages
        ceilings[database] = {
            "driver": DRIVERS[database],
            "driver_rows_per_s": driver,
            "driver_runs": runs,
            "noop_msgs_per_s": noop,
            "combined_msgs_per_s": combined,
            "case": bulk.name,
            "mplus_msgs_per_s": mplus,
            "ratio_to_combined": mplus / combined,
        }
    return ceilings


def _figure(rows: list[dict[str, object]], database: str, case: Case, key: str) -> float:
    for row in rows:
        if row["database"] == database and row["case"] == case.name:
            value = row[key]
            assert isinstance(value, float)
            return value
    raise KeyError((database, case.name))


def _targets(
    rows: list[dict[str, object]],
    ceilings: dict[str, dict[str, object]],
    volumes: dict[str, object] | None,
) -> list[Target]:
    targets: list[Target] = []
    if len(rows) < len(CASES) * len(ceilings) or not ceilings:
        return targets  # some cases were left out (--cases): no verdicts on part of a run
    for database, ceiling in ceilings.items():
        single = cases.SINGLE_C32
        figures = next(
            r["mplus"] for r in rows if r["database"] == database and r["case"] == single.name
        )
        assert isinstance(figures, dict)
        combined = ceiling["ratio_to_combined"]
        assert isinstance(combined, float)
        json_cases = [c for c in CASES if c.transport == "json"]
        targets.append(
            Target(
                f"{database}: {single.name} / no-op",
                _figure(rows, database, single, "ratio_to_noop"),
                0.6,
            )
        )
        targets.append(Target(f"{database}: {cases.BULK.name} / combined ceiling", combined, 0.7))
        targets += [
            Target(
                f"{database}: {c.name} / same over gRPC",
                _figure(rows, database, c, "json_vs_grpc"),
                0.8,
            )
            for c in json_cases
        ]
        p99_over_p50 = figures["p99_ms"] / figures["p50_ms"]
        targets.append(
            Target(f"{database}: p99 / p50, {single.name}", p99_over_p50, 5, at_most=True)
        )
    if volumes is not None:
        peak, full = volumes["peak_rss_ratio"], volumes["full_vs_empty_min"]
        first, last = volumes["rss_kib"], volumes["rss_kib_at_total"]
        assert isinstance(peak, float) and isinstance(full, float)
        assert isinstance(first, dict) and isinstance(last, dict)
        many, few = f"{last['accepted']:,}", f"{first['accepted']:,}"
        targets += [
            Target(
                f"sqlite: peak RSS at {many} accepted / at {few} (warmed up)",
                peak,
                1.2,
                at_most=True,
            ),
            Target(f"sqlite: req/s with {many} stored / nearly empty (worse case)", full, 0.85),
        ]
    return targets


def _selected(names: str) -> tuple[Case, ...]:
    """The cases named (comma-separated), in CASES's order."""
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = wanted - {case.name for case in CASES}
    if unknown:
        known = ", ".join(case.name for case in CASES)
        raise argparse.ArgumentTypeError(f"unknown cases {sorted(unknown)}; known: {known}")
    return tuple(case for case in CASES if case.name in wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median)")
    parser.add_argument(
        "--volume",
        type=int,
        default=1_000_000,
        help="messages for the RSS and stored runs (0: skip)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--cases",
        type=_selected,
        default=CASES,
        help="only these cases, by name, comma-separated (e.g. 'grpc 1-msg c32')",
    )
    args = parser.parse_args()
    tool = h2load.ensure_installed()
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as servers:
        state = Path(scratch)
        databases = {"sqlite": f"sqlite:///{state / 'sqlite' / 'mplus.db'}"}
        postgres_base = None
        if not args.no_postgres:
            postgres_base = servers.enter_context(postgres_server(prefix="mplus-bench-pg-"))
            databases["postgres"] = servers.enter_context(fresh_postgres_database(postgres_base))
        drivers = _drivers(state, postgres_base, args.seconds)
        samples, driver_runs, stored = _measure_cases(
            args.cases, tool, state, databases, drivers, args.seconds, args.repeats
        )
        volumes = (
            volume.run(tool, state / "volume", args.volume, args.seconds, args.repeats)
            if args.volume
            else None
        )
    rows = _rows(samples, list(databases), args.cases)
    ceilings = _ceilings(samples, driver_runs)
    targets = _targets(rows, ceilings, volumes)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started:%Y-%m-%dT%H%M%SZ}.json"
    report = {
        "started": started.isoformat(),
        "databases": {"sqlite": "WAL, synchronous=FULL", "postgres": "defaults (fsync)"},
        "seconds_per_run": args.seconds,
        "repeats": args.repeats,
        "stored_messages": stored,
        "cases": rows,
        "combined_ceilings": ceilings,
        "volume": volumes,
        "targets": [{**asdict(t), "met": t.met} for t in targets],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{table(rows)}\n")
    for database, ceiling in ceilings.items():
        print(
            f"{database} bare driver ({ceiling['driver']}): {ceiling['driver_rows_per_s']:,.0f} "
            f"rows/s; combined ceiling for {ceiling['case']}: "
            f"{ceiling['combined_msgs_per_s']:,.0f} msg/s; mplus "
            f"{ceiling['mplus_msgs_per_s']:,.0f} msg/s = {ceiling['ratio_to_combined']:.2f} of it"
        )
    if volumes is not None:
        first, last = volumes["rss_kib"], volumes["rss_kib_at_total"]
        cold = volumes["rss_kib_cold"]
        assert isinstance(first, dict) and isinstance(last, dict) and isinstance(cold, dict)
        print(
            f"server RSS (peak) after {first['accepted']:,} accepted: cold "
            f"{cold['now'] / 1024:.1f} ({cold['peak'] / 1024:.1f}) MiB, warmed up by dry runs "
            f"{first['now'] / 1024:.1f} "
            f"({first['peak'] / 1024:.1f}) MiB; after {last['accepted']:,}: "
            f"{last['now'] / 1024:.1f} ({last['peak'] / 1024:.1f}) MiB; req/s with them stored "
            f"/ empty: {volumes['full_vs_empty']}"
        )
    print(f"\n{targets_table(targets)}\n\nmessages stored: {stored}; wrote {path}")


if __name__ == "__main__":
    main()
