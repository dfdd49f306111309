"""The JSON endpoint's query string, held to the contract: `key`, `isDryrun`, `dryRun`, once each.

Envoy's transcoder binds any query parameter that names a request field (`batch.defaults.body`
included) and reads booleans leniently (`yes`, `1`); it has no switch against either. It does
forward the original path, so the rule is enforced here, for transcoded requests only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from server.domain.errors import InvalidRequest, Violation

ORIGINAL_PATH_METADATA = "x-envoy-original-path"
FLAGS = ("isDryrun", "dryRun")
ALLOWED = ("key", *FLAGS)


def check_query(metadata: Sequence[tuple[str, str | bytes]]) -> None:
    """Raises InvalidRequest for unknown, repeated or non-boolean query parameters."""
    paths = [v for k, v in metadata if k == ORIGINAL_PATH_METADATA and isinstance(v, str)]
    if not paths:
        return  # native gRPC: no query string
    parameters = parse_qsl(urlsplit(paths[0]).query, keep_blank_values=True)
    violations: list[Violation] = []
    counts = Counter(name for name, _ in parameters)
    for name, count in counts.items():
        if name not in ALLOWED:
            violations.append(
                Violation(
                    name,
                    f"is not a query parameter of POST /message (allowed: {', '.join(ALLOWED)})",
                    "UNKNOWN_QUERY_PARAMETER",
                )
            )
        elif count > 1:
            violations.append(Violation(name, "must be given at most once", "REPEATED_PARAMETER"))
    for name, value in parameters:
        if name in FLAGS and counts[name] == 1 and value not in ("true", "false"):
            violations.append(Violation(name, 'must be "true" or "false"', "INVALID_BOOLEAN"))
    if violations:
        raise InvalidRequest(violations)
