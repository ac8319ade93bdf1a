"""Plugins are contained: tools that hang, exit or interrupt, and imports that never finish,
cost an error result or a skipped plugin, never the daemon, its bus or its other tools.

Real parts throughout: plugin files written to tmp_path, the real runner and registry, and
for the end-to-end tests the daemon (in-process or as a process) on a private mosquitto with
the MiniLM tool selection."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.messages import Request
from edged.tools import registry
from edged.tools.acl import ACL
from edged.tools.runner import ToolRunner

from .harness import Peer, peer, wait_for, write_config


def _write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def _req(rid: str = "r1") -> Request:
    return Request(id=rid, topic="edged/in/d1", device="d1", text="x")


async def _until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll a condition on the event loop (the daemon runs in it) until it holds."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event plugins can block on (``import edged_test_gate``), released at the end so no
    thread outlives the test."""
    mod = types.ModuleType("edged_test_gate")
    mod.GATE = threading.Event()  # type: ignore[attr-defined]
    sys.modules["edged_test_gate"] = mod
    yield mod.GATE  # type: ignore[attr-defined]
    mod.GATE.set()  # type: ignore[attr-defined]
    sys.modules.pop("edged_test_gate", None)


HOSTILE = '''
    import asyncio, sys, threading
    import edged_test_gate
    from edged import tool

    STARTED = []
    CANCELLED = []

    @tool(timeout_s=0.5)
    def hang() -> str:
        """Block until released."""
        STARTED.append(threading.current_thread().name)
        edged_test_gate.GATE.wait()
        return "released"

    @tool
    def leave() -> str:
        """Exit the process."""
        sys.exit(0)

    @tool
    async def interrupt() -> str:
        """Raise KeyboardInterrupt on the event loop."""
        raise KeyboardInterrupt

    @tool
    async def async_exit() -> str:
        """Exit from a coroutine."""
        sys.exit(3)

    @tool
    def generator_exit() -> str:
        """Raise GeneratorExit."""
        raise GeneratorExit("bye")

    @tool
    async def own_cancel() -> str:
        """Raise CancelledError without being cancelled."""
        raise asyncio.CancelledError

    class Evil:
        def __repr__(self) -> str:
            sys.exit(4)

    @tool
    def evil_result() -> object:
        """Return a value whose repr exits."""
        return Evil()

    STOP = []

    @tool(timeout_s=0.3)
    async def stubborn() -> str:
        """Ignore cancellation."""
        while not STOP:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                CANCELLED.append("ignored")
        return "stopped"

    @tool
    async def slow_async() -> str:
        """Wait a long time, politely."""
        STARTED.append("slow_async")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            CANCELLED.append("slow_async")
            raise
        return "done"
'''


def _hostile_runner(tmp_path: Path, **kw: Any) -> tuple[ToolRunner, types.ModuleType]:
    _write(tmp_path / "p", "bad.py", HOSTILE)
    reg = registry.load([str(tmp_path / "p")], builtin=False, entry_points=False)
    assert not reg.errors, reg.errors
    return ToolRunner(reg, ACL([]), state_dir=tmp_path, **kw), sys.modules["edged_plugin_bad"]


async def _call(runner: ToolRunner, name: str, rid: str = "r1") -> Any:
    return (await runner.call(name, {}, request=_req(rid), agent="a", agent_tools=None)).result


async def test_base_exceptions_become_error_results(tmp_path, gate):
    runner, _ = _hostile_runner(tmp_path)
    for name, kind in [("bad.leave", "SystemExit: 0"), ("bad.interrupt", "KeyboardInterrupt"),
                       ("bad.async_exit", "SystemExit: 3"),
                       ("bad.generator_exit", "GeneratorExit: bye"),
                       ("bad.own_cancel", "CancelledError"), ("bad.evil_result", "SystemExit: 4")]:
        res = await _call(runner, name)
        assert isinstance(res, dict) and res["error"].startswith(kind), (name, res)
    assert runner.stats["errors"] == 6
    # the loop and the runner are fine afterwards
    gate.set()
    assert await _call(runner, "bad.hang") == "released"


async def test_sync_tools_have_a_bounded_pool_of_their_own(tmp_path, gate):
    """Two threads, one waiting place: the third call waits, the fourth is refused at once;
    a call that timed out waiting never runs; once every thread is held by an abandoned
    call, new calls are refused at once; released threads serve again."""
    runner, mod = _hostile_runner(tmp_path, threads=2, max_waiting=1)
    first = [asyncio.create_task(_call(runner, "bad.hang", f"h{i}")) for i in range(2)]
    await _until(lambda: len(mod.STARTED) == 2, 5, "two tools running")
    third = asyncio.create_task(_call(runner, "bad.hang", "h2"))
    await _until(lambda: runner.threads.busy == 2 and runner.stats["calls"] == 3, 5,
                 "the third call waiting")
    t0 = time.monotonic()
    fourth = await _call(runner, "bad.hang", "h3")
    assert time.monotonic() - t0 < 0.3
    assert fourth == {"error": "bad.hang not run: all 2 tool threads are busy and the wait "
                               "queue (1) is full"}
    assert [r["error"] for r in await asyncio.gather(*first)] == [
        "bad.hang timed out after 0.5 s"] * 2
    assert (await third)["error"] == \
        "bad.hang timed out after 0.5 s waiting for a free tool thread"
    assert runner.threads.busy == 2  # abandoned, still counted
    t0 = time.monotonic()
    stuck = await _call(runner, "bad.hang", "h4")
    assert time.monotonic() - t0 < 0.3
    assert "all 2 tool threads are held by calls that timed out (bad.hang)" in stuck["error"]
    assert runner.stats["busy"] == 2 and runner.stats["timeouts"] == 3
    gate.set()
    await _until(lambda: runner.threads.busy == 0, 5, "the hung threads to return")
    assert await _call(runner, "bad.hang", "h5") == "released"
    # the waiting call was dropped, never run; no thread of the loop's default pool was used
    assert len(mod.STARTED) == 3
    assert all(n.startswith("edged-tool-") for n in mod.STARTED), mod.STARTED


async def test_caller_cancellation_propagates_and_unstarted_calls_never_run(tmp_path, gate):
    runner, mod = _hostile_runner(tmp_path, threads=1, max_waiting=1)
    running = asyncio.create_task(_call(runner, "bad.hang", "c0"))
    await _until(lambda: len(mod.STARTED) == 1, 5, "the tool running")
    queued = asyncio.create_task(_call(runner, "bad.hang", "c1"))
    await _until(lambda: runner.stats["calls"] == 2, 5, "the second call waiting")
    for t in (queued, running):
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled()
    slow = asyncio.create_task(_call(runner, "bad.slow_async", "c2"))
    await _until(lambda: "slow_async" in mod.STARTED, 5, "the async tool running")
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    await _until(lambda: "slow_async" in mod.CANCELLED, 5, "the async tool cancelled")
    gate.set()
    await _until(lambda: runner.threads.busy == 0, 5, "the thread to return")
    assert await _call(runner, "bad.hang", "c3") == "released"
    assert mod.STARTED.count("slow_async") == 1
    assert len(mod.STARTED) == 3  # c0, slow_async and c3: the cancelled waiting call never ran


async def test_async_tool_that_ignores_cancellation_still_times_out(tmp_path, gate):
    runner, mod = _hostile_runner(tmp_path)
    t0 = time.monotonic()
    res = await _call(runner, "bad.stubborn")
    assert res == {"error": "bad.stubborn timed out after 0.3 s"}
    assert time.monotonic() - t0 < 2
    await _until(lambda: mod.CANCELLED == ["ignored"], 5, "the cancel delivered")
    assert len(runner._orphans) == 1  # left behind, still referenced
    mod.STOP.append(True)  # let it end, so the test's loop closes cleanly
    await _until(lambda: not runner._orphans, 5, "the left-behind tool to end")


async def test_runner_health_names_the_hung_tools(tmp_path, gate):
    runner, mod = _hostile_runner(tmp_path, threads=2, stuck_after_s=0.05)
    assert runner.health() is None
    calls = [asyncio.create_task(_call(runner, "bad.hang", f"s{i}")) for i in range(2)]
    await _until(lambda: len(mod.STARTED) == 2, 5, "both threads busy")
    problem = await _until(runner.health, 5, "the runner to report the hung threads")
    assert problem == "all 2 tool threads busy for more than 0.05 s (bad.hang x2)"
    await asyncio.gather(*calls)
    gate.set()
    await _until(lambda: runner.threads.busy == 0, 5, "the threads to return")
    assert runner.health() is None


def test_plugin_import_that_hangs_is_reported_and_skipped(tmp_path, gate):
    folder = tmp_path / "plugins"
    _write(folder, "a_frozen.py", '''
        import edged_test_gate
        from edged import tool

        edged_test_gate.GATE.wait()  # a blocking call at module level

        @tool
        def never() -> str:
            """Never registered."""
            return "no"
    ''')
    _write(folder, "b_interrupts.py", "raise KeyboardInterrupt\n")
    _write(folder, "c_good.py", '''
        import json
        from edged import tool

        @tool
        def ok() -> str:
            """Fine."""
            return json.dumps("ok")
    ''')
    t0 = time.monotonic()
    reg = registry.load([str(folder)], builtin=False, entry_points=False, import_timeout_s=0.5)
    assert time.monotonic() - t0 < 3
    assert list(reg.tools) == ["c_good.ok"]
    errors = {e.plugin: e.error for e in reg.errors}
    assert errors["a_frozen"] == ("import did not finish within 0.5 s "
                                  "(plugins.import_timeout_s); abandoned")
    assert errors["b_interrupts"].startswith("import failed: KeyboardInterrupt")
    assert [h for h in registry.hung_imports() if "a_frozen.py" in h]
    # a reload does not pile up threads behind the hung one, nor wait for it again
    again = registry.load([str(folder)], builtin=False, entry_points=False,
                          import_timeout_s=0.5)
    assert "still hangs" in {e.plugin: e.error for e in again.errors}["a_frozen"]
    assert "c_good.ok" in again.tools
    assert sum(t.name == "edged-import-a_frozen" for t in threading.enumerate()) == 1
    # a fixed file is imported again even while the old import hangs
    _write(folder, "a_frozen.py", '''
        from edged import tool

        @tool
        def thawed() -> str:
            """Fixed."""
            return "yes"
    ''')
    os.utime(folder / "a_frozen.py", ns=(time.time_ns(), time.time_ns() + 10**9))
    fixed = registry.load([str(folder)], builtin=False, entry_points=False, import_timeout_s=5)
    assert "a_frozen.thawed" in fixed.tools
    gate.set()
    wait_for(lambda: not [h for h in registry.hung_imports() if "a_frozen.py" in h], 5,
             "the abandoned import to end")


def test_config_keys_are_validated_with_their_path(tmp_path):
    cfg = config.load(_write(tmp_path, "ok.toml", "[plugins]\n"))
    assert (cfg.plugins.tool_threads, cfg.plugins.import_timeout_s) == (4, 10.0)
    for line, want in [
            ("tool_threads = 0", "plugins.tool_threads: expected int >= 1, got int 0"),
            ("tool_threads = 65", "plugins.tool_threads: expected int <= 64, got int 65"),
            ("import_timeout_s = 0", "plugins.import_timeout_s: expected float > 0.0, got int 0")]:
        with pytest.raises(config.ConfigError) as e:
            config.load(_write(tmp_path, "bad.toml", f"[plugins]\n{line}\n"))
        assert str(e.value).endswith(f"bad.toml: {want}")


# ------------------------------------------------------------------------------------------
# End to end: the daemon on a real broker


BELT = '''
    import threading
    from edged import tool

    GATE = threading.Event()
    STARTED = []

    @tool(timeout_s=2, examples=["hold the conveyor belt", "stop the conveyor belt"])
    def hold() -> str:
        """Hold the conveyor belt until it is released."""
        STARTED.append(threading.current_thread().name)
        GATE.wait()
        return "released"
'''

WEATHER = '''
    import asyncio
    from edged import tool

    @tool(examples=["will it rain today", "what is the weather forecast"])
    async def forecast() -> str:
        """Tell the weather forecast."""
        await asyncio.sleep(0)
        return "sunny"
'''


def _agent(plugdir: Path, tools: str) -> str:
    return f"""
[agents.plant]
description = "Runs the plant."
tools = [{tools}]
memory = false

[router]
default_agent = "plant"

[memory]
enabled = false

[plugins]
dirs = ["{plugdir}"]
"""


def _ask(p: Peer, rid: str, text: str, agent: str | None = None, device: str = "line1",
         timeout: float = 60) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "text": text}
    if agent:
        body["agent"] = agent
    p.publish(f"edged/in/{device}", json.dumps(body))
    return _reply(p, rid, timeout)


def _reply(p: Peer, rid: str, timeout: float = 60) -> dict[str, Any]:
    [m] = p.wait_count(1, timeout, lambda m: m.topic.startswith("edged/out/")
                       and json.loads(m.payload).get("id") == rid)
    return json.loads(m.payload)


async def test_hung_sync_tools_cost_neither_the_bus_nor_other_requests(
        tmp_path, broker, make_config, run_daemon):
    """More hung calls than the loop's default thread pool has threads: before, they
    starved it and the bus never reconnected after a broker restart."""
    plugdir = tmp_path / "plugins"
    _write(plugdir, "belt.py", BELT)
    _write(plugdir, "weather.py", WEATHER)
    d = await run_daemon(make_config(extra=_agent(plugdir, '"belt.*", "weather.*"')), timeout=60)
    belt = sys.modules["edged_plugin_belt"]
    # the test's own blocking waits get their own threads: the loop's default pool is the
    # daemon's, and before the fix it is exactly what the hung tools starved
    waits = ThreadPoolExecutor(2, thread_name_prefix="test-wait")

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(waits, fn, *args)

    try:
        with peer(broker.port) as p:
            p.subscribe("edged/out/+")

            def burst(prefix: str, n: int) -> list[dict[str, Any]]:
                for i in range(n):
                    p.publish("edged/in/line1", json.dumps(
                        {"id": f"{prefix}{i}", "text": "hold the conveyor belt"}), wait=False)
                return [_reply(p, f"{prefix}{i}") for i in range(n)]

            first = await off_loop(burst, "a", 4)
            assert {c["tool"] for r in first for c in r["tool_calls"]} == {"belt.hold"}
            assert [r["tool_calls"][0]["result"]["error"] for r in first] == [
                "belt.hold timed out after 2 s"] * 4
            assert len(belt.STARTED) == 4 and d.app.runner.threads.busy == 4
            n = min(32, (os.cpu_count() or 1) + 4) + 2  # > the default executor's threads
            later = await off_loop(burst, "b", n)
            for r in later:
                assert r["tool_calls"][0]["tool"] == "belt.hold"
                assert r["tool_calls"][0]["result"]["error"] == (
                    "belt.hold not run: all 4 tool threads are held by calls that timed out "
                    "(belt.hold)")
            rows = await d.app.journal.query("SELECT count(*), max(duration_ms) FROM tool_calls "
                                         "WHERE outcome = 'busy'")
            assert rows[0][0] == n and rows[0][1] < 1000  # refused at once, not after 2 s
            assert len(belt.STARTED) == 4  # the refused calls never ran
            # other requests are answered: the echo agent, and an async tool on the loop
            assert (await off_loop(_ask, p, "e1", "hi", "echo"))["text"] == "hi"
            w = await off_loop(_ask, p, "w1", "will it rain today")
            assert [(c["tool"], c["result"]) for c in w["tool_calls"]] == [
                ("weather.forecast", "sunny")]
            # the watchdog's health sees the hung threads (at once, with a zero limit)
            assert await d.health() is None
            d.app.runner.stuck_after_s = 0.0
            assert (await d.health() or "").startswith("all 4 tool threads busy for more than")
            d.app.runner.stuck_after_s = 300.0
            assert d.bus is not None and d.bus.disconnected_since is None
            generation = d.bus.generation
            await off_loop(broker.restart)
        await _until(lambda: d.bus is not None and d.bus.generation > generation
                     and d.bus.subscribed.is_set(), 30, "the bus to reconnect")
        assert d.bus.disconnected_since is None and await d.health() is None
        with peer(broker.port) as p:
            p.subscribe("edged/out/+")
            assert (await off_loop(_ask, p, "e2", "hi again", "echo"))["text"] == \
                "hi again"
            w = await off_loop(_ask, p, "w2", "will it rain today")
            assert w["tool_calls"][0]["result"] == "sunny"
            belt.GATE.set()
            await _until(lambda: d.app.runner.threads.busy == 0, 10, "the hung threads to return")
            r = await off_loop(_ask, p, "a9", "hold the conveyor belt")
            assert r["tool_calls"][0]["result"] == "released"
    finally:
        belt.GATE.set()
        waits.shutdown(wait=False, cancel_futures=True)


def test_tools_that_exit_or_interrupt_do_not_end_the_daemon(tmp_path, broker, daemon_process):
    plugdir = tmp_path / "plugins"
    _write(plugdir, "reactor.py", '''
        import sys
        from edged import tool

        @tool(examples=["shut down the reactor", "switch the reactor off"])
        def shutdown() -> str:
            """Shut down the nuclear reactor."""
            sys.exit(0)

        @tool(examples=["feed the goldfish", "give the fish some food"])
        async def feed() -> str:
            """Feed the goldfish in the aquarium."""
            raise KeyboardInterrupt

        @tool(examples=["water the cactus", "give the cactus some water"])
        def water() -> str:
            """Water the cactus on the windowsill."""
            raise GeneratorExit("dry")
    ''')
    cfg = write_config(tmp_path / "edged.toml", broker, db=tmp_path / "edged.db",
                       extra=_agent(plugdir, '"reactor.*"'))
    d = daemon_process(cfg).start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        for i, (text, tool, error) in enumerate([
                ("shut down the reactor", "reactor.shutdown", "SystemExit: 0"),
                ("feed the goldfish", "reactor.feed", "KeyboardInterrupt"),
                ("water the cactus", "reactor.water", "GeneratorExit: dry")]):
            r = _ask(p, f"x{i}", text)
            assert r["tool_calls"][0]["tool"] == tool, r
            assert r["tool_calls"][0]["result"]["error"].startswith(error), r
            assert d.proc is not None and d.proc.poll() is None, d.tail()
            assert _ask(p, f"e{i}", "still there?", "echo")["text"] == "still there?"
    assert d.proc.poll() is None
    assert d.terminate() == 0  # and it still stops cleanly when asked


GARDEN = '''
    from edged import tool

    @tool(examples=["water the garden", "turn on the sprinklers"])
    def water(minutes: int = 10) -> str:
        """Water the garden with the sprinklers."""
        return f"watering for {minutes} minutes"
'''
FROZEN = '''
    import time
    from edged import tool

    time.sleep(10**6)  # e.g. a blocking network call at module level

    @tool
    def thaw() -> str:
        """Never registered."""
        return "no"
'''


def test_daemon_starts_despite_a_plugin_import_that_hangs(tmp_path, broker, daemon_process):
    plugdir = tmp_path / "plugins"
    _write(plugdir, "frozen.py", FROZEN)  # imported before garden.py
    _write(plugdir, "garden.py", GARDEN)
    cfg = write_config(tmp_path / "edged.toml", broker, db=tmp_path / "edged.db",
                       extra=_agent(plugdir, '"garden.*", "frozen.*"'))
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/status")
        t0 = time.monotonic()
        d = daemon_process(cfg).start(timeout=90)
        assert time.monotonic() - t0 < 60  # the import timeout (10 s) plus start-up
        [st] = p.wait_count(1, 30, lambda m: m.topic == "edged/status"
                            and json.loads(m.payload).get("state") == "online")
        errors = json.loads(st.payload)["detail"]["plugin_errors"]
        assert [e for e in errors if e.startswith(
            "frozen: import did not finish within 10 s")], errors
        r = _ask(p, "g1", "water the garden")
    assert r["tool_calls"][0]["tool"] == "garden.water"
    assert r["tool_calls"][0]["result"].startswith("watering for")
    assert d.proc is not None and d.proc.poll() is None
    assert d.terminate() == 0  # the abandoned import thread does not keep it from exiting


def test_sighup_reload_returns_despite_a_plugin_import_that_hangs(tmp_path, broker,
                                                                  daemon_process):
    plugdir = tmp_path / "plugins"
    _write(plugdir, "garden.py", GARDEN)
    cfg = write_config(tmp_path / "edged.toml", broker, db=tmp_path / "edged.db",
                       extra=_agent(plugdir, '"garden.*", "frozen.*"'))
    d = daemon_process(cfg).start(timeout=60)
    assert d.proc is not None
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+")
        _write(plugdir, "frozen.py", FROZEN)
        (plugdir / "garden.py").write_text((plugdir / "garden.py").read_text()
                                           + textwrap.dedent('''

            @tool(examples=["mow the lawn", "cut the grass"])
            def mow() -> str:
                """Start the robot lawn mower."""
                return "mowing"
        '''))

        def reloaded(n: int) -> dict[str, Any]:
            got = p.wait_count(n, 60, lambda m: m.topic == "edged/events/plugins_reloaded")
            return json.loads(got[n - 1].payload)["data"]

        d.proc.send_signal(signal.SIGHUP)
        first = reloaded(1)
        assert [e for e in first["errors"] if e.startswith(
            "frozen: import did not finish within 10 s")], first
        r = _ask(p, "m1", "please cut the grass")
        assert r["tool_calls"][0]["tool"] == "garden.mow"
        assert r["tool_calls"][0]["result"] == "mowing"
        d.proc.send_signal(signal.SIGHUP)  # again, while that import still hangs
        second = reloaded(2)
        assert [e for e in second["errors"] if e.startswith("frozen: not imported")
                and "still hangs" in e], second
        assert second["tools"] == first["tools"]
        assert _ask(p, "e1", "hello", "echo")["text"] == "hello"
    assert d.proc.poll() is None
