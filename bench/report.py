"""The markdown tables and the issue's targets, each with its figure and met / not met."""

from __future__ import annotations

from dataclasses import dataclass


def _number(value: object, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| database | case | mplus req/s | mplus msg/s | p50 ms | p99 ms | no-op req/s "
        "| no-op p50 ms | mplus / no-op | JSON / gRPC (mplus) "
        "| server CPU s / 1000 msg (no-op) | Envoy CPU s / 1000 msg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mplus, noop = row["mplus"], row["no-op"]
        assert isinstance(mplus, dict) and isinstance(noop, dict)
        lines.append(
            f"| {row['database']} | {row['case']} | {_number(mplus['requests_per_s'])} "
            f"| {_number(mplus['messages_per_s'])} | {_number(mplus['p50_ms'], 2)} "
            f"| {_number(mplus['p99_ms'], 2)} | {_number(noop['requests_per_s'])} "
            f"| {_number(noop['p50_ms'], 2)} | {_number(row['ratio_to_noop'], 2)} "
            f"| {_number(row.get('json_vs_grpc'), 2)} "
            f"| {_number(mplus['server_cpu_s_per_1000'], 3)} "
            f"({_number(noop['server_cpu_s_per_1000'], 3)}) "
            f"| {_number(mplus['envoy_cpu_s_per_1000'], 3)} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: `figure` against `bound` (at least, or at most)."""

    name: str
    figure: float
    bound: float
    at_most: bool = False

    @property
    def met(self) -> bool:
        return self.figure <= self.bound if self.at_most else self.figure >= self.bound

    def line(self) -> str:
        sign = "≤" if self.at_most else "≥"
        verdict = "met" if self.met else "NOT MET"
        return f"| {self.name} | {self.figure:.2f} | {sign} {self.bound:g} | {verdict} |"


def targets_table(targets: list[Target]) -> str:
    lines = ["| target | figure | bound | verdict |", "|---|---:|---:|---|"]
    return "\n".join(lines + [t.line() for t in targets])
