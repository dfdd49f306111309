"""h2load, the load generator: installed when missing, run for a bounded time, output parsed."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FINISHED = re.compile(r"^finished in [\d.]+m?s, ([\d.]+) req/s", re.MULTILINE)
REQUESTS = re.compile(
    r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", re.MULTILINE
)
STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


class LoadFailed(RuntimeError):
    """h2load could not run, or requests failed: a figure from it would mean nothing."""


@dataclass(frozen=True)
class Sample:
    """One bounded h2load run."""

    requests_per_s: float
    succeeded: int
    p50_ms: float
    p99_ms: float


def ensure_installed() -> str:
    """The h2load on PATH, after installing Debian's nghttp2-client if there is none."""
    found = shutil.which("h2load")
    if found:
        return found
    print("h2load is not on PATH: installing Debian's nghttp2-client (apt-get)", flush=True)
    install = ["apt-get", "install", "-y", "-q", "nghttp2-client"]
    if subprocess.run(install, check=False, stdout=sys.stderr).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=sys.stderr)
        subprocess.run(install, check=True, stdout=sys.stderr)
    found = shutil.which("h2load")
    if not found:
        raise LoadFailed("nghttp2-client is installed but h2load is still not on PATH")
    return found


def run(
    h2load: str,
    url: str,
    body: Path,
    headers: dict[str, str],
    clients: int,
    seconds: float | None = None,
    requests: int | None = None,
) -> Sample:
    """`clients` connections, one request in flight on each, for `seconds` or until
    `requests` requests have been answered.

    h2load prints min/mean/max of request time, not percentiles: p50/p99 come from its
    per-request log. Every request must succeed with a 2xx; a gRPC error also arrives as
    HTTP 200, so callers check one request's grpc-status before they measure."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "requests.tsv"
        command = [
            h2load,
            url,
            "--data",
            str(body),
            "--clients",
            str(clients),
            "--threads",
            "1",
            "--max-concurrent-streams",
            "1",
            *(
                ["--requests", str(requests)]
                if requests is not None
                else ["--duration", f"{round((seconds or 0) * 1000)}ms"]  # whole numbers, a unit
            ),
            "--log-file",
            str(log),
        ]
        for name, value in headers.items():
            command += ["--header", f"{name}: {value}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LoadFailed(f"h2load exited {done.returncode}: {done.stdout}{done.stderr}")
        latencies_ms = sorted(
            int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line.strip()
        )
    return parse(done.stdout, latencies_ms)


def parse(output: str, latencies_ms: list[float]) -> Sample:
    finished, requests, status = (
        FINISHED.search(output),
        REQUESTS.search(output),
        STATUS.search(output),
    )
    if finished is None or requests is None or status is None:
        raise LoadFailed(f"cannot read h2load's output:\n{output}")
    succeeded, failed = int(requests.group(3)), int(requests.group(4))
    non_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    if failed or non_2xx or not succeeded or not latencies_ms:
        raise LoadFailed(f"requests failed (or none finished):\n{output}")
    if len(latencies_ms) == 1:  # a slow case: one request in the whole run
        return Sample(float(finished.group(1)), succeeded, latencies_ms[0], latencies_ms[0])
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return Sample(float(finished.group(1)), succeeded, cuts[49], cuts[98])
