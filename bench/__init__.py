"""`python -m bench` (`make bench`): AddMessages measured with h2load against its ceilings.

Issue 6's measuring half, in one run: a no-op servicer built from the same generated code and
server settings; mplus over gRPC and over JSON through Envoy on SQLite and on PostgreSQL
(pgserver), on private ports with fresh databases; the bare drivers' bulk inserts as the
storage ceilings (sqlite3 executemany, psycopg COPY); server (and Envoy) CPU per 1000
messages; the server's RSS while it accepts 1,000,000 messages and its throughput with them
stored. Results go to bench/results/<UTC date-time>.json, a markdown table and the targets.
"""
