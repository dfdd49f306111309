"""A JSON endpoint's query string, held to the contract: each endpoint's own parameters
(`key`, and flags such as `isDryrun`), once each.

Envoy's transcoder binds any query parameter that names a request field (`batch.defaults.body`
included) and reads booleans leniently (`yes`, `1`); it has no switch against either. It does
forward the original path, so the rule is enforced here, for transcoded requests only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from server.domain.errors import Violation

ORIGINAL_PATH_METADATA = "x-envoy-original-path"


@dataclass(frozen=True)
class QueryRule:
    """The parameters one endpoint takes: `key` (unless it needs none) and its flags, which
    are "true" or "false"."""

    endpoint: str
    flags: tuple[str, ...] = ()
    key: bool = True

    @property
    def allowed(self) -> tuple[str, ...]:
        return ("key", *self.flags) if self.key else self.flags


ADD_MESSAGES = QueryRule("POST /message", flags=("isDryrun", "dryRun"))
GET_BATCH = QueryRule("GET /batch/{batch-uuid}", flags=("details",))
LIST_PENDING_BATCHES = QueryRule("GET /batch")
CANCEL_BATCH = QueryRule("DELETE /batch/{batch-uuid}")
LIST_RECEIPT_CODES = QueryRule("GET /dr-responses", key=False)


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


def query_violations(parameters: Query, rule: QueryRule = ADD_MESSAGES) -> list[Violation]:
    """Unknown parameters, an empty key, and flags repeated or not "true"/"false"; reported
    with the body's violations, after authentication (which also refuses two keys)."""
    violations: list[Violation] = []
    allowed = rule.allowed
    counts = Counter(name for name, _ in parameters)
    for name, count in counts.items():
        if name not in allowed:
            takes = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
            violations.append(
                Violation(
                    name or "(empty name)",
                    f"is not a query parameter of {rule.endpoint} ({takes})",
                    "UNKNOWN_QUERY_PARAMETER",
                )
            )
        elif name in rule.flags and count > 1:
            violations.append(Violation(name, "must be given at most once", "REPEATED_PARAMETER"))
    for name, value in parameters:
        if name in rule.flags and counts[name] == 1 and value not in ("true", "false"):
            violations.append(Violation(name, 'must be "true" or "false"', "INVALID_BOOLEAN"))
        elif name == "key" and rule.key and not value:
            # Envoy's per-key rate limit would count it in one bucket that every such request
            # shares, while an x-api-key header authenticates it: refused, not a way around.
            violations.append(Violation("key", "must not be empty when given", "EMPTY_KEY"))
    return violations
