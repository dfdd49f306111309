"""The JSON endpoint's query string, held to the contract: `key`, `isDryrun`, `dryRun`, once each.

Envoy's transcoder binds any query parameter that names a request field (`batch.defaults.body`
included) and reads booleans leniently (`yes`, `1`); it has no switch against either. It does
forward the original path, so the rule is enforced here, for transcoded requests only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from server.domain.errors import Violation

ORIGINAL_PATH_METADATA = "x-envoy-original-path"
FLAGS = ("isDryrun", "dryRun")
ALLOWED = ("key", *FLAGS)


Query = Sequence[tuple[str, str]]
"""The original query's (name, value) pairs, in order, names and values decoded."""


def original_query(metadata: Sequence[tuple[str, str | bytes]]) -> Query:
    """The query Envoy saw; empty for native gRPC, which has none."""
    paths = [v for k, v in metadata if k == ORIGINAL_PATH_METADATA and isinstance(v, str)]
    if not paths:
        return []
    return parse_qsl(urlsplit(paths[0]).query, keep_blank_values=True)


def query_values(query: Query, name: str) -> list[str]:
    """Every value the query gives `name` (Envoy binds only the last one)."""
    return [value for key, value in query if key == name]


def query_violations(parameters: Query) -> list[Violation]:
    """Unknown parameters, an empty key, and flags repeated or not "true"/"false"; reported
    with the body's violations, after authentication (which also refuses two keys)."""
    violations: list[Violation] = []
    counts = Counter(name for name, _ in parameters)
    for name, count in counts.items():
        if name not in ALLOWED:
            violations.append(
                Violation(
                    name or "(empty name)",
                    f"is not a query parameter of POST /message (allowed: {', '.join(ALLOWED)})",
                    "UNKNOWN_QUERY_PARAMETER",
                )
            )
        elif name in FLAGS and count > 1:
            violations.append(Violation(name, "must be given at most once", "REPEATED_PARAMETER"))
    for name, value in parameters:
        if name in FLAGS and counts[name] == 1 and value not in ("true", "false"):
            violations.append(Violation(name, 'must be "true" or "false"', "INVALID_BOOLEAN"))
        elif name == "key" and not value:
            # Envoy's per-key rate limit would count it in one bucket that every such request
            # shares, while an x-api-key header authenticates it: refused, not a way around.
            violations.append(Violation("key", "must not be empty when given", "EMPTY_KEY"))
    return violations
