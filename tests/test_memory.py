"""Memory: the sqlite-vec store, recall, consolidation, the memory tools and CLI, re-embedding.

Real parts: sqlite-vec through sqlean.py, MiniLM (bundled) embeddings, SmolLM2 on llama.cpp,
the daemon over a private mosquitto. Scripted dialogues are recorded as turns exactly as the
agent records them (``Memory.record``), then consolidated.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edged import cli, config
from edged.config import MemoryConfig
from edged.governor import Readings
from edged.memory import Consolidator, Memory, MemoryStore
from edged.memory.consolidate import clean, cue_kind, subject
from edged.memory.store import Turn, approx_tokens
from edged.memory.working import build
from edged.service import Daemon

from .harness import ROOT, peer, wait_for

EMBEDDER = "bundled:minilm-l6-int8"


@pytest.fixture(scope="module")
def minilm():
    from edged.models.embed import create_embedder

    e = create_embedder(EMBEDDER)
    e.load()
    yield e
    e.unload()


@pytest.fixture
async def mem(tmp_path, minilm):
    m = Memory(MemoryConfig(), tmp_path / "memory.db",
               embed=lambda t: asyncio.to_thread(minilm.embed, t), embedder_id=EMBEDDER)
    await m.open()
    yield m
    await m.close()


async def _say(m: Memory, device: str, lines: list[str], start: int = 0,
               tools: dict[int, list[dict[str, Any]]] | None = None) -> None:
    for i, text in enumerate(lines, start):
        await m.record(device, device, f"{device}-{i}", text, "ok", (tools or {}).get(i))


def _texts(m: Memory, scope: str) -> dict[str, str]:
    return {r.text: r.kind for r in m.store.list(scope)}


# -- store and recall ---------------------------------------------------------------------------

async def test_recall_finds_the_right_memory_within_the_device_scope(mem):
    facts = {
        "hall": ["My daughter is called Emma", "The spare key is under the blue flower pot",
                 "I like the bedroom at 19 degrees", "The boiler is serviced every October",
                 "We are vegetarian"],
        "garage": ["The car is a red Golf", "The garage door code is 4471",
                   "I like the workshop lights at full brightness"],
    }
    for scope, texts in facts.items():
        for t in texts:
            await mem.remember(scope, t, "fact")
    cases = [("hall", "what is my daughter's name", "My daughter is called Emma"),
             ("hall", "where did I hide the key", "The spare key is under the blue flower pot"),
             ("hall", "how warm do I want the bedroom", "I like the bedroom at 19 degrees"),
             ("hall", "when is the boiler maintenance", "The boiler is serviced every October"),
             ("hall", "do we eat meat", "We are vegetarian"),
             ("garage", "what car do we have", "The car is a red Golf"),
             ("garage", "what's the code for the garage door", "The garage door code is 4471")]
    for scope, query, want in cases:
        got = await mem.recall(query, scope, k=3)
        assert got and got[0].text == want, (query, [g.text for g in got])
    # a scope never sees another's memories, whatever the query
    got = await mem.recall("what car do we have", "hall", k=5, min_similarity=0.0)
    assert got and all(r.scope == "hall" for r in got)
    assert "The car is a red Golf" not in [r.text for r in got]
    # recall marks what it returned as used
    [best] = await mem.recall("garage door code", "garage", k=1)
    uses = mem.store.get(best.id).uses
    await mem.recall("garage door code", "garage", k=1)
    assert mem.store.get(best.id).uses == uses + 1


async def test_kind_and_time_filters_and_weighting(mem):
    old = await mem.remember("d", "I like the kitchen lights dim", "preference")
    new = await mem.remember("d", "The kitchen lights are LED strips", "fact")
    with mem.store.tx():
        mem.store.conn.execute("UPDATE vec_memories SET ts = 1000.0 WHERE memory_id = ?", (old,))
    prefs = await mem.recall("kitchen lights", "d", kinds=["preference"], min_similarity=0)
    assert [r.id for r in prefs] == [old]
    recent = await mem.recall("kitchen lights", "d", since=2000, min_similarity=0)
    assert [r.id for r in recent] == [new]
    # importance and recency weight equally similar memories
    a = await mem.remember("w", "The cellar light switch is by the stairs", "fact",
                           importance=0.1)
    b = await mem.remember("w", "The cellar light switch is by the stairs!", "fact",
                           importance=1.0)
    got = await mem.recall("cellar light switch", "w", k=2)
    assert [r.id for r in got] == [b, a] and got[0].score > got[1].score


async def test_short_term_turns_are_bounded_and_retries_do_not_duplicate(mem):
    mem.cfg = MemoryConfig(max_turns=4, turn_tokens=1000)
    for i in range(6):
        await mem.record("d", "s1", f"r{i}", f"request {i}", f"reply {i}")
    await mem.record("d", "s1", "r5", "request 5", "reply 5")  # a retry of the last one
    turns = await mem.recent("s1")
    assert [t.text for t in turns] == ["request 4", "reply 4", "request 5", "reply 5"]
    mem.cfg = MemoryConfig(max_turns=20, turn_tokens=2 * approx_tokens("request 5") + 1)
    assert [t.text for t in await mem.recent("s1")][-1] == "reply 5"
    assert len(await mem.recent("s1")) < 4
    assert await mem.recent("other") == []


def test_working_memory_fits_the_budget_and_keeps_the_newest_turns():
    from edged.memory.store import MemoryRow

    mems = [MemoryRow(i, "d", "preference", f"memory number {i} " * 3, 0.5, 0, 0, None, 0, [])
            for i in range(5)]
    turns = [Turn(i, "d", "d", "user" if i % 2 == 0 else "assistant", f"turn {i} " * 5, 0,
                  f"r{i // 2}", float(i)) for i in range(10)]
    wm = build("You are helpful.", "heat the bedroom", memories=mems, turns=turns, budget=90)
    assert wm.tokens <= 90
    assert wm.request == "heat the bedroom" and wm.memories and wm.turns
    assert wm.turns[-1].text == turns[-1].text  # newest kept, oldest dropped
    assert wm.dropped["turns"] > 0
    msgs = wm.messages()
    assert msgs[0]["role"] == "system" and "memory number 0" in msgs[0]["content"]
    assert msgs[-1] == {"role": "user", "content": "heat the bedroom"}
    assert wm.prompt().endswith("User: heat the bedroom\nAssistant:")
    big = build("sys", "word " * 400, budget=50)
    assert big.tokens <= 50 and big.request.endswith("word")


# -- consolidation ------------------------------------------------------------------------------

def test_statement_rules():
    assert clean("oh and remember that my son is called Max.") == "My son is called Max"
    assert cue_kind("I like the bedroom at 19 degrees") == "preference"
    assert cue_kind("we decided to sell the car") == "decision"
    assert cue_kind("my son is called Max") == "fact"
    assert subject("I like the bedroom at 19 degrees") == \
        subject("actually I prefer the bedroom at twenty one degrees") == {"bedroom", "degrees"}


async def test_consolidation_updates_a_changed_preference_and_never_duplicates(mem):
    c = Consolidator(mem, mem.cfg)
    await _say(mem, "hall", [
        "I like the bedroom at 19 degrees",
        "turn on the kitchen light",  # a command a tool carried out: not a memory
        "my daughter is called Emma",
        "what time is it?",  # a question: not a memory
        "nice weather today",  # small talk
        "we decided to sell the car",
    ], tools={1: [{"tool": "home.set_light", "arguments": {"room": "kitchen", "on": True}}]})
    r = await c.run()
    assert (r.sessions, r.added, r.updated, r.deleted) == (1, 3, 0, 0)
    assert _texts(mem, "hall") == {"I like the bedroom at 19 degrees": "preference",
                                   "My daughter is called Emma": "fact",
                                   "We decided to sell the car": "decision"}
    assert (await c.run()).added == 0  # nothing new: idempotent
    # the preference changes, the fact is said again, something is retracted
    await _say(mem, "hall", ["actually I prefer the bedroom at 21 degrees",
                             "my daughter is called Emma",
                             "we no longer want to sell the car"], start=10)
    r = await c.run()
    assert (r.added, r.updated, r.noop, r.deleted) == (0, 1, 1, 1), r.decisions
    assert _texts(mem, "hall") == {"I prefer the bedroom at 21 degrees": "preference",
                                   "My daughter is called Emma": "fact"}
    emma = [m for m in mem.store.list("hall") if "Emma" in m.text][0]
    assert emma.sources == ["hall-2", "hall-11"]  # both messages it came from
    bedroom = [m for m in mem.store.list("hall") if "bedroom" in m.text][0]
    assert bedroom.sources == ["hall-0", "hall-10"]
    # the updated memory is found with its new value
    [top] = await mem.recall("bedroom temperature", "hall", k=1)
    assert top.text == "I prefer the bedroom at 21 degrees"
    # another device's words stay in its own scope
    await _say(mem, "garage", ["I like the bedroom at 17 degrees"])
    await c.run()
    assert _texts(mem, "garage") == {"I like the bedroom at 17 degrees": "preference"}
    assert "I prefer the bedroom at 21 degrees" in _texts(mem, "hall")


async def test_old_turns_fold_into_episodes_and_old_memories_are_pruned(tmp_path, minilm):
    now = [1_000_000.0]
    cfg = MemoryConfig(max_turns=2, episode_after_s=3600, retention_days=30,
                       prune_below_importance=0.5)
    m = Memory(cfg, tmp_path / "m.db", embed=lambda t: asyncio.to_thread(minilm.embed, t),
               embedder_id=EMBEDDER, clock=lambda: now[0])
    await m.open()
    try:
        c = Consolidator(m, cfg, clock=lambda: now[0])
        await _say(m, "hall", ["turn on the hall light", "set the heating to 20",
                               "what time is it", "lock the front door"],
                   tools={0: [{"tool": "home.set_light", "arguments": {}}],
                          1: [{"tool": "home.set_temperature", "arguments": {}}]})
        await m.remember("hall", "The hall lamp is old", "fact", importance=0.2)
        await m.remember("hall", "I am allergic to cats", "fact", importance=0.9)
        now[0] += 2 * 3600  # two hours later: the first turns are old enough
        r = await c.run()
        assert r.episodes == 1 and r.turns_folded == 6  # all but the newest 2 turns
        [ep] = m.store.list("hall", kind="episode")
        assert "turn on the hall light (home.set_light)" in ep.text
        assert "set the heating to 20 (home.set_temperature)" in ep.text
        assert [t.text for t in await m.recent("hall")] == ["lock the front door", "ok"]
        now[0] += 31 * 86400  # past the retention: unimportant memories go
        r = await c.run()
        assert r.pruned == 2  # the old lamp fact and the episode; the allergy stays
        assert [x.text for x in m.store.list("hall")] == ["I am allergic to cats"]
    finally:
        await m.close()


async def test_the_model_is_asked_under_a_schema_and_only_trusted_after_a_probe(mem):
    from edged.models import GenerationRequest
    from edged.models.pool import ModelPool

    cfg = config.loads_dict({"models": {"small": {
        "backend": "llama_cpp", "path": "bundled:smollm2-135m", "context": 1024,
        "threads": 1}}})
    pool = ModelPool(dict(cfg.models), cfg.resources)
    outputs: list[str] = []

    async def generate(prompt: str, schema: dict[str, Any]) -> str:
        gen = await pool.generate("small", GenerationRequest(
            prompt=prompt, json_schema=schema, max_tokens=16, temperature=0.0))
        outputs.append(gen.text)
        return gen.text

    try:
        c = Consolidator(mem, mem.cfg, generate=generate, model="small")
        await _say(mem, "d", ["the water valve is under the sink"])  # no cue: classified
        r = await c.run()
    finally:
        await pool.close()
    # every answer was valid JSON of the schema (constrained decoding), and the probe's
    # verdict decides whether the model or the embeddings classify
    assert outputs and all(json.loads(o)["kind"] in ("fact", "preference", "decision", "none")
                           for o in outputs)
    assert r.kind_model["model"] == "small" and "/" in r.kind_model["score"]
    right = int(r.kind_model["score"].split("/")[0])
    assert r.kind_model["used"] == (right >= 7)
    if not r.kind_model["used"]:  # SmolLM2-135M: the embeddings decided
        assert _texts(mem, "d") == {"The water valve is under the sink": "fact"}


def test_a_crash_mid_consolidation_then_a_rerun_equals_a_clean_run(tmp_path, minilm):
    """SIGKILL `edged memory consolidate` after its first session commits; rerun; the
    memories equal those of an uninterrupted run over the same turns."""
    lines = ["I like the {room} at {n} degrees", "my {rel} is called {name}",
             "we decided to paint the {room} {colour}", "the {room} window sticks",
             "actually I prefer the {room} at {m} degrees", "my {rel} is called {name}"]
    rooms = ["bedroom", "kitchen", "office", "hall", "attic", "study", "lounge", "nursery"]
    rels = ["sister", "brother", "aunt", "uncle", "cousin", "niece", "nephew", "daughter"]

    async def script(path: Path, n_dev: int) -> None:
        m = Memory(MemoryConfig(), path, embed=lambda t: asyncio.to_thread(minilm.embed, t),
                   embedder_id=EMBEDDER)
        await m.open()
        for d in range(n_dev):
            room, rel = rooms[d % 8], rels[(d * 3) % 8]
            await _say(m, f"dev{d:02d}", [x.format(
                room=room, n=17 + d % 5, m=22 + d % 3, rel=rel, name=f"Name{d}",
                colour=["blue", "green"][d % 2]) for x in lines])
        await m.close()

    n_dev = 40
    crash_db, clean_db = tmp_path / "crash" / "memory.db", tmp_path / "clean" / "memory.db"
    asyncio.run(script(crash_db, n_dev))
    asyncio.run(script(clean_db, n_dev))

    def cfg_for(db: Path) -> Path:
        p = db.parent / "edged.toml"
        p.write_text(f'[storage]\npath = "{db.parent / "edged.db"}"\n'
                     f'[memory]\npath = "{db}"\nembedder = "{EMBEDDER}"\n')
        return p

    def checkpoints(db: Path) -> int:
        s = MemoryStore(db)
        s.open()
        try:
            return s.conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        finally:
            s.close()

    cmd = [sys.executable, "-m", "edged", "memory", "consolidate", "-c"]
    proc = subprocess.Popen(cmd + [str(cfg_for(crash_db))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: checkpoints(crash_db) >= 1, 60, "the first session's checkpoint",
                 interval=0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    done_before = checkpoints(crash_db)
    assert 1 <= done_before < n_dev, "the kill must land mid-way"
    for db in (crash_db, clean_db):
        out = subprocess.run(cmd + [str(cfg_for(db))], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        # progress for the operator (every 10% off a terminal), then the report
        todo = n_dev if db == clean_db else n_dev - done_before
        assert f"consolidated sessions: {todo}/{todo} (100%)" in out.stderr, out.stderr
        assert json.loads(out.stdout)["sessions"] == todo
    assert checkpoints(crash_db) == checkpoints(clean_db) == n_dev

    def state(db: Path) -> list[tuple[Any, ...]]:
        s = MemoryStore(db)
        s.open()
        try:
            rows = s.list(None, limit=10_000)
            n_vec = s.conn.execute("SELECT COUNT(*) FROM vec_memories").fetchone()[0]
            assert n_vec == len(rows)  # every memory has exactly one vector
            return sorted((r.scope, r.kind, r.text, tuple(r.sources)) for r in rows)
        finally:
            s.close()

    crashed, clean_ = state(crash_db), state(clean_db)
    assert crashed == clean_
    # per device: the preference (said, then changed: one memory), the relative (said
    # twice: one memory), the decision, mostly the window too
    assert 3 * n_dev <= len(crashed) <= 4 * n_dev


# -- the daemon: agents, tools, governor, re-embedding, CLI ---------------------------------------

MEMORY_AGENT = f"""
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 1

[agents.house]
model = "small"
description = "Controls lights and heating, and remembers things."
tools = ["home.*", "memory.*", "timers.*"]

[router]
default_agent = "house"

[plugins]
dirs = ["{ROOT / 'plugins'}"]
"""


async def _ask(p, device: str, text: str, n: int = 0) -> dict[str, Any]:
    rid = f"{device}-{abs(hash(text)) % 10**8}-{n}"
    p.publish(f"edged/in/{device}", json.dumps({"id": rid, "text": text}))
    [m] = await asyncio.to_thread(
        p.wait_count, 1, 60, lambda m: json.loads(m.payload).get("id") == rid)
    return json.loads(m.payload)


def _calls(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(c["tool"], c["arguments"]) for c in r["tool_calls"]]


async def test_agent_remembers_recalls_follows_up_and_forgets(broker, make_config, run_daemon,
                                                             capsys):
    cfg_path = make_config(extra=MEMORY_AGENT)
    d = await run_daemon(cfg_path, timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        r = await _ask(p, "panel", "remember that I like the bedroom at 19 degrees")
        # told, not commanded: stored at once (before the reply), said back, nothing run
        assert r["tool_calls"] == []
        assert r["text"] == "OK, I'll remember that you like the bedroom at 19 degrees."
        stored = await d.app.memory.run(d.app.memory.store.list, "panel")
        assert [m.text for m in stored] == ["I like the bedroom at 19 degrees"]
        # the preference fills the temperature that the request leaves open
        r = await _ask(p, "panel", "heat the bedroom")
        assert _calls(r) == [("home.set_temperature", {"degrees": 19.0, "room": "bedroom"})]
        assert "From memory: I like the bedroom at 19 degrees" in r["text"]
        # another device has no such memory: it is asked, not guessed
        r = await _ask(p, "kids-tablet", "heat the bedroom")
        assert r["tool_calls"] == [] and "degrees" in r["text"].lower()
        # a changed preference updates the memory instead of adding a second one
        r = await _ask(p, "panel", "remember that I like the bedroom at 21 degrees")
        assert r["tool_calls"] == [] and "you like the bedroom at 21 degrees" in r["text"]
        stored = await d.app.memory.run(d.app.memory.store.list, "panel")
        assert [m.text for m in stored] == ["I like the bedroom at 21 degrees"]
        r = await _ask(p, "panel", "heat the bedroom", n=1)
        assert _calls(r) == [("home.set_temperature", {"degrees": 21.0, "room": "bedroom"})]
        r = await _ask(p, "panel", "what do you know about the bedroom")
        assert r["tool_calls"] == []
        assert r["text"] == "You told me: you like the bedroom at 21 degrees."
        r = await _ask(p, "panel", "I'm allergic to cats")  # the whole statement is kept
        assert r["text"] == "OK, I'll remember that you're allergic to cats."
        r = await _ask(p, "panel", "what do you remember about me")
        assert "you like the bedroom at 21 degrees" in r["text"] and \
            "you're allergic to cats" in r["text"]
        # the memory tools stay for agents that list them: a plan may still call them
        r = await _ask(p, "panel", "forget that I'm allergic to cats")
        assert r["text"] == "OK, I've forgotten that you're allergic to cats."
        stored = await d.app.memory.run(d.app.memory.store.list, "panel")
        assert [m.text for m in stored] == ["I like the bedroom at 21 degrees"]
        # follow-ups: "it" is the last call's subject, "too" repeats it elsewhere
        r = await _ask(p, "panel", "turn on the kitchen light")
        assert _calls(r) == [("home.set_light", {"room": "kitchen", "on": True})]
        r = await _ask(p, "panel", "set it to 40 percent")
        assert _calls(r) == [("home.set_light", {"room": "kitchen", "on": True,
                                                 "brightness": 40})]
        r = await _ask(p, "panel", "and the bedroom too")
        assert _calls(r) == [("home.set_light", {"room": "bedroom", "on": True,
                                                 "brightness": 40})]
        r = await _ask(p, "panel", "turn it off")
        assert _calls(r) == [("home.set_light", {"room": "bedroom", "on": False,
                                                 "brightness": 40})]
        # every exchange is a pair of turns of the device's session
        turns = await d.app.memory.recent("panel")
        assert turns[-2].text == "turn it off" and turns[-1].role == "assistant"
        assert turns[-1].tools[0]["tool"] == "home.set_light"

        # the CLI sees the same database (the daemon keeps running: SQLite WAL)
        cfg = config.load(cfg_path)
        assert await asyncio.to_thread(
            cli.main, ["memory", "list", "--device", "panel", "-c", str(cfg_path)]) == 0
        assert "I like the bedroom at 21 degrees" in capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, [
            "memory", "search", "bedroom temperature", "--device", "panel", "-c",
            str(cfg_path), "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        assert found[0]["text"] == "I like the bedroom at 21 degrees"
        assert await asyncio.to_thread(
            cli.main, ["memory", "forget", "--device", "panel", "-c", str(cfg_path)]) == 0
        assert "1 memories, 1 vectors" in capsys.readouterr().out  # cats were forgotten
        s = MemoryStore(cfg.memory_path)
        s.open()
        try:
            assert s.list("panel") == [] and s.recent_turns("panel", max_turns=50,
                                                            max_tokens=10**6) == []
            assert s.conn.execute("SELECT COUNT(*) FROM vec_memories WHERE scope = 'panel'"
                                  ).fetchone()[0] == 0
        finally:
            s.close()
        r = await _ask(p, "panel", "heat the bedroom", n=2)
        assert r["tool_calls"] == []  # forgotten: asks again


async def test_consolidation_is_scheduled_and_deferred_by_the_governor(broker, make_config):
    class Sensors:  # a fake: this VM has no battery (psutil returns None)
        battery: float | None = None

        def read(self) -> Readings:
            return Readings(mem_available_mb=8000, mem_total_mb=16000, rss_mb=100, cpu_load=0.1,
                            battery_percent=self.battery, plugged=False)

    sensors = Sensors()
    # without the memory tools, and said without "remember" / "my ... is" (those are
    # stored at once): what the user says is left to consolidation
    agent = MEMORY_AGENT.replace('"home.*", "memory.*", "timers.*"', '"home.*"')
    cfg = config.load(make_config(extra=agent + "\n[memory]\nconsolidate_every_s = 1\n"))
    d = Daemon(cfg, sensors=sensors)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 60)
        await asyncio.wait_for(d.bus.subscribed.wait(), 60)
        with peer(broker.port) as p:
            p.subscribe("edged/events/+", "edged/out/+")
            await _ask(p, "hall", "our son is called Max")
            [ev] = await asyncio.to_thread(
                p.wait_count, 1, 30, lambda m: m.topic == "edged/events/memory_consolidated"
                and json.loads(m.payload)["data"]["added"] == 1)
            assert json.loads(ev.payload)["data"]["decisions"][0]["text"] == \
                "Our son is called Max"
            sensors.battery = 5.0
            await d.app.governor.check()
            assert d.app.governor.defer
            await asyncio.to_thread(p.wait_count, 1, 30,
                                    lambda m: m.topic == "edged/events/memory_deferred")
            await _ask(p, "hall", "our daughter is called Lea")
            assert await d.app.consolidate_memory() is None  # deferred while on low battery
            assert "Our daughter is called Lea" not in _texts(d.app.memory, "hall")
            sensors.battery = 90.0
            await d.app.governor.check()
            await asyncio.to_thread(
                p.wait_count, 1, 30, lambda m: m.topic == "edged/events/memory_consolidated"
                and json.loads(m.payload)["data"]["added"] == 1
                and "Lea" in json.loads(m.payload)["data"]["decisions"][0]["text"])
            status = json.loads(d.status_payload("online"))
            assert status["detail"]["memory"]["memories"] == 2
            assert status["detail"]["scheduler"][0]["job"] == "memory-consolidate"
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 30)


async def test_changing_the_embedder_reembeds_in_the_background(broker, make_config,
                                                                run_daemon, tmp_path):
    cfg_path = make_config(extra=MEMORY_AGENT)
    d = await run_daemon(cfg_path, timeout=60)
    for t in ["My son is called Max", "The spare key is under the mat",
              "I like the bedroom at 19 degrees"]:
        await d.app.memory.remember("hall", t, "fact")
    assert d.app.memory.store.dim == 384
    d.request_stop()
    await asyncio.wait_for(d.stopped.wait(), 30)
    # the same config with llama.cpp embeddings from SmolLM2 (576 dims)
    cfg_path.write_text(cfg_path.read_text().replace(
        "[router]", '[memory]\nembedder = "model:small"\n\n[router]'))
    with peer(broker.port) as p:
        p.subscribe("edged/events/+")
        d2 = await run_daemon(cfg_path, timeout=60)
        await asyncio.to_thread(p.wait_count, 1, 60,
                                lambda m: m.topic == "edged/events/memory_reembedded")
    st = await d2.app.memory.stats()
    assert st["dim"] == 576 and st["pending_vectors"] == 0 and st["memories"] == 3
    assert st["embedder"].startswith("model:small (llama_cpp")
    n_vec = await d2.app.memory.run(lambda: d2.app.memory.store.conn.execute(
        "SELECT COUNT(*) FROM vec_memories").fetchone()[0])
    assert n_vec == 3
    got = await d2.app.memory.recall("spare key", "hall", k=3, min_similarity=0)
    assert len(got) == 3 and all(len(r.text) > 0 for r in got)


def test_memory_config_errors_name_the_key():
    with pytest.raises(config.ConfigError, match=r"memory.model: expected one of \[models\]"):
        config.loads_dict({"memory": {"model": "nope"}})
    with pytest.raises(config.ConfigError, match=r"memory.embedder: 'model:<alias>'"):
        config.loads_dict({"memory": {"embedder": "model:nope"}})
    with pytest.raises(config.ConfigError, match=r"memory.min_similarity: expected"):
        config.loads_dict({"memory": {"min_similarity": 2}})


def test_cli_without_a_database_says_so(tmp_path, capsys):
    p = tmp_path / "e.toml"
    p.write_text(f'[storage]\npath = "{tmp_path / "edged.db"}"\n')
    assert cli.main(["memory", "list", "-c", str(p)]) == 1
    assert "no memory database" in capsys.readouterr().err


# -- clock jumps --------------------------------------------------------------------------------

def _libfaketime() -> str:
    for cand in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(cand):
            return cand
    raise RuntimeError("libfaketime is not installed; run: apt-get install -y libfaketime")


async def test_clock_jumps_neither_burst_nor_stall_consolidation(broker, make_config,
                                                                 daemon_process, tmp_path):
    """The daemon runs under libfaketime (a real process-wide wall-clock shift; the
    monotonic clock stays true): consolidation every 2 s keeps its rhythm when the wall
    clock jumps a day forward and then two days back, and requests still get replies."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {"LD_PRELOAD": _libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "DONT_FAKE_MONOTONIC": "1"}
    cfg = make_config(extra=MEMORY_AGENT + "\n[memory]\nconsolidate_every_s = 2\n")
    proc = daemon_process(cfg, env=env)
    proc.start(timeout=90)

    def is_run(m: Any) -> bool:
        return m.topic == "edged/events/memory_consolidated"

    with peer(broker.port) as p:
        p.subscribe("edged/events/+", "edged/out/+")
        p.wait_count(2, 30, is_run)
        for shift, word in (("+1d", "forward"), ("+0", "back")):
            before = len(p.wait_count(0, 1, is_run))
            t_jump = time.monotonic()
            tmp = offset.with_suffix(".new")  # atomically: the daemon reads it on every call
            tmp.write_text(f"{shift}\n")
            tmp.replace(offset)
            # paho stamps each message with the monotonic clock on arrival
            runs = [m.timestamp for m in p.wait_count(before + 3, 30, is_run)[before:]]
            gaps = [b - a for a, b in zip(runs, runs[1:], strict=False)]
            # no burst: runs stay about an interval apart; no stall: three came in time
            assert all(g > 1.0 for g in gaps), (shift, gaps)
            assert runs[0] - t_jump < 8.0, (shift, runs[0] - t_jump)
            try:
                r = await _ask(p, "hall", f"turn on the kitchen light ({word})")
            except TimeoutError:
                raise AssertionError(f"no reply after the jump; daemon log:\n"
                                     f"{proc.tail(80)}") from None
            assert r["tool_calls"][0]["tool"] == "home.set_light"
            wait_for(lambda w=word: f"wall clock jumped {w} by 86400 s" in proc.tail(400),
                     10, f"the {word} jump in the log")


async def test_scheduler_poll_jump_reschedules_on_the_monotonic_clock():
    """In-process check of the jump arithmetic (the wall clock injected here; the test above
    makes a real process-wide jump with libfaketime)."""
    import datetime as dt

    from edged.scheduler import Scheduler

    wall, mono = [1_000_000.0], [50.0]
    s = Scheduler(wall=lambda: wall[0], mono=lambda: mono[0], jump_s=30)
    heard: list[float] = []
    s.on_jump(heard.append)

    async def job() -> None:
        return None

    s.every("j", 100, job, first_in=40)
    wall[0] += 10
    mono[0] += 10
    assert s.poll_jump() == 0.0  # both clocks moved together: no jump
    wall[0] += 86400  # NTP steps the wall clock a day forward
    assert s.poll_jump() == 86400.0 and heard == [86400.0]
    nxt = s._aps.get_job("j").next_run_time
    assert nxt == dt.datetime.fromtimestamp(wall[0] + 30, dt.UTC)  # 30 s were left
    wall[0] -= 2 * 86400  # and two days back
    assert s.poll_jump() == -2 * 86400.0
    assert s._aps.get_job("j").next_run_time == dt.datetime.fromtimestamp(wall[0] + 30, dt.UTC)
    assert s.describe()[0]["next_in_s"] == 30.0
