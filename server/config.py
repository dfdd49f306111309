"""Typed settings, read once from the environment and passed down; nothing else reads os.environ.

The dataclasses say what can be set; the functions below `Settings` say which MPLUS_* variable
sets it, a section each, with the rules that join several variables (ports that must not meet,
a burst that must cover the refill). Parsing one value is `env_reader`'s job."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.env_reader import EnvReader
from server.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout the service runs from (installed editable): holds envoy/ and migrations/."""

DISPATCH_METRICS_OFFSET = 100
"""Dispatchers' metrics ports start this far above the workers' (MPLUS_METRICS_PORT): past
the 64 workers `mplus up` may run, so the two ranges never meet by default."""


@dataclass(frozen=True)
class Limits:
    """Request rules that operators may tune; the defaults are the documented contract."""

    max_messages: int = 1000
    max_body_chars: int = 1600
    max_schedule_days: int = 180
    callback_allow_networks: tuple[str, ...] = ()
    """Private, loopback or link-local networks (CIDR) a `callback` may name or resolve to;
    none by default, so a receipt can never be aimed at the operator's own network."""


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a request may wait on the database before it is answered UNAVAILABLE. JSON
    requests through Envoy carry no deadline, so these bound every request; a gRPC deadline
    shorter than `statement_ms` bounds its own transaction's statements further."""

    pool_ms: int = 10_000
    """Waiting for a free connection from the pool."""
    lock_ms: int = 5_000
    """Waiting for a lock another transaction holds (PostgreSQL lock_timeout, SQLite
    busy_timeout: there, for the database's one write lock)."""
    statement_ms: int = 10_000
    """One statement, lock waits included (PostgreSQL statement_timeout)."""
    idle_in_transaction_ms: int = 10_000
    """A transaction left open with nothing running: PostgreSQL ends the session and frees its
    locks (idle_in_transaction_session_timeout), so a stuck request cannot block the others."""


@dataclass(frozen=True)
class Delivery:
    """How queued messages are sent and how their delivery receipts reach callbacks."""

    dispatchers: int = 1
    """Dispatcher processes `mplus up` runs next to the workers (0: none; run `mplus dispatch`)."""
    poll_interval_ms: int = 200
    """How long an idle dispatcher waits before looking for due work again."""
    claim_batch: int = 100
    """Messages one dispatcher claims (and leases) at a time."""
    lease_ms: int = 30_000
    """A claimed message not finished by then (its dispatcher died) is claimed again."""
    max_attempts: int = 5
    """Tries per channel on a carrier timeout before the message fails (code 41)."""
    retry_ms: int = 2_000
    """First wait before a carrier timeout is retried; doubled on each further try."""
    driver: str = "sandbox"
    """`sandbox` (outcome by destination number, no network) or `http` (posts to `http_url`)."""
    http_url: str = ""
    """The carrier gateway the `http` driver posts each send to."""
    http_timeout_ms: int = 5_000
    http_secret: str = ""
    """What the http driver's gateway sends as `Authorization: Bearer …` when it posts a
    receipt (MPLUS_HTTP_DRIVER_SECRET); unset, such posts are refused."""
    receipt_timeout_s: int = 172_800
    """A message with the carrier that gets no receipt for this long expires (code 43)."""
    sandbox_receipt_delay_ms: int = 1_000
    """How long after the sandbox accepts a message its delivery receipt arrives."""
    webhook_timeout_ms: int = 5_000
    """One delivery-receipt POST, connect to last byte."""
    webhook_retry_for_s: int = 90_000
    """A receipt the callback keeps refusing is retried this long (25 h), then given up."""
    webhook_backoff_ms: int = 1_000
    """First wait before a refused receipt is posted again; doubled (with jitter) each time."""
    webhook_backoff_cap_ms: int = 3_600_000
    """The longest wait between two posts of one receipt."""
    environment: str = "production"
    """Sent as the `environment` header of every signed webhook."""
    metrics_port: int = 9564
    """Prometheus /metrics of the first dispatcher, on the gRPC host (0: off); from the
    environment MPLUS_DISPATCH_METRICS_PORT, else MPLUS_METRICS_PORT + DISPATCH_METRICS_OFFSET
    (0 when that is 0)."""
    index: int = 0
    """Which of several dispatcher processes this is (0-based); its metrics port is offset by it."""

    @property
    def process_metrics_port(self) -> int:
        """This dispatcher's metrics port: `metrics_port` + `index`, or 0 (off)."""
        return self.metrics_port + self.index if self.metrics_port else 0


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'mplus.db'}"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    envoy_admin_port: int = 9901
    metrics_port: int = 9464
    """Prometheus /metrics on the gRPC host; 0 disables. The first process's port: see below."""
    worker_index: int = 0
    """Which of several server processes this is (0-based); its metrics port is offset by it."""
    max_workers: int = 16
    max_concurrent_rpcs: int = 64
    """Calls running or queued per server: 4 per thread, so overload is RESOURCE_EXHAUSTED at
    once rather than a queue that outlasts its callers."""
    request_timeout_ms: int = 20_000
    """A call without a deadline of its own (JSON) is given this one; Envoy waits 5 s longer."""
    max_request_bytes: int = 8 * 1024 * 1024
    workers: int = 1
    upstreams: tuple[tuple[str, int], ...] = ()
    """Envoy's gRPC endpoints (host, port); empty = `workers` ports on grpc_host from grpc_port."""
    shutdown_drain_ms: int = 3000
    """NOT_SERVING this long before refusing calls, so Envoy's health checks stop routing here."""
    shutdown_grace_ms: int = 10_000
    """Then in-flight calls get this long to finish and commit."""
    max_connections: int = 1000
    client_header_timeout_ms: int = 10_000
    """A client has this long to send its request headers (slowloris): Envoy then closes."""
    client_request_timeout_ms: int = 60_000
    """A client has this long to send its whole request, body included: Envoy then answers 408
    (a body that stalls meets Envoy's 30 s idle timeout first when this is longer)."""
    rate_limit_per_key: float = 50.0
    """Requests per second one API key may sustain through Envoy (0: no per-key limit)."""
    rate_limit_burst: int = 100
    """Requests one API key may send at once before `rate_limit_per_key` paces it."""
    rate_limit_global: float = 1000.0
    """Requests per second through Envoy across all keys, so random keys gain nothing (0: off)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    state_dir: Path = PROJECT_ROOT / "var"
    limits: Limits = field(default_factory=Limits)
    db_pool_size: int = 16
    """Connections per server process; by default one per worker thread (MPLUS_MAX_WORKERS)."""
    db_timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)
    delivery: Delivery = field(default_factory=Delivery)
    db_health_interval_ms: int = 1000
    """How often the server asks the database `SELECT 1` to keep gRPC health in step with
    it (0: never; health then follows shutdown only)."""

    @property
    def grpc_address(self) -> str:
        return _host_port(self.grpc_host, self.grpc_port)

    @property
    def process_metrics_port(self) -> int:
        """This process's metrics port: MPLUS_METRICS_PORT + MPLUS_WORKER_INDEX, or 0 (off)."""
        return self.metrics_port + self.worker_index if self.metrics_port else 0

    @property
    def http_address(self) -> str:
        return _host_port(self.http_host, self.http_port)

    def worker_port(self, index: int) -> int:
        """Worker `index` of `mplus up` listens on consecutive ports from grpc_port."""
        return self.grpc_port + index

    @property
    def upstream_endpoints(self) -> tuple[tuple[str, int], ...]:
        """The gRPC servers Envoy balances over: MPLUS_UPSTREAMS, or the local workers."""
        if self.upstreams:
            return self.upstreams
        return tuple((self.grpc_host, self.worker_port(i)) for i in range(self.workers))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every MPLUS_* variable read once; a bad value is a ConfigError naming it."""
        read = EnvReader(os.environ if env is None else env)
        defaults = cls()
        state_dir = Path(read.text("MPLUS_STATE_DIR", str(defaults.state_dir)))
        max_workers = read.integer("MPLUS_MAX_WORKERS", defaults.max_workers, 1, 1024)
        workers, grpc_port = _worker_ports(read, defaults)
        metrics_port, worker_index = _worker_metrics_port(read, defaults)
        tls_cert, tls_key = read.tls_files()
        header_timeout, request_timeout = _client_timeouts(read, defaults)
        per_key, burst = _rate_limit_per_key(read, defaults)
        return cls(
            database_url=read.text("MPLUS_DATABASE_URL", f"sqlite:///{state_dir / 'mplus.db'}"),
            grpc_host=read.address("MPLUS_GRPC_HOST", defaults.grpc_host),
            grpc_port=grpc_port,
            http_host=read.address("MPLUS_HTTP_HOST", defaults.http_host),
            http_port=read.integer("MPLUS_HTTP_PORT", defaults.http_port, 1),
            envoy_admin_port=read.integer("MPLUS_ENVOY_ADMIN_PORT", defaults.envoy_admin_port, 1),
            metrics_port=metrics_port,
            worker_index=worker_index,
            max_workers=max_workers,
            max_concurrent_rpcs=read.integer(
                "MPLUS_MAX_CONCURRENT_RPCS", max_workers * 4, 1, 100_000
            ),
            request_timeout_ms=read.integer(
                "MPLUS_REQUEST_TIMEOUT_MS", defaults.request_timeout_ms, 100, 3_600_000
            ),
            max_request_bytes=read.integer(
                "MPLUS_MAX_REQUEST_BYTES", defaults.max_request_bytes, 1024, 1 << 30
            ),
            workers=workers,
            upstreams=read.endpoints("MPLUS_UPSTREAMS"),
            shutdown_drain_ms=read.integer(
                "MPLUS_SHUTDOWN_DRAIN_MS", defaults.shutdown_drain_ms, 0, 300_000
            ),
            shutdown_grace_ms=read.integer(
                "MPLUS_SHUTDOWN_GRACE_MS", defaults.shutdown_grace_ms, 0, 300_000
            ),
            max_connections=read.integer(
                "MPLUS_MAX_CONNECTIONS", defaults.max_connections, 1, 1_000_000
            ),
            client_header_timeout_ms=header_timeout,
            client_request_timeout_ms=request_timeout,
            rate_limit_per_key=per_key,
            rate_limit_burst=burst,
            rate_limit_global=read.rate("MPLUS_RATE_LIMIT_GLOBAL", defaults.rate_limit_global),
            tls_cert=tls_cert,
            tls_key=tls_key,
            state_dir=state_dir,
            limits=_limits(read),
            db_pool_size=read.integer("MPLUS_DB_POOL_SIZE", max_workers, 1, 1024),
            db_timeouts=_database_timeouts(read),
            db_health_interval_ms=read.integer(
                "MPLUS_DB_HEALTH_INTERVAL_MS", defaults.db_health_interval_ms, 0, 3_600_000
            ),
            delivery=_delivery(read, metrics_port, workers),
        )


def _worker_ports(read: EnvReader, defaults: Settings) -> tuple[int, int]:
    """MPLUS_WORKERS and MPLUS_GRPC_PORT, the first of the workers' consecutive ports."""
    workers = read.integer("MPLUS_WORKERS", defaults.workers, 1, 64)
    grpc_port = read.integer("MPLUS_GRPC_PORT", defaults.grpc_port, 1)
    if grpc_port + workers - 1 > 65535:
        raise ConfigError(
            f"MPLUS_GRPC_PORT {grpc_port} leaves no room for {workers} consecutive worker ports"
        )
    return workers, grpc_port


def _worker_metrics_port(read: EnvReader, defaults: Settings) -> tuple[int, int]:
    """MPLUS_METRICS_PORT and MPLUS_WORKER_INDEX, whose sum is this worker's port."""
    metrics_port = read.integer("MPLUS_METRICS_PORT", defaults.metrics_port)
    worker_index = read.integer("MPLUS_WORKER_INDEX", defaults.worker_index, 0, 1023)
    if metrics_port and metrics_port + worker_index > 65535:
        raise ConfigError(
            f"MPLUS_METRICS_PORT + MPLUS_WORKER_INDEX must be at most 65535, "
            f"got {metrics_port} + {worker_index}"
        )
    return metrics_port, worker_index


def _client_timeouts(read: EnvReader, defaults: Settings) -> tuple[int, int]:
    """MPLUS_CLIENT_HEADER_TIMEOUT_MS and MPLUS_CLIENT_REQUEST_TIMEOUT_MS (Envoy's)."""
    header_timeout = read.integer(
        "MPLUS_CLIENT_HEADER_TIMEOUT_MS", defaults.client_header_timeout_ms, 100, 3_600_000
    )
    request_timeout = read.integer(
        "MPLUS_CLIENT_REQUEST_TIMEOUT_MS", defaults.client_request_timeout_ms, 100, 3_600_000
    )
    if header_timeout > request_timeout:
        raise ConfigError(
            "MPLUS_CLIENT_HEADER_TIMEOUT_MS must be at most MPLUS_CLIENT_REQUEST_TIMEOUT_MS "
            f"(the headers are part of the request), got {header_timeout} > {request_timeout}"
        )
    return header_timeout, request_timeout


def _rate_limit_per_key(read: EnvReader, defaults: Settings) -> tuple[float, int]:
    """MPLUS_RATE_LIMIT_PER_KEY and MPLUS_RATE_LIMIT_BURST (Envoy's token bucket)."""
    per_key = read.rate("MPLUS_RATE_LIMIT_PER_KEY", defaults.rate_limit_per_key)
    burst = read.integer("MPLUS_RATE_LIMIT_BURST", defaults.rate_limit_burst, 1, 1_000_000)
    if burst < per_key / 20:
        raise ConfigError(
            "MPLUS_RATE_LIMIT_BURST must be at least MPLUS_RATE_LIMIT_PER_KEY / 20 (Envoy "
            f"refills at most every 50 ms), got {burst} for {per_key}/s"
        )
    return per_key, burst


def _limits(read: EnvReader) -> Limits:
    """The MPLUS_MAX_* request rules and MPLUS_CALLBACK_ALLOW_NETWORKS."""
    defaults = Limits()
    return Limits(
        max_messages=read.integer("MPLUS_MAX_MESSAGES", defaults.max_messages, 1, 100_000),
        max_body_chars=read.integer("MPLUS_MAX_BODY_CHARS", defaults.max_body_chars, 1, 1_000_000),
        max_schedule_days=read.integer(
            "MPLUS_MAX_SCHEDULE_DAYS", defaults.max_schedule_days, 1, 3650
        ),
        callback_allow_networks=read.networks("MPLUS_CALLBACK_ALLOW_NETWORKS"),
    )


def _database_timeouts(read: EnvReader) -> DatabaseTimeouts:
    """The MPLUS_DB_*_TIMEOUT_MS bounds."""
    defaults = DatabaseTimeouts()
    return DatabaseTimeouts(
        pool_ms=read.milliseconds("MPLUS_DB_POOL_TIMEOUT_MS", defaults.pool_ms),
        lock_ms=read.milliseconds("MPLUS_DB_LOCK_TIMEOUT_MS", defaults.lock_ms),
        statement_ms=read.milliseconds("MPLUS_DB_STATEMENT_TIMEOUT_MS", defaults.statement_ms),
        idle_in_transaction_ms=read.milliseconds(
            "MPLUS_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", defaults.idle_in_transaction_ms
        ),
    )


def _delivery(read: EnvReader, workers_metrics_port: int, workers: int) -> Delivery:
    """The MPLUS_DISPATCH_*, MPLUS_WEBHOOK_* and driver settings."""
    defaults = Delivery()
    dispatchers = read.integer("MPLUS_DISPATCHERS", defaults.dispatchers, 0, 64)
    metrics_port, index = _dispatch_metrics_port(read, workers_metrics_port, workers, dispatchers)
    driver = read.text("MPLUS_CHANNEL_DRIVER", defaults.driver)
    if driver not in ("sandbox", "http"):
        raise ConfigError(f"MPLUS_CHANNEL_DRIVER must be sandbox or http, got {driver!r}")
    http_url = read.text("MPLUS_HTTP_DRIVER_URL", "")
    if driver == "http" and not http_url.startswith(("http://", "https://")):
        raise ConfigError(
            "MPLUS_HTTP_DRIVER_URL must be an http:// or https:// URL when "
            f"MPLUS_CHANNEL_DRIVER=http, got {http_url!r}"
        )
    http_secret = read.secret("MPLUS_HTTP_DRIVER_SECRET")
    if driver == "http" and not http_secret:
        raise ConfigError(
            "MPLUS_HTTP_DRIVER_SECRET must be set when MPLUS_CHANNEL_DRIVER=http: the gateway "
            "posts its receipts with it (without them, every message it accepts expires)"
        )
    backoff = read.milliseconds("MPLUS_WEBHOOK_BACKOFF_MS", defaults.webhook_backoff_ms)
    backoff_cap = read.milliseconds("MPLUS_WEBHOOK_BACKOFF_CAP_MS", defaults.webhook_backoff_cap_ms)
    if backoff > backoff_cap:
        raise ConfigError(
            "MPLUS_WEBHOOK_BACKOFF_MS must be at most MPLUS_WEBHOOK_BACKOFF_CAP_MS, "
            f"got {backoff} > {backoff_cap}"
        )
    return Delivery(
        dispatchers=dispatchers,
        poll_interval_ms=read.milliseconds("MPLUS_DISPATCH_INTERVAL_MS", defaults.poll_interval_ms),
        claim_batch=read.integer("MPLUS_DISPATCH_BATCH", defaults.claim_batch, 1, 10_000),
        lease_ms=read.milliseconds("MPLUS_DISPATCH_LEASE_MS", defaults.lease_ms),
        max_attempts=read.integer("MPLUS_DISPATCH_MAX_ATTEMPTS", defaults.max_attempts, 1, 100),
        retry_ms=read.milliseconds("MPLUS_DISPATCH_RETRY_MS", defaults.retry_ms),
        driver=driver,
        http_url=http_url,
        http_timeout_ms=read.milliseconds("MPLUS_HTTP_DRIVER_TIMEOUT_MS", defaults.http_timeout_ms),
        http_secret=http_secret,
        receipt_timeout_s=read.integer(
            "MPLUS_RECEIPT_TIMEOUT_S", defaults.receipt_timeout_s, 1, 30 * 86_400
        ),
        sandbox_receipt_delay_ms=read.integer(
            "MPLUS_SANDBOX_RECEIPT_DELAY_MS", defaults.sandbox_receipt_delay_ms, 0, 86_400_000
        ),
        webhook_timeout_ms=read.milliseconds(
            "MPLUS_WEBHOOK_TIMEOUT_MS", defaults.webhook_timeout_ms
        ),
        webhook_retry_for_s=read.integer(
            "MPLUS_WEBHOOK_RETRY_FOR_S", defaults.webhook_retry_for_s, 0, 30 * 86_400
        ),
        webhook_backoff_ms=backoff,
        webhook_backoff_cap_ms=backoff_cap,
        environment=read.text("MPLUS_ENVIRONMENT", defaults.environment),
        metrics_port=metrics_port,
        index=index,
    )


def _dispatch_metrics_port(
    read: EnvReader, workers_metrics_port: int, workers: int, dispatchers: int
) -> tuple[int, int]:
    """MPLUS_DISPATCH_METRICS_PORT (by default MPLUS_METRICS_PORT + DISPATCH_METRICS_OFFSET,
    or 0 when that is 0) and MPLUS_DISPATCHER_INDEX. Refused when a dispatcher's port would
    pass 65535, or when `mplus up`'s dispatchers and workers would share one."""
    derived = workers_metrics_port + DISPATCH_METRICS_OFFSET if workers_metrics_port else 0
    port = read.integer("MPLUS_DISPATCH_METRICS_PORT", min(derived, 65535))
    index = read.integer("MPLUS_DISPATCHER_INDEX", 0, 0, 63)
    if not port:
        return 0, index
    last = port + max(index, dispatchers - 1)
    if last > 65535:
        raise ConfigError(
            "MPLUS_DISPATCH_METRICS_PORT + the dispatcher index must be at most 65535, "
            f"got {port} + {last - port}"
        )
    workers_last = workers_metrics_port + workers - 1
    if workers_metrics_port and port <= workers_last and workers_metrics_port <= last:
        raise ConfigError(
            f"MPLUS_DISPATCH_METRICS_PORT {port} (to {last}, one port per dispatcher) overlaps "
            f"the workers' metrics ports MPLUS_METRICS_PORT {workers_metrics_port} (to "
            f"{workers_last}, one per worker)"
        )
    return port, index


def _host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else f"{host}:{port}"
