"""Tools: schemas from signatures, drop-in discovery with failure isolation, ACL, runner."""

from __future__ import annotations

import asyncio
import enum
import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from edged import tool
from edged.config import ACLRule
from edged.journal import Journal
from edged.messages import Request
from edged.tools import registry
from edged.tools.acl import ACL
from edged.tools.base import ArgumentError, make_tool, parse_docstring
from edged.tools.runner import ToolRunner


class Mode(enum.Enum):
    HEAT = "heat"
    COOL = "cool"


class Window(msgspec.Struct):
    start: str
    end: str


def set_light(room: Literal["kitchen", "bedroom"], on: bool, brightness: int = 100,
              colour: str | None = None, tags: list[str] | None = None) -> dict:
    """Turn a light in a room on or off.

    Args:
        room: Which room.
        on: True to switch on.
        brightness: Percent, 0-100.
    """
    return {"room": room, "on": on}


def test_schema_from_signature_and_docstring():
    t = make_tool(set_light, name="home.set_light")
    p = t.parameters
    assert t.description == "Turn a light in a room on or off."
    assert p["type"] == "object" and p["additionalProperties"] is False
    assert p["required"] == ["room", "on"]
    assert p["properties"]["room"]["enum"] == ["bedroom", "kitchen"]
    assert p["properties"]["room"]["description"] == "Which room."
    assert p["properties"]["on"]["type"] == "boolean"
    assert p["properties"]["brightness"] == {"type": "integer", "default": 100,
                                             "description": "Percent, 0-100."}
    assert p["properties"]["colour"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert t.spec()["function"]["name"] == "home.set_light"


def test_enum_and_struct_parameters():
    def heat(mode: Mode, window: Window, level: float = 0.5) -> None:
        """Set the heating."""

    t = make_tool(heat, name="hvac.heat")
    assert t.parameters["properties"]["mode"]["$ref"] == "#/$defs/Mode"
    assert t.parameters["$defs"]["Mode"]["enum"] == ["cool", "heat"]
    assert t.parameters["$defs"]["Window"]["required"] == ["start", "end"]
    args = t.validate({"mode": "cool", "window": {"start": "07:00", "end": "09:00"}})
    assert args["mode"] is Mode.COOL and args["window"] == Window("07:00", "09:00")


def test_arguments_are_validated_before_any_call():
    t = make_tool(set_light, name="home.set_light")
    assert t.validate({"room": "kitchen", "on": True}) == {
        "room": "kitchen", "on": True, "brightness": 100, "colour": None, "tags": None}
    for bad, where in [({"room": "garage", "on": True}, "$.room"),
                       ({"room": "kitchen"}, "on"),
                       ({"room": "kitchen", "on": True, "extra": 1}, "extra"),
                       ({"room": "kitchen", "on": True, "brightness": "lots"}, "brightness")]:
        with pytest.raises(ArgumentError, match=where.replace("$", r"\$")):
            t.validate(bad)


def test_bad_tool_definitions_are_refused():
    def untyped(x):  # noqa: ANN001
        """Doc."""

    def no_doc(x: int) -> None:
        pass

    with pytest.raises(TypeError, match="needs a type hint"):
        make_tool(untyped)
    with pytest.raises(TypeError, match="docstring"):
        make_tool(no_doc)


def test_docstring_parsing():
    desc, params = parse_docstring("""Do a thing.

    More detail here.

    Args:
        a: first
            continued
        b (int): second
    Returns:
        nothing
    """)
    assert desc == "Do a thing."
    assert params == {"a": "first continued", "b": "second"}


def _write(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(textwrap.dedent(body))


def test_discovery_isolates_broken_plugins(tmp_path):
    _write(tmp_path, "good.py", '''
        from edged import tool

        @tool(examples=["say hi"], aliases={"who": {"mum": "mother"}})
        def greet(who: str) -> str:
            """Greet someone."""
            return f"hi {who}"

        def helper() -> None:
            pass
    ''')
    _write(tmp_path, "broken.py", "import nonexistent_module_xyz\n")
    _write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    _write(tmp_path, "badtool.py", '''
        from edged import tool

        @tool
        def nodoc(x: int) -> int:
            return x
    ''')
    _write(tmp_path, "_private.py", "raise RuntimeError('never imported')\n")
    reg = registry.load([str(tmp_path)], entry_points=False)
    assert "good.greet" in reg.tools and "clock.now" in reg.tools  # builtins load alike
    g = reg.tools["good.greet"]
    assert g.examples == ["say hi"] and g.aliases == {"who": {"mum": "mother"}}
    errors = {e.plugin: e.error for e in reg.errors}
    assert "ModuleNotFoundError" in errors["broken"] and "broken.py:1" in errors["broken"]
    assert "SystemExit" in errors["exits"]
    assert "docstring" in errors["badtool"]
    assert "_private" not in errors and set(errors) == {"broken", "exits", "badtool"}
    assert [t.name for t in reg.matching(["good.*"])] == ["good.greet"]


def test_reload_picks_up_changed_files(tmp_path):
    _write(tmp_path, "p.py", 'from edged import tool\n@tool\ndef a() -> int:\n'
                             '    """A."""\n    return 1\n')
    assert "p.a" in registry.load([str(tmp_path)], builtin=False, entry_points=False).tools
    _write(tmp_path, "p.py", 'from edged import tool\n@tool\ndef b() -> int:\n'
                             '    """B."""\n    return 2\n')
    tools = registry.load([str(tmp_path)], builtin=False, entry_points=False).tools
    assert "p.b" in tools and "p.a" not in tools


def test_acl_rules():
    acl = ACL([ACLRule(match="edged/in/kids-tablet", deny=["locks.*"]),
               ACLRule(match="guest", allow=["home.lights*", "clock.*"]),
               ACLRule(match="home/+/say", deny=["home.thermostat"])])
    assert not acl.check("locks.unlock", topic="edged/in/kids-tablet", device="kids-tablet").allowed
    assert acl.check("home.lights", topic="edged/in/kids-tablet", device="kids-tablet").allowed
    assert acl.check("home.lights_on", topic="edged/in/guest", device="guest").allowed
    refused = acl.check("locks.unlock", topic="edged/in/guest", device="guest")
    assert not refused.allowed and "allow list" in refused.reason
    assert not acl.check("home.thermostat", topic="home/kitchen/say", device="kitchen").allowed
    assert acl.check("locks.unlock", topic="edged/in/owner", device="owner").allowed


def _req(device: str = "d1", topic: str | None = None) -> Request:
    return Request(id="r1", topic=topic or f"edged/in/{device}", device=device, text="x")


@pytest.fixture
async def journal(tmp_path):
    j = Journal(tmp_path / "j.db")
    await j.open()
    yield j
    await j.close()


def _runner(tmp_path, journal, acl=None, **kw) -> tuple[ToolRunner, dict]:
    calls: dict[str, list] = {"unlock": [], "slow": [], "threads": []}
    _write(tmp_path, "locks.py", '''
        from edged import tool
        CALLS = []

        @tool
        async def unlock(door: str) -> str:
            """Unlock a door."""
            CALLS.append(door)
            return f"{door} unlocked"
    ''')
    _write(tmp_path, "misc.py", '''
        import asyncio, threading, time
        from edged import tool
        THREADS = []

        @tool(timeout_s=0.2)
        async def slow() -> str:
            """Take too long."""
            await asyncio.sleep(30)
            return "never"

        @tool
        def blocking(n: int) -> int:
            """A sync tool: runs in a worker thread."""
            THREADS.append(threading.current_thread().name)
            return n * 2

        @tool
        def explode() -> None:
            """Always fails."""
            raise ValueError("boom")
    ''')
    reg = registry.load([str(tmp_path)], builtin=False, entry_points=False)
    runner = ToolRunner(reg, acl or ACL([]), journal, **kw)
    calls["unlock"] = sys.modules["edged_plugin_locks"].CALLS
    calls["threads"] = sys.modules["edged_plugin_misc"].THREADS
    return runner, calls


async def test_runner_runs_validates_and_audits(tmp_path, journal):
    runner, calls = _runner(tmp_path, journal)
    ok = await runner.call("locks.unlock", {"door": "front"}, request=_req(), agent="house",
                           agent_tools=["locks.*"])
    assert ok.result == "front unlocked" and calls["unlock"] == ["front"]
    bad = await runner.call("locks.unlock", {"door": 5}, request=_req(), agent="house",
                            agent_tools=None)
    assert "invalid arguments" in bad.result["error"] and calls["unlock"] == ["front"]
    hidden = await runner.call("locks.unlock", {"door": "back"}, request=_req(),
                               agent="house", agent_tools=["home.*"])
    assert "may not use" in hidden.result["error"] and calls["unlock"] == ["front"]
    sync = await runner.call("misc.blocking", {"n": 21}, request=_req(), agent="a",
                             agent_tools=None)
    assert sync.result == 42 and calls["threads"] != [threading.current_thread().name]
    err = await runner.call("misc.explode", {}, request=_req(), agent="a", agent_tools=None)
    assert err.result == {"error": "ValueError: boom"}
    slow = await runner.call("misc.slow", {}, request=_req(), agent="a", agent_tools=None)
    assert "timed out after 0.2 s" in slow.result["error"]
    missing = await runner.call("nope.x", {}, request=_req(), agent="a", agent_tools=None)
    assert "no tool named" in missing.result["error"]
    rows = await journal.query("SELECT tool, outcome, device, arguments FROM tool_calls "
                               "ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [
        ("locks.unlock", "ok"), ("locks.unlock", "invalid"), ("locks.unlock", "refused"),
        ("misc.blocking", "ok"), ("misc.explode", "error"), ("misc.slow", "timeout"),
        ("nope.x", "unknown")]
    assert json.loads(rows[0][3]) == {"door": "front"} and rows[0][2] == "d1"


async def test_acl_refusal_is_enforced_before_the_tool_and_emitted(tmp_path, journal):
    events = []

    async def emit(kind, data):
        events.append((kind, data))

    acl = ACL([ACLRule(match="edged/in/kids-tablet", deny=["locks.*"])])
    runner, calls = _runner(tmp_path, journal, acl, emit=emit)
    # Whatever the model was talked into, the call is refused in code.
    res = await runner.call("locks.unlock", {"door": "front"},
                            request=_req("kids-tablet"), agent="house", agent_tools=None)
    assert res.result["error"].startswith("not allowed: acl[0]")
    assert calls["unlock"] == []
    assert events[0][0] == "tool_refused" and events[0][1]["device"] == "kids-tablet"
    rows = await journal.query("SELECT outcome, detail FROM tool_calls")
    assert rows == [("refused", "acl[0] (edged/in/kids-tablet) denies locks.*")]


async def test_tool_runs_at_most_once_per_request(tmp_path, journal):
    from edged.agents.base import Context

    runner, calls = _runner(tmp_path, journal)
    [inbox_id] = await journal.accept([_incoming()])

    async def no_emit(kind, data):
        pass

    for _ in range(3):  # e.g. the agent retried after a crash
        ctx = Context(journal, inbox_id, no_emit)
        res = await runner.call("locks.unlock", {"door": "front"}, request=_req(),
                                agent="house", agent_tools=None, ctx=ctx, step="s1")
        assert res.result == "front unlocked"
    assert calls["unlock"] == ["front"]


def _incoming():
    from edged.journal import Incoming, Meta
    return Incoming(key="i:x", key_is_content=False, topic="edged/in/d1", payload=b"x",
                    meta=Meta(device="d1"))


def test_tool_decorator_keeps_the_function_callable():
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add(2, 3) == 5
    assert asyncio.iscoroutinefunction(add) is False


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    """A package that declares an ``edged.plugins`` entry point (a real dist-info on
    sys.path, as pip would install it)."""
    site = tmp_path / "site"
    pkg = site / "edged_weather"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from edged import tool

        @tool(examples=["will it rain today"])
        def forecast(day: str = "today") -> str:
            """Tell the weather forecast."""
            return f"sunny {day}"
    '''))
    dist = site / "edged_weather-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edged-weather\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[edged.plugins]\nweather = edged_weather\n")
    monkeypatch.syspath_prepend(str(site))
    reg = registry.load([], builtin=False, entry_points=True)
    assert "weather.forecast" in reg.tools
    assert reg.plugins["weather"].startswith("entry point")


# -- the public plugin API (edged.plugin) and what the runner hands a tool -------------------

def test_plugin_api_is_public_light_and_re_exported():
    import subprocess

    import edged
    import edged.plugin as api
    import edged.tools as tools_pkg
    import edged.tools.base as base

    assert edged.tool is api.tool is tools_pkg.tool is base.tool
    assert api.ToolContext is tools_pkg.ToolContext is base.ToolContext
    assert api.ToolError is base.ToolError and issubclass(ArgumentError, api.ToolError)
    # the plugin API is a leaf: importing it loads neither the tools package nor the daemon
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from edged.plugin import ToolContext, tool; from edged import tool as t;"
        "print(sorted(m for m in sys.modules if m.startswith('edged')))")],
        capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['edged', 'edged.plugin']"


def test_tool_context_is_frozen_and_works_without_a_daemon(tmp_path):
    import dataclasses

    from edged.plugin import ToolContext

    ctx = ToolContext(request_id="r", device="d", topic="edged/in/d", agent="a",
                      state_dir=tmp_path)
    assert (ctx.text, ctx.reply_topic, ctx.publish, ctx.timers, ctx.memory) == \
        ("", "", None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.device = "other"  # type: ignore[misc]
    assert not hasattr(ctx, "__dict__")  # slots

    async def go():
        assert await ctx.unschedule("k") is False
        assert await ctx.scheduled("") == []
        with pytest.raises(RuntimeError, match="outside the daemon"):
            await ctx.schedule("k", 1.0, "t", b"x")
    asyncio.run(go())


async def test_plugin_outlet_publishes_and_schedules_through_the_journal(journal):
    from edged.plugin import Timers
    from edged.tools.outlet import PluginOutlet

    woke: list[str] = []
    outlet = PluginOutlet(journal, wake_outbox=lambda: woke.append("outbox"),
                          wake_timers=lambda: woke.append("timers"))
    timers: Timers = outlet
    await outlet.publish("home/kitchen/light", "on")
    [row] = await journal.outbox_fetch(10)
    assert (row.topic, row.payload, row.priority, row.kind) == \
        ("home/kitchen/light", b"on", 5, "plugin")
    await timers.schedule("p:d1:a", 2e9, "edged/out/d1", b"later")
    await timers.schedule("p:d1:b", 1e9, "edged/out/d1", "sooner")
    await timers.schedule("q:x", 3e9, "edged/out/d2", b"other")
    assert woke == ["outbox", "timers", "timers", "timers"]
    assert await timers.scheduled("p:d1:") == [("p:d1:b", 1e9), ("p:d1:a", 2e9)]
    assert await timers.unschedule("p:d1:a") is True
    assert await timers.unschedule("p:d1:a") is False
    assert [k for k, _ in await timers.scheduled()] == ["p:d1:b", "q:x"]
    for bad in ("", "home/+/light", "home/#", "a\x00b"):
        with pytest.raises(ValueError, match="not a valid MQTT topic"):
            await outlet.publish(bad, b"x")
        with pytest.raises(ValueError, match="not a valid MQTT topic"):
            await outlet.schedule("p:bad", 1.0, bad, b"x")
    assert len(woke) == 4 and [k for k, _ in await timers.scheduled("p:bad")] == []


async def test_runner_hands_a_tool_the_request_and_the_outlet(tmp_path, journal):
    from edged.tools.outlet import PluginOutlet

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "probe.py").write_text(textwrap.dedent('''
        from edged.plugin import ToolContext, tool

        SEEN = []


        @tool
        async def look(*, ctx: ToolContext) -> str:
            """Report what the context holds, then use it."""
            SEEN.append(ctx)
            await ctx.publish("home/probe", b"hello")
            await ctx.schedule("probe:" + ctx.device, 2e9, ctx.reply_topic, "later")
            return ctx.reply_topic
    '''))
    reg = registry.load([str(plugins)], builtin=False, entry_points=False)
    outlet = PluginOutlet(journal, wake_outbox=lambda: None, wake_timers=lambda: None)
    runner = ToolRunner(reg, ACL([]), journal, state_dir=tmp_path, outlet=outlet)
    req = Request(id="r9", topic="edged/in/d1", device="d1", text="look around",
                  reply_topic="edged/out/d1/r9")
    call = await runner.call("probe.look", {}, request=req, agent="a", agent_tools=None)
    assert call.result == "edged/out/d1/r9"
    [ctx] = sys.modules["edged_plugin_probe"].SEEN
    assert (ctx.request_id, ctx.device, ctx.topic, ctx.agent, ctx.text) == \
        ("r9", "d1", "edged/in/d1", "a", "look around")
    assert ctx.state_dir == tmp_path / "plugins" / "probe" and ctx.timers is outlet
    assert [r.topic for r in await journal.outbox_fetch(10)] == ["home/probe"]
    assert await journal.scheduled("probe:") == [("probe:d1", 2e9)]
    # no outlet: the tool gets neither publish nor timers (an error result, not a crash)
    bare = ToolRunner(reg, ACL([]), journal, state_dir=tmp_path)
    call = await bare.call("probe.look", {}, request=_req(), agent="a", agent_tools=None)
    assert "TypeError" in call.result["error"]
    assert sys.modules["edged_plugin_probe"].SEEN[-1].reply_topic == ""
