"""Why a process cannot start: the library's own exceptions for a bad setting, a taken port or a
database that is unreachable or not migrated.

They are raised where the problem is found and reach the operator only through `cli.main`,
which prints the message alone on stderr and exits 1: a library that raised SystemExit could
not be called from a test or another program without ending it. The message names the setting
to change, so it is all the operator needs; a traceback would bury it.
"""

from __future__ import annotations


class StartupError(Exception):
    """This process cannot start; the message says why and what to change."""


class ConfigError(StartupError):
    """A setting (an MPLUS_* variable) has a value this service refuses."""


class CannotListen(StartupError):
    """An address or port cannot be bound: taken, or not an address of this host."""


class DatabaseUnreachable(StartupError):
    """The database does not answer at startup."""


class SchemaOutOfDate(StartupError):
    """The database is not at this code's revision: `mplus db upgrade` first."""
