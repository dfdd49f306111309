"""A list of values bound as one parameter: `column IN (…)` whatever the list's length.

SQLAlchemy's expanding IN renders one placeholder per value on every call, and the driver
parses them all again: for a 1000-message request's destinations that was a fifth of the
server's time. One parameter keeps the statement's text fixed: a PostgreSQL array
(`= ANY(%s)`), or on SQLite a JSON array read by `json_each`. Both use the column's index.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, column, func, select
from sqlalchemy.dialects import postgresql

DIALECTS = ("postgresql", "sqlite")


def any_of(target: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`target` is one of the list bound as `name` (see `bound_list`), in `dialect`'s SQL."""
    if dialect == "postgresql":
        return target == any_(bindparam(name, type_=postgresql.ARRAY(String)))
    each = func.json_each(bindparam(name, type_=String))
    return target.in_(select(column("value")).select_from(each).scalar_subquery())


def bound_list(connection: Connection, values: Collection[str]) -> Any:
    """`values` as `any_of`'s parameter on `connection`'s database."""
    if connection.dialect.name == "postgresql":
        return list(values)
    return json.dumps(list(values))
