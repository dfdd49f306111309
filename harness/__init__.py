"""What the tests and the benchmark both need to run the real thing: free ports, waiting for a
process to answer, Envoy started in front of a server, a throwaway PostgreSQL database.

Its own top-level package, beside `tests/` and `bench/`, so that the benchmark does not import
the test suite; not in `server/`, because none of it is product code. Like those two it is not
installed (pyproject's package list is what the wheel ships): it needs the dev extras (httpx,
pgserver) and is imported from the checkout, where pytest's rootdir and `python -m bench` find
it. mypy checks it through its `packages` list.
"""
