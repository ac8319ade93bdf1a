"""Privacy by default (issue 14): private state on disk, secrets phrased as people say them,
private turns and event contents that never leave the device."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.config import CloudConfig
from edged.escalation import Escalator
from edged.files import secure_dir, secure_file
from edged.journal import Journal
from edged.memory.store import MemoryStore, Turn
from edged.memory.working import PRIVATE_TURN, WorkingMemory, build, private_withheld
from edged.messages import Request
from edged.redact import Redactor, is_sensitive

R = Redactor()


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def assert_private(root: Path) -> list[str]:
    """Every directory under ``root`` (itself included) 0700, every file 0600."""
    seen = []
    for p in [root, *sorted(root.rglob("*"))]:
        want = 0o700 if p.is_dir() else 0o600
        assert mode(p) == want, f"{p}: {oct(mode(p))}, want {oct(want)}"
        seen.append(p.name)
    return seen


# -- files on disk ----------------------------------------------------------------------------


async def test_journal_and_memory_files_are_private_whatever_the_umask(tmp_path, umask):
    state = tmp_path / "state"
    j = Journal(state / "sub" / "edged.db")
    store = MemoryStore(state / "sub" / "memory.db")
    await j.open()
    try:
        store.open()
        await j.cloud_spend("2026-01-01", 1, 10)  # writes: the WAL files now exist
        store.add_turns("phone", "phone", "r1", "hi", "hello")
        seen = assert_private(state)
        for name in ("edged.db", "edged.db-wal", "edged.db-shm", "memory.db",
                     "memory.db-wal", "memory.db-shm"):
            assert name in seen
    finally:
        store.close()
        await j.close()
    assert_private(state)


async def test_an_older_version_s_0644_files_are_tightened_on_open(tmp_path):
    """An upgrade: a state dir 0755 with a live WAL database 0644 (-wal and -shm too)."""
    old = os.umask(0o022)
    try:
        state = tmp_path / "state"
        state.mkdir()
        paths = [state / "edged.db", state / "memory.db"]
        conns = []
        for p in paths:
            c = sqlite3.connect(p)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE t(x)")
            c.execute("INSERT INTO t VALUES (1)")
            c.commit()
            conns.append(c)  # kept open: its -wal and -shm stay on disk
        assert mode(state) == 0o755 and mode(state / "edged.db-wal") == 0o644
        j = Journal(paths[0])
        store = MemoryStore(paths[1])
        await j.open()
        store.open()
        try:
            seen = assert_private(state)
            assert {"edged.db-wal", "edged.db-shm", "memory.db-wal", "memory.db-shm"} <= set(seen)
        finally:
            store.close()
            await j.close()
            for c in conns:
                c.close()
    finally:
        os.umask(old)


def test_shared_directories_and_home_are_not_locked(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    cwd = tmp_path / "project"
    cwd.mkdir(mode=0o755)
    cwd.chmod(0o755)
    monkeypatch.chdir(cwd)
    own = tmp_path / "own"
    own.mkdir()
    own.chmod(0o755)
    for d in (home, shared, Path("."), own):
        secure_dir(d)
        secure_file(d / "x.db")
        assert mode(d / "x.db") == 0o600
    assert mode(home) == 0o755 and mode(shared) == 0o1777 and mode(cwd) == 0o755
    assert mode(own) == 0o700  # an existing state directory of ours is tightened
    # a path that is not a regular file is left for its opener to reject
    (tmp_path / "dir.db").mkdir(mode=0o755)
    secure_file(tmp_path / "dir.db")
    assert (tmp_path / "dir.db").is_dir()


# -- redaction: the phrasings the outside test found ------------------------------------------

PHRASINGS = [
    ("the code for the front door is 4471", "the code for the front door is [secret]"),
    ("safe combination is 12-34-56", "safe combination is [secret]"),
    ("the wifi password is hunter2 ", "the wifi password is [secret] "),
    ("my pin is 1234", "my pin is [secret]"),
    ("the gate code's 9911", "the gate code's [secret]"),
    ("door code: 4471", "door code: [secret]"),
    ("password for the router is Tr0ub4dor&3", "password for the router is [secret]"),
    ("alarm code 4471", "alarm code [secret]"),
    # variants of the same
    ("The Code For The Back Door Is 4471.", "The Code For The Back Door Is [secret]."),
    ("the combination of the safe is 12 34 56, ok", "the combination of the safe is [secret], ok"),
    ("the gate code\u2019s 9911", "the gate code\u2019s [secret]"),
    ("the key to the shed is 55-B", "the key to the shed is [secret]"),
    ("the code equals 7788", "the code equals [secret]"),
    ("I want the password to be swordfish", "I want the password to be [secret]"),
    ("the passphrase is correct horse battery staple, thanks",
     "the passphrase is [secret], thanks"),
    ("the token was abc123XYZ", "the token was [secret]"),
    ("the wi-fi password for the guest network is \u201cn\u00e4ive-\u03a9mega 7\u201d",
     "the wi-fi password for the guest network is \u201c[secret]\u201d"),
    ("the pin\u00a0is\u00a01234", "the pin\u00a0is\u00a0[secret]"),
    ("password for anna@example.com is hunter2", "password for [email] is [secret]"),
]


@pytest.mark.parametrize("text, want", PHRASINGS)
def test_secrets_as_people_say_them_are_redacted(text, want):
    got, counts = R.text(text)
    assert got == want
    assert counts.get("secret") == 1
    assert is_sensitive(text)  # so such a memory is private and such a turn withheld
    assert R.text(got)[0] == got  # and redacting again changes nothing


@pytest.mark.parametrize("text", [
    "what is the temperature",
    # "code" followed by another noun is not a code: the whole sentence stays, "on Tuesday"
    # included (a "code review is tomorrow" would stay too: no secret noun links to it)
    "the code review is on Tuesday",
    "the key to success is patience", "the key is under the mat", "the code is on the fridge",
    "the error code is 404", "zip code is 90210", '{"status_code": 200}', "primary key is id",
    "what is the code for the front door?", "the password is not working",
    "the token count is 12", "the winning combination is red", "set the heating to 21",
    "the secret is out", "the pin is in the drawer",
])
def test_near_misses_stay_intact(text):
    assert R.text(text) == (text, {})


def test_several_secrets_in_one_text_are_each_redacted():
    text = ("the code for the front door is 4471 and the wifi password is hunter2; "
            "pin: 1234, safe combination is 12-34-56. Mail anna@example.com")
    got, counts = R.text(text)
    assert got == ("the code for the front door is [secret] and the wifi password is "
                   "[secret]; pin: [secret], safe combination is [secret]. Mail [email]")
    assert counts == {"secret": 4, "email": 1}


@pytest.mark.parametrize("text", [
    "the code for the front door is 4471, " * 3000,
    "password is" + " " * 100_000,  # quadratic before: 13 s for 20 kB
    "code for the door is" + " " * 100_000,
    "code for " + "a " * 50_000,
    "code's " * 15_000,
    "passphrase is " + "word " * 20_000,
    "pin is " + "12 " * 33_000,
    "key:" + "a-" * 50_000,
    "the password for " * 6_000,
    "the key to the \u00e9t\u00e9 " * 6_000,
])
def test_long_hostile_input_is_linear(text):
    assert len(text) >= 90_000
    t0 = time.perf_counter()
    R.text(text)
    is_sensitive(text)
    assert time.perf_counter() - t0 < 1.0


# -- recent turns and the cloud ---------------------------------------------------------------


def turn(i: int, role: str, text: str, rid: str) -> Turn:
    return Turn(id=i, scope="phone", session="phone", role=role, text=text, tokens=5,
                request_id=rid, ts=0.0)


TURNS = [
    turn(1, "user", "I like jazz", "a"), turn(2, "assistant", "Noted.", "a"),
    turn(3, "user", "the wifi password is correct horse battery staple", "b"),
    turn(4, "assistant", "Noted: correct horse battery staple.", "b"),
    turn(5, "user", "what did I tell you?", "c"),
    turn(6, "assistant", "Sure: the code for the front door is 4471", "c"),  # echoed
]


def test_exchanges_with_a_secret_are_withheld_whole():
    out, n = private_withheld(TURNS)
    assert n == 4
    assert [t.text for t in out] == ["I like jazz", "Noted.", PRIVATE_TURN, PRIVATE_TURN,
                                     PRIVATE_TURN, PRIVATE_TURN]
    assert [t.role for t in out] == [t.role for t in TURNS]  # the conversation keeps its shape
    assert private_withheld(out) == (out, 0)
    assert TURNS[2].text.startswith("the wifi")  # the input is untouched


def test_working_memory_for_the_cloud_withholds_and_counts_the_placeholders():
    local = build("sys", "write a poem", turns=TURNS, budget=1000)
    assert "horse" in json.dumps(local.messages()) and local.withheld == 0
    cloud = build("sys", "write a poem", turns=TURNS, budget=1000, withhold_private=True)
    text = json.dumps(cloud.messages()) + cloud.prompt()
    assert "horse" not in text and "4471" not in text and "wifi" not in text
    assert cloud.withheld == 4 and "I like jazz" in text


class _Agent:
    """An agent whose working memory forgot to withhold: the escalator does it anyway."""

    name = "house"

    async def working_memory(self, request: Request, *, for_cloud: bool = False
                             ) -> WorkingMemory:
        return build("sys", request.text, turns=TURNS, budget=1000)


def _request(text: str) -> Request:
    return Request(id="r1", device="phone", topic="edged/in/phone", text=text)


@pytest.mark.parametrize("content", ["metadata", "redacted"])
async def test_what_goes_to_the_cloud_and_the_cloud_request_event(content):
    cfg = CloudConfig(enabled=True, model="m", event_content=content)  # type: ignore[arg-type]
    esc = Escalator(cfg, None, runner=None, emit=_no_emit,  # type: ignore[arg-type]
                    wake_outbox=lambda: None)
    try:
        messages, counts = await esc._messages(_Agent(), _request("a poem for anna@example.com"))
    finally:
        await esc.close()
    sent = json.dumps(messages)
    assert "horse" not in sent and "4471" not in sent and sent.count(PRIVATE_TURN) == 4
    assert counts == {"private_turn": 4, "email": 1}
    event = esc._request_event(_request("x"), "no_tool", messages, [], counts)
    assert event["message_count"] == len(messages) == 8 and event["tokens"] > 0
    assert event["model"] == "m" and event["reason"] == "no_tool"
    assert event["redacted"] == counts and event["request_id"] == "r1"
    if content == "metadata":
        assert "messages" not in event and "poem" not in json.dumps(event)
    else:
        assert event["messages"] == messages


async def _no_emit(kind: str, data: dict[str, Any]) -> None:
    await asyncio.sleep(0)


def test_event_content_config():
    assert config.loads_dict({}).cloud.event_content == "metadata"
    assert config.loads_dict({"cloud": {"event_content": "redacted"}}).cloud.event_content \
        == "redacted"
    with pytest.raises(config.ConfigError) as e:
        config.loads_dict({"cloud": {"event_content": "all"}}, "f.toml")
    assert str(e.value).startswith("f.toml: cloud.event_content: expected one of ")
