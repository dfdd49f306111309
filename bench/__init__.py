"""`python -m bench`: AddMessages measured with h2load against its no-op ceiling, in one run.

Issue 6's measuring half: a no-op servicer built from the same generated code and server
settings, mplus over gRPC (SQLite), and both over JSON through Envoy, on private ports with
a fresh database; the bare sqlite3 driver's bulk insert as the storage ceiling; server (and
Envoy) CPU per 1000 messages. Results go to bench/results/<UTC date-time>.json and a
markdown table. Not yet: PostgreSQL, RSS at 1M messages, throughput with 1M stored.
"""
