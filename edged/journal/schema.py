"""The journal's tables and how its connection is set up (WAL, sync level, WAL size cap)."""

from __future__ import annotations

import re
from pathlib import Path

import sqlean as sqlite3

from ..files import secure_sqlite

WAL_LIMIT = 16 << 20  # bytes of WAL kept after a checkpoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  meta BLOB NOT NULL,
  priority INTEGER NOT NULL DEFAULT 5,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before REAL NOT NULL DEFAULT 0,
  error TEXT,
  received_at REAL NOT NULL,
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_ready ON inbox(priority DESC, id) WHERE state = 'received';
CREATE INDEX IF NOT EXISTS inbox_open ON inbox(state) WHERE state IN ('received', 'processing');
CREATE INDEX IF NOT EXISTS inbox_age ON inbox(updated_at) WHERE state IN ('done', 'dead');
CREATE TABLE IF NOT EXISTS seen(
  key TEXT PRIMARY KEY, inbox_id INTEGER, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_expires ON seen(expires);
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  props BLOB,
  qos INTEGER NOT NULL DEFAULT 1,
  retain INTEGER NOT NULL DEFAULT 0,
  priority INTEGER NOT NULL,
  kind TEXT NOT NULL,
  inbox_id INTEGER,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(priority DESC, id);
CREATE TABLE IF NOT EXISTS tool_calls(
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  inbox_id INTEGER,
  request_id TEXT,
  device TEXT,
  topic TEXT,
  agent TEXT,
  tool TEXT NOT NULL,
  arguments TEXT,
  outcome TEXT NOT NULL,
  detail TEXT,
  duration_ms REAL
);
CREATE INDEX IF NOT EXISTS tool_calls_device ON tool_calls(device, ts);
CREATE TABLE IF NOT EXISTS scheduled(
  key TEXT PRIMARY KEY,
  due REAL NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  priority INTEGER NOT NULL DEFAULT 5,
  created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scheduled_due ON scheduled(due);
CREATE TABLE IF NOT EXISTS escalations(
  id INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL,
  agent TEXT NOT NULL,
  device TEXT NOT NULL,
  reply_topic TEXT NOT NULL,
  props BLOB,
  body BLOB NOT NULL,               -- JSON: the redacted messages and what the reply needs
  priority INTEGER NOT NULL DEFAULT 5,
  created REAL NOT NULL,
  expires REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  UNIQUE(request_id, agent)
);
CREATE TABLE IF NOT EXISTS cloud_usage(
  day TEXT PRIMARY KEY, requests INTEGER NOT NULL, tokens INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps(
  inbox_id INTEGER NOT NULL,
  key TEXT NOT NULL,
  state TEXT NOT NULL,
  result BLOB,
  started_at REAL NOT NULL,
  finished_at REAL,
  PRIMARY KEY(inbox_id, key)
) WITHOUT ROWID;
"""

SCHEMA_VERSION = "1"
JOURNAL_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))
INBOX_STATES = ("received", "processing", "done", "dead")


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """The writer's connection, autocommit (it issues BEGIN itself), schema in place."""
    secure_sqlite(path)  # 0600 before SQLite creates it, its WAL and SHM
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=OFF")
    # a burst (20 MiB payloads, a long outage) must not leave a WAL that never shrinks:
    # after each checkpoint SQLite truncates the file back to this size
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    conn.executescript(SCHEMA)
    stamp_version(conn)
    return conn


def stamp_version(conn: sqlite3.Connection) -> None:
    """Record the schema version in a new journal (an existing one keeps its own)."""
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?)", (SCHEMA_VERSION,)
    )
