"""Runs every case against the no-op ceiling and mplus, interleaved, and reports medians.

.venv/bin/python -m bench [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
from mplus.v1 import message_pb2, message_service_pb2

from bench import h2load
from bench.driver import sqlite_rows_per_s
from bench.stack import Target, cpu_seconds, mplus_stack, noop_stack, stored_messages

RESULTS = Path(__file__).parent / "results"
GRPC_PATH = "/mplus.v1.MessageService/AddMessages"


@dataclass(frozen=True)
class Case:
    transport: str  # "grpc" (straight to the server) or "json" (through Envoy)
    messages: int  # per request
    clients: int  # concurrent connections, one request in flight on each

    @property
    def name(self) -> str:
        return f"{self.transport} {self.messages}-msg c{self.clients}"


CASES = (
    Case("grpc", 1, 1),
    Case("grpc", 1, 8),
    Case("grpc", 1, 32),
    Case("grpc", 100, 8),
    Case("grpc", 1000, 8),
    Case("json", 1, 8),
    Case("json", 100, 8),
)


def batch_fields(size: int) -> dict[str, object]:
    """A MessageBatch as JSON: shared sender and channels in defaults, ids omitted."""
    return {
        "defaults": {"from": {"type": "shared"}, "channels": ["rcs", "sms"]},
        "messages": [{"to": f"4470{i:08d}", "body": f"Benchmark message {i}"} for i in range(size)],
    }


def grpc_frame(size: int) -> bytes:
    """A length-prefixed gRPC message (uncompressed) holding the request, key left out."""
    batch = message_service_pb2.MessageBatch()
    fields = batch_fields(size)
    defaults = fields["defaults"]
    assert isinstance(defaults, dict)
    getattr(batch.defaults, "from").type = defaults["from"]["type"]
    batch.defaults.channels.extend(defaults["channels"])
    messages = fields["messages"]
    assert isinstance(messages, list)
    batch.messages.extend(message_pb2.Message(**m) for m in messages)
    payload = message_service_pb2.AddMessagesRequest(batch=batch).SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def check_once(target: Target, case: Case, body: bytes) -> None:
    """One request of the case must be accepted: h2load counts a gRPC error as a 200."""
    if case.transport == "grpc":
        with grpc.insecure_channel(target.grpc_target) as channel:
            call = channel.unary_unary(
                GRPC_PATH, request_serializer=None, response_deserializer=None
            )
            response = message_service_pb2.AddMessagesResponse.FromString(
                call(body[5:], metadata=(("x-api-key", target.key),), timeout=30)
            )
        accepted = len(response.messages)
    else:
        reply = httpx.post(
            f"http://127.0.0.1:{target.http_port}/message",
            params={"key": target.key},
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        reply.raise_for_status()
        accepted = len(reply.json()["messages"])
    if accepted != case.messages:
        raise h2load.LoadFailed(f"{target.name} {case.name}: {accepted} messages accepted")


@dataclass(frozen=True)
class Run:
    """One measured h2load run, with the CPU the server (and Envoy, over JSON) spent in it."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s_per_1000: float
    envoy_cpu_s_per_1000: float | None


WARM_UP_S = 1.0
"""A discarded h2load run before each measured one: fresh connections, warm caches."""


def measure(tool: str, target: Target, case: Case, body: Path, seconds: float) -> Run:
    if case.transport == "grpc":
        url = f"http://{target.grpc_target}{GRPC_PATH}"
        headers = {"content-type": "application/grpc", "te": "trailers", "x-api-key": target.key}
    else:
        url = f"http://127.0.0.1:{target.http_port}/message?key={target.key}"
        headers = {"content-type": "application/json"}
    h2load.run(tool, url, body, headers, case.clients, WARM_UP_S)
    server_before, envoy_before = cpu_seconds(target.server_pid), cpu_seconds(target.envoy_pid)
    sample = h2load.run(tool, url, body, headers, case.clients, seconds)
    server_cpu = cpu_seconds(target.server_pid) - server_before
    envoy_cpu = cpu_seconds(target.envoy_pid) - envoy_before
    thousands = sample.succeeded * case.messages / 1000
    return Run(
        sample.requests_per_s,
        sample.p50_ms,
        sample.p99_ms,
        server_cpu / thousands,
        envoy_cpu / thousands if case.transport == "json" else None,
    )


def median_rate(runs: list[Run]) -> float:
    """Median requests/s."""
    return statistics.median(r.requests_per_s for r in runs)


def median_of(runs: list[Run], messages: int) -> dict[str, float | None]:
    requests_per_s = median_rate(runs)
    envoy = [r.envoy_cpu_s_per_1000 for r in runs if r.envoy_cpu_s_per_1000 is not None]
    return {
        "requests_per_s": requests_per_s,
        "messages_per_s": requests_per_s * messages,
        "p50_ms": statistics.median(r.p50_ms for r in runs),
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "server_cpu_s_per_1000": statistics.median(r.server_cpu_s_per_1000 for r in runs),
        "envoy_cpu_s_per_1000": statistics.median(envoy) if envoy else None,
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| case | mplus req/s | mplus msg/s | p50 ms | p99 ms | no-op req/s | no-op p50 ms "
        "| mplus / no-op | JSON / gRPC (mplus) | server CPU s / 1000 msg (no-op) "
        "| Envoy CPU s / 1000 msg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mplus, noop = row["mplus"], row["no-op"]
        assert isinstance(mplus, dict) and isinstance(noop, dict)
        json_vs_grpc = row.get("json_vs_grpc")
        lines.append(
            f"| {row['case']} | {mplus['requests_per_s']:,.0f} | {mplus['messages_per_s']:,.0f} "
            f"| {mplus['p50_ms']:.2f} | {mplus['p99_ms']:.2f} | {noop['requests_per_s']:,.0f} "
            f"| {noop['p50_ms']:.2f} | {row['ratio_to_noop']:.2f} "
            f"| {'' if json_vs_grpc is None else f'{json_vs_grpc:.2f}'} "
            f"| {mplus['server_cpu_s_per_1000']:.3f} ({noop['server_cpu_s_per_1000']:.3f}) "
            f"| {_optional(mplus['envoy_cpu_s_per_1000'])} |"
        )
    return "\n".join(lines)


def _optional(seconds: object) -> str:
    return "" if seconds is None else f"{seconds:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median)")
    args = parser.parse_args()
    tool = h2load.ensure_installed()
    started = datetime.now(UTC)
    samples: dict[tuple[str, Case], list[Run]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch)
        database_url = f"sqlite:///{state / 'mplus' / 'mplus.db'}"
        driver_runs: list[float] = []
        for repeat in range(args.repeats):
            driver_runs.append(sqlite_rows_per_s(state / f"driver-{repeat}", args.seconds))
            print(f"sqlite3 executemany     run {repeat + 1}: {driver_runs[-1]:9.0f} rows/s")
        with noop_stack(state / "noop") as noop, mplus_stack(state / "mplus", database_url) as real:
            for case in CASES:
                raw = (
                    grpc_frame(case.messages)
                    if case.transport == "grpc"
                    else json.dumps(batch_fields(case.messages)).encode()
                )
                body = state / f"{case.transport}-{case.messages}.body"
                body.write_bytes(raw)
                for target in (noop, real):
                    check_once(target, case, raw)
                for repeat in range(args.repeats):
                    for target in (noop, real):  # interleaved: drift hits both alike
                        sample = measure(tool, target, case, body, args.seconds)
                        samples.setdefault((target.name, case), []).append(sample)
                        print(
                            f"{case.name:<22} {target.name:<6} run {repeat + 1}: "
                            f"{sample.requests_per_s:9.1f} req/s  p50 {sample.p50_ms:.2f} ms  "
                            f"p99 {sample.p99_ms:.2f} ms",
                            flush=True,
                        )
        stored = stored_messages(database_url)
    rows: list[dict[str, object]] = []
    for case in CASES:
        mplus = median_of(samples[("mplus", case)], case.messages)
        noop_figures = median_of(samples[("no-op", case)], case.messages)
        row: dict[str, object] = {
            "case": case.name,
            **asdict(case),
            "mplus": mplus,
            "no-op": noop_figures,
            "ratio_to_noop": (
                median_rate(samples[("mplus", case)]) / median_rate(samples[("no-op", case)])
            ),
            "mplus_runs": [asdict(s) for s in samples[("mplus", case)]],
            "noop_runs": [asdict(s) for s in samples[("no-op", case)]],
        }
        same_over_grpc = Case("grpc", case.messages, case.clients)
        if case.transport == "json" and ("mplus", same_over_grpc) in samples:
            row["json_vs_grpc"] = median_rate(samples[("mplus", case)]) / median_rate(
                samples[("mplus", same_over_grpc)]
            )
        rows.append(row)
    driver = statistics.median(driver_runs)
    bulk = Case("grpc", 1000, 8)
    noop_bulk = median_rate(samples[("no-op", bulk)]) * bulk.messages
    combined = 1 / (1 / noop_bulk + 1 / driver)
    mplus_bulk = median_rate(samples[("mplus", bulk)]) * bulk.messages
    ceilings = {
        "driver_rows_per_s": driver,
        "driver_runs": driver_runs,
        "combined_msgs_per_s": combined,
        "case": bulk.name,
        "mplus_msgs_per_s": mplus_bulk,
        "ratio_to_combined": mplus_bulk / combined,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started:%Y-%m-%dT%H%M%SZ}.json"
    report = {
        "started": started.isoformat(),
        "database": "sqlite (WAL, synchronous=FULL)",
        "seconds_per_run": args.seconds,
        "repeats": args.repeats,
        "stored_messages": stored,
        "cases": rows,
        "combined_ceiling": ceilings,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{table(rows)}\n\n"
        f"bare driver (sqlite3 executemany, 1000-row transactions, WAL, synchronous=FULL): "
        f"{driver:,.0f} rows/s; combined ceiling 1 / (1/no-op + 1/driver) for {bulk.name}: "
        f"{combined:,.0f} msg/s; mplus {mplus_bulk:,.0f} msg/s = {mplus_bulk / combined:.2f} "
        f"of it\nmessages stored by mplus in this run: {stored:,}; wrote {path}"
    )


if __name__ == "__main__":
    main()
