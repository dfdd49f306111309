"""Helpers the tests share, one topic a module (pypi/warehouse's `tests/common/` is the model).

Test modules and conftests import from here, never from each other; fixtures stay in the
conftests. What `bench/` needs too (ports, waiting, Envoy, PostgreSQL) is in `harness/`.

- `stack`: a real stack in one process (server on port 0, Envoy in front) and what tests do to it
- `operator`: `mplus` run as a subprocess, as an operator runs it (`Cli`, `running_up`)
- `processes`: `mplus serve` and Envoy as children a reliability test may SIGKILL
- `dispatching`: `mplus dispatch` processes, a filled queue, what the database says they did
- `webhook_receiver`: a local receiver that records posts and answers as scripted
- `calls`, `metrics`: AddMessages calls and their answers; Prometheus samples scraped
- `clock`, `locks`: the dispatcher's clock; a database lock held by another connection
- `figures`: what a reliability run records for docs/reliability.md
"""
