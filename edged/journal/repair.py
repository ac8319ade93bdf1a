"""Repair: ``edged journal check`` (read-only, beside the daemon) and ``edged journal
recover`` (salvage what reads of a damaged file into a fresh one; the daemon stopped)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlean as sqlite3

from ..files import secure_sqlite
from .errors import JournalError
from .schema import INBOX_STATES, JOURNAL_TABLES, SCHEMA, SCHEMA_VERSION, stamp_version


@dataclass(slots=True)
class CheckReport:
    """What :func:`check_file` found; no ``problems`` means the journal is sound."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # rows per table
    states: dict[str, int] = field(default_factory=dict)  # inbox rows per state


def check_file(path: Path) -> CheckReport:
    """``PRAGMA integrity_check``, then a count of every journal table, the inbox states and
    the schema version. Read-only: it may run beside the daemon (WAL)."""
    report = CheckReport()
    if not path.is_file():
        report.problems.append(f"{path}: no such file")
        return report
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
        except sqlite3.Error as e:  # not even that runs: the one thing to say
            report.problems.append(str(e))
            return report
        if found != ["ok"]:
            report.problems += found
        for table in JOURNAL_TABLES:
            try:
                report.counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.Error as e:
                report.problems.append(f"table {table}: {e}")
        try:
            report.states = dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state"))
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error:
            return report  # said above
        if version is None or version[0] != SCHEMA_VERSION:
            report.problems.append(f"schema version {version and version[0]!r}, expected "
                                   f"{SCHEMA_VERSION!r}")
        if odd := sorted(set(report.states) - set(INBOX_STATES)):
            report.problems.append(f"inbox rows in unknown states: {odd}")
    finally:
        conn.close()
    return report


@dataclass(slots=True)
class Salvage:
    """What :func:`recover_file` saved."""

    kept: Path  # the damaged file, moved aside
    method: str  # "copy": it read whole (VACUUM INTO); "rows": read row by row
    saved: dict[str, int]  # rows per table in the new journal
    unreadable: list[str]  # tables (with why) that lost rows


def recover_file(path: Path) -> Salvage:
    """Copy what can be read of a damaged journal into a fresh database at ``path``; the
    damaged file and its WAL stay as ``<name>.corrupt-<time>``. A file that reads whole is
    copied with VACUUM INTO; otherwise each table is read row by row, skipping unreadable
    pages (the ``.recover`` idea). The daemon must not be running."""
    if not path.is_file():
        raise JournalError(f"{path}: no such file")
    fresh = path.with_name(path.name + ".recovering")
    _remove_db(fresh)
    secure_sqlite(fresh)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    unreadable: list[str] = []
    try:
        method = "copy" if _vacuum_into(src, fresh) else "rows"
        dst = sqlite3.connect(str(fresh), isolation_level=None)
        try:
            dst.executescript(SCHEMA)
            dst.execute("BEGIN")
            if method == "rows":
                unreadable = _copy_rows(src, dst)
            stamp_version(dst)
            dst.execute("COMMIT")
            saved = {t: dst.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in JOURNAL_TABLES}
        finally:
            dst.close()
    finally:
        src.close()
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while kept.exists():
        n += 1
        kept = kept.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    path.replace(kept)
    for suffix in ("-wal", "-shm"):  # a WAL left beside the new file would be replayed into it
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.replace(f"{kept}{suffix}")
    fresh.replace(path)
    return Salvage(kept, method, saved, unreadable)


def _remove_db(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        p.unlink(missing_ok=True)


def _vacuum_into(src: sqlite3.Connection, fresh: Path) -> bool:
    """The whole file in one consistent copy, when it reads whole."""
    try:
        if src.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            return False
        src.execute("VACUUM INTO ?", (str(fresh),))
        return True
    except sqlite3.Error:
        _remove_db(fresh)
        secure_sqlite(fresh)
        return False


def _copy_rows(src: sqlite3.Connection, dst: sqlite3.Connection) -> list[str]:
    """Every journal table into ``dst``, row by row; returns the tables that lost rows."""
    lost: list[str] = []
    for table in JOURNAL_TABLES:
        info = dst.execute(f"PRAGMA table_info({table})").fetchall()
        try:
            have = {r[1] for r in src.execute(f"PRAGMA table_info({table})")}
        except sqlite3.Error as e:
            lost.append(f"{table}: {e}")
            continue
        cols = [r[1] for r in info if r[1] in have]
        if not cols:
            lost.append(f"{table}: not readable")
            continue
        insert = (f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) "
                  f"VALUES({', '.join('?' * len(cols))})")

        def put(row: Sequence[Any], insert: str = insert) -> None:
            dst.execute(insert, tuple(row))

        sql = dst.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        if "WITHOUT ROWID" in sql.upper():
            pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
            whole = _read_by_key(src, table, cols, pk, put)
        else:
            whole = _read_by_rowid(src, table, cols, put)
        if not whole:
            lost.append(f"{table}: some pages unreadable")
    return lost


def _read_by_rowid(src: sqlite3.Connection, table: str, cols: list[str],
                   put: Callable[[Sequence[Any]], None]) -> bool:
    """Rows in rowid order. Past an unreadable stretch, probe ahead (doubling the step, then
    bisecting back) for the first rowid that reads. False when something was skipped."""
    sel = f"SELECT rowid, {', '.join(cols)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    top = 2**63 - 1

    def fetch(after: int, n: int) -> list[Any] | None:
        try:
            return src.execute(sel, (after, n)).fetchall()
        except sqlite3.DatabaseError:
            return None

    last, whole = -(2**63), True
    while True:
        rows = fetch(last, 64)
        if rows is None:
            rows = fetch(last, 1)
        if rows is None:  # the next row (or the way to it) is unreadable
            whole = False
            bad, step = last + 1, 1
            while (good := bad + step) < top and fetch(good - 1, 1) is None:
                bad, step = good, step * 2
            if good >= top:
                return False
            while good - bad > 1:
                mid = (bad + good) // 2
                bad, good = (mid, good) if fetch(mid - 1, 1) is None else (bad, mid)
            last = good - 1
            continue
        if not rows:
            return whole
        for r in rows:
            put(r[1:])
        last = rows[-1][0]


def _read_by_key(src: sqlite3.Connection, table: str, cols: list[str], pk: list[str],
                 put: Callable[[Sequence[Any]], None]) -> bool:
    """WITHOUT ROWID tables: forward in key order up to a bad page, then backward from the
    end up to one (what lies between two bad pages is lost)."""
    for desc in ("", " DESC"):
        order = ", ".join(f"{c}{desc}" for c in pk)
        try:
            for row in src.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}"):
                put(row)
        except sqlite3.DatabaseError:
            continue
        return desc == ""
    return False
