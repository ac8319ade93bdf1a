"""Storage faults degrade, never kill: a full disk, a journal locked by another process, a
corrupt memory database, `edged journal check|recover`, and a journal that cannot be opened.

Real parts: a private mosquitto, the daemon in-process or as a subprocess, real SQLite. The
full disk is SQLite's own page limit (``PRAGMA max_page_count`` on the daemon's journal
connection, set through its public ``Journal.query``); the lock is ``BEGIN EXCLUSIVE`` held
by another process. Side effects are counted by the probe agent of ``tests.probe_daemon``,
which writes each request id to a file inside ``Context.once``.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from edged import cli, config
from edged.journal import Incoming, Journal, Meta, check_file

from .harness import ROOT, Peer, peer
from .probe_daemon import ProbeAgent

FULL_PAGE_LIMIT = "PRAGMA max_page_count = 1"  # below the current size: no page may be added
NO_PAGE_LIMIT = "PRAGMA max_page_count = 1073741823"


def _body(m: Any) -> dict[str, Any]:
    return json.loads(m.payload)


def _status(m: Any, health: str) -> bool:
    return m.topic == "edged/status" and _body(m).get("health") == health


def _replies(p: Peer) -> list[dict[str, Any]]:
    with p.cond:
        return [_body(m) for m in p.messages if m.topic.startswith("edged/out/")]


def _send(p: Peer, ids: list[str]) -> None:
    for rid in ids:
        p.publish("edged/in/dev", json.dumps({"id": rid, "text": f"req {rid}", "agent": "probe"}))


def _assert_each_answered_and_run_once(p: Peer, ids: list[str], effects: Path) -> None:
    got = collections.Counter(r.get("id") for r in _replies(p))
    assert {i: got[i] for i in ids} == dict.fromkeys(ids, 1)  # none lost, none twice
    errors = [r for r in _replies(p) if "error" in r]
    assert errors == []  # a storage fault is no request's failure: no attempt was used up
    assert collections.Counter(effects.read_text().split()) == dict.fromkeys(ids, 1)


async def _wait(p: Peer, n: int, pred: Any, timeout: float = 60.0) -> list[Any]:
    return await asyncio.to_thread(p.wait_count, n, timeout, pred)


async def test_full_disk_degrades_then_every_request_is_answered_once(
        broker, make_config, run_daemon, tmp_path):
    effects = tmp_path / "effects.log"
    effects.touch()
    # max_attempts = 1: were a storage fault counted as a failed attempt, requests would be
    # dead-lettered instead of answered
    d = await run_daemon(make_config(delivery="max_attempts = 1"),
                         stages={"probe": ProbeAgent(str(effects), None)})
    ids = [f"full-{i:03d}" for i in range(80)]
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/status")
        _send(p, ids[:5])
        await _wait(p, 5, lambda m: m.topic == "edged/out/dev")
        await d.app.journal.query(FULL_PAGE_LIMIT)  # the disk is full from here on
        await asyncio.to_thread(_send, p, ids[5:])
        st = (await _wait(p, 1, lambda m: _status(m, "degraded")))[0]
        detail = _body(st)["detail"]
        assert "full" in detail["storage"] and "storage" in detail["last_error"]
        assert len(_replies(p)) < len(ids)  # the fault really held work up
        assert not d.stopped.is_set()

        await d.app.journal.query(NO_PAGE_LIMIT)  # space again: it resumes by itself
        await _wait(p, len(ids), lambda m: m.topic == "edged/out/dev")
        ok_after = len([m for m in p.messages if _status(m, "ok")])
        await _wait(p, ok_after + 1, lambda m: _status(m, "ok"))  # published after the lift
    assert d.app.journal.degraded == "" and not d.stopped.is_set()
    _assert_each_answered_and_run_once(p, ids, effects)


async def test_journal_waits_out_a_lock_and_its_writer_still_answers_the_watchdog(tmp_path):
    import sqlean

    j = Journal(tmp_path / "edged.db")
    await j.open()
    await j.query("PRAGMA busy_timeout = 200")  # each locked attempt fails after 0.2 s, not 5
    changes: list[str] = []
    changed = asyncio.Event()
    j.on_degraded = lambda fault: (changes.append(fault), changed.set())
    j.wait_out_faults = True
    other = sqlean.connect(str(j.path), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the journal
    try:
        waiting = asyncio.ensure_future(j.accept([Incoming(
            key="i:a", key_is_content=False, topic="t", payload=b"x", meta=Meta())]))
        await asyncio.wait_for(changed.wait(), 30)
        assert "database is locked" in j.degraded and not waiting.done()
        await asyncio.wait_for(j.ping(), 10)  # Daemon.health(): degraded is not hung
        assert await asyncio.wait_for(j.cleanup(), 10) == {}  # skipped, not waited for
        assert not waiting.done() and j.degraded
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await asyncio.wait_for(waiting, 30))[0] is not None  # committed once free
    assert [bool(c) for c in changes] == [True, False] and j.degraded == ""
    assert (await j.counts())["received"] == 1
    await j.close()


LOCKER = """
import sys, sqlean
c = sqlean.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
c.execute("ROLLBACK")
"""


def test_locked_journal_degrades_then_every_request_is_answered_once(
        broker, make_config, daemon_process, tmp_path):
    effects = tmp_path / "effects.log"
    effects.touch()
    cfg = make_config(delivery="max_attempts = 1")
    daemon = daemon_process(cfg, module="tests.probe_daemon",
                            env={"EDGED_PROBE_FILE": str(effects)}).start()
    ids = [f"lock-{i:03d}" for i in range(40)]
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/status")
        _send(p, ids[:5])
        p.wait_count(5, 30, lambda m: m.topic == "edged/out/dev")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path / "edged.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
            _send(p, ids[5:])
            status = daemon.notify.wait("STATUS=degraded", 60)
            assert "database is locked" in status, status
            st = p.wait_count(1, 30, lambda m: _status(m, "degraded"))[-1]
            assert "locked" in _body(st)["detail"]["storage"]
            assert _body(st)["detail"]["in"] == 5  # nothing new journaled, so nothing acked
            assert daemon.proc is not None and daemon.proc.poll() is None  # still running
            assert len(_replies(p)) == 5
        finally:
            assert locker.stdin is not None
            locker.stdin.write("\n")
            locker.stdin.close()
            locker.wait(30)
        p.wait_count(len(ids), 60, lambda m: m.topic == "edged/out/dev")
        daemon.notify.wait("STATUS=online: journal writable again", 30)
        ok_after = len([m for m in p.messages if _status(m, "ok")])
        p.wait_count(ok_after + 1, 30, lambda m: _status(m, "ok"))
    assert daemon.proc is not None and daemon.proc.poll() is None
    _assert_each_answered_and_run_once(p, ids, effects)


AGENT = f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[agents.house]
model = "small"
description = "Controls lights and heating, and remembers things."
tools = ["home.*", "memory.*"]

[router]
default_agent = "house"

[plugins]
dirs = ["{ROOT / 'plugins'}"]
"""


async def test_corrupt_memory_database_disables_memory_not_the_daemon(
        broker, make_config, run_daemon, caplog):
    cfg_path = make_config(extra=AGENT)
    garbage = b"this is not an SQLite database\n" * 300
    mem_path = config.load(cfg_path).memory_path
    mem_path.write_bytes(garbage)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/#", "edged/status")
        d = await run_daemon(cfg_path, timeout=90)
        [ev] = await _wait(p, 1, lambda m: m.topic == "edged/events/memory_unavailable")
        p.publish("edged/in/panel", json.dumps({"id": "e1", "text": "ping", "agent": "echo"}))
        p.publish("edged/in/panel", json.dumps({"id": "t1", "text": "turn on the kitchen light"}))
        got = {_body(m)["id"]: _body(m) for m in await _wait(
            p, 2, lambda m: m.topic == "edged/out/panel")}
        st = (await _wait(p, 1, lambda m: _status(m, "degraded")))[0]
    assert "not a database" in _body(ev)["data"]["error"]
    assert got["e1"]["text"] == "ping"
    # the tool agent works without memory
    assert [(c["tool"], c["arguments"]) for c in got["t1"]["tool_calls"]] == [
        ("home.set_light", {"room": "kitchen", "on": True})]
    assert "not a database" in _body(st)["detail"]["memory"]["unavailable"]
    assert d.app.memory is None and not d.stopped.is_set()
    assert any("memory unavailable" in r.getMessage() for r in caplog.records)
    assert mem_path.read_bytes() == garbage  # the user's file is left for them to look at


# -- edged journal check | recover, and a journal that cannot be opened at start ---------------


def _config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "journal.toml"
    path.write_text(f'[storage]\npath = "{db}"\n')
    return path


async def _journal_with_rows(db: Path, n: int) -> dict[str, bytes]:
    payloads = {f"i:{k:04d}": f"payload {k} ".encode() * 40 for k in range(n)}
    j = Journal(db)
    await j.open()
    await j.accept([Incoming(key=key, key_is_content=False, topic="edged/in/d", payload=body,
                             meta=Meta(device="d")) for key, body in payloads.items()])
    await j.close()
    return payloads


def _damage_an_inbox_page(db: Path) -> None:
    """Overwrite the header of one inbox leaf page in the middle of the table."""
    import sqlean

    conn = sqlean.connect(str(db))
    try:
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'inbox' AND pagetype = 'leaf' "
            "ORDER BY pageno")]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    assert len(leaves) > 10
    with open(db, "r+b") as f:
        f.seek((leaves[len(leaves) // 2] - 1) * page_size)
        f.write(b"\xff" * 64)


def _cli(capsys: Any, *args: str) -> tuple[int, str]:
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err


async def test_journal_check_tells_a_sound_journal_from_a_damaged_one(tmp_path, capsys):
    db = tmp_path / "edged.db"
    await _journal_with_rows(db, 300)
    cfg = str(_config(tmp_path, db))
    rc, out = _cli(capsys, "journal", "check", "-c", cfg)
    assert rc == 0, out
    assert f"edged journal {db}: OK" in out and "inbox 300 (300 received" in out
    _damage_an_inbox_page(db)
    rc, out = _cli(capsys, "journal", "check", "-c", cfg)
    assert rc == 1, out
    assert "DAMAGED" in out and "malformed" in out and "edged journal recover" in out


async def test_journal_recover_saves_every_readable_row_and_keeps_the_damaged_file(
        tmp_path, capsys):
    db = tmp_path / "edged.db"
    payloads = await _journal_with_rows(db, 300)
    cfg = str(_config(tmp_path, db))
    _damage_an_inbox_page(db)
    damaged = hashlib.sha256(db.read_bytes()).hexdigest()
    rc, out = _cli(capsys, "journal", "recover", "-c", cfg)
    assert rc == 0, out
    assert "row by row" in out and "lost: inbox" in out
    [kept] = tmp_path.glob("edged.db.corrupt-*[0-9]")
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == damaged
    assert f"kept as {kept}" in out
    # the new journal is sound, opens, and holds every row of the readable pages intact
    assert check_file(db).problems == []
    j = Journal(db)
    await j.open()
    try:
        rows = dict(await j.query("SELECT key, payload FROM inbox"))
        assert len(payloads) - 40 < len(rows) < len(payloads)  # one page of rows lost
        assert all(payloads[k] == v for k, v in rows.items())
        assert len(await j.query("SELECT key FROM seen")) == len(payloads)  # other pages
        assert await j.accept([Incoming(key="i:new", key_is_content=False, topic="t",
                                        payload=b"x", meta=Meta())]) != [None]
    finally:
        await j.close()
    assert f"inbox {len(rows)}," in out
    # a journal that reads whole is copied whole
    rc, out = _cli(capsys, "journal", "recover", "-c", cfg)
    assert rc == 0 and "copied as is" in out and f"inbox {len(rows) + 1}," in out, out
    assert len(list(tmp_path.glob("edged.db.corrupt-*[0-9]"))) == 2


def test_start_with_an_unreadable_journal_names_check_and_recover(make_config, tmp_path):
    cfg = make_config()
    (tmp_path / "edged.db").write_bytes(b"not a journal at all\n" * 500)
    r = subprocess.run([sys.executable, "-m", "edged", "run", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert r.returncode == 1, r.stderr
    assert "cannot open the journal" in r.stderr and "not a database" in r.stderr
    assert f"edged journal check -c {cfg}" in r.stderr
    assert f"edged journal recover -c {cfg}" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
