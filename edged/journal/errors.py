"""What the journal raises, and which SQLite failures are the disk's fault (worth waiting
out) rather than the statement's (a bug, raised as it is)."""

from __future__ import annotations

import sqlean as sqlite3


class JournalError(Exception):
    pass


class StorageError(JournalError):
    """The disk refused the work: full, locked by another process, an I/O error, a damaged
    page. Nothing of the call was committed, so it may simply be tried again."""


class StepInDoubt(Exception):
    """A journaled step started before a crash and never recorded an outcome.

    It is never re-run: its side effect may already have happened.
    """


class StepFailed(Exception):
    """A journaled step raised on an earlier attempt. It is not run again (its side effect
    may have partly happened); the recorded error is raised instead."""


# SQLite primary result codes that are the storage's fault, not the statement's: BUSY,
# LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_STORAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def storage_error(e: Exception) -> StorageError | None:
    """``e`` as a StorageError when the disk is to blame; None when the statement is."""
    code = getattr(e, "sqlite_errorcode", None)
    if not isinstance(e, sqlite3.Error) or code is None or code & 0xFF not in _STORAGE_CODES:
        return None
    hint = " (see `edged journal check`)" if code & 0xFF in (11, 26) else ""
    return StorageError(f"{e}{hint}")
