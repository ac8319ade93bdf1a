"""Sensitive tools (``@tool(confirm=True)``) through the running daemon over a real mosquitto:
a one-step local command runs them; a multi-step plan or the cloud gets a confirmation
request instead; only the same device's confirmation runs the call, once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edged.messages import Request

from .harness import peer

PLUGIN = '''
from edged import tool
from edged.tools import ToolContext


@tool(confirm=True, examples=["open the garage door", "open the garage"])
def open_door(*, ctx: ToolContext) -> str:
    """Open the garage door."""
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    with open(ctx.state_dir / "runs", "a") as f:
        f.write("x")
    return "The garage door is open."


@tool(examples=["turn on the garage light", "garage light on"])
def light_on() -> str:
    """Turn on the light in the garage."""
    return "The garage light is on."
'''


def _runs(tmp_path: Path) -> int:
    p = tmp_path / "plugins" / "garage" / "runs"
    return len(p.read_text()) if p.exists() else 0


async def test_sensitive_tools_wait_for_their_devices_confirmation(tmp_path, broker,
                                                                   make_config, run_daemon):
    plugins = tmp_path / "plugin-src"
    plugins.mkdir()
    (plugins / "garage.py").write_text(PLUGIN)
    d = await run_daemon(make_config(extra=(
        f'[plugins]\ndirs = ["{plugins}"]\n[memory]\nenabled = false\n'
        '[agents.garage]\ndescription = "The garage."\ntools = ["garage.*"]\n'
        '[router]\ndefault_agent = "garage"\n')), timeout=120)

    async def ask(p: Any, device: str, body: dict[str, Any]) -> dict[str, Any]:
        rid = f"r{len(p.messages)}-{device}"
        p.publish(f"edged/in/{device}", json.dumps({"id": rid, **body}))
        [m] = await asyncio.to_thread(p.wait_count, 1, 60,
                                      lambda m: json.loads(m.payload).get("id") == rid)
        return json.loads(m.payload)

    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        one = await ask(p, "car", {"text": "open the garage door"})
        assert [c["tool"] for c in one["tool_calls"]] == ["garage.open_door"]
        assert _runs(d.app.cfg.db_path.parent) == 1  # a one-step local command: no question

        two = await ask(p, "car", {"text": "turn on the garage light and open the garage"})
        light, door = two["tool_calls"]
        assert light["result"] == "The garage light is on."
        token = door["result"]["confirm"]
        assert "runs only after the device confirms" in two["text"]
        assert _runs(d.app.cfg.db_path.parent) == 1  # not run by a multi-step plan

        other = await ask(p, "intruder", {"data": {"confirm": token}, "agent": "garage"})
        assert "nothing to confirm" in other["text"] and not other["tool_calls"]
        yes = await ask(p, "car", {"data": {"confirm": token}})
        assert yes["text"] == "The garage door is open."
        assert _runs(d.app.cfg.db_path.parent) == 2
        again = await ask(p, "car", {"data": {"confirm": token}})
        assert "nothing to confirm" in again["text"]
        assert _runs(d.app.cfg.db_path.parent) == 2

    # the cloud's calls go through the same check
    req = Request(id="c1", topic="edged/in/car", device="car", text="open it")
    call = await d.app.runner.call("garage.open_door", {}, request=req, agent="garage",
                               agent_tools=None, plan="cloud")
    assert "confirm" in call.result and _runs(d.app.cfg.db_path.parent) == 2
    audit = await d.app.journal.query("SELECT outcome FROM tool_calls WHERE tool = ? ORDER BY id",
                                  "garage.open_door")
    assert [r[0] for r in audit] == ["ok", "needs_confirmation", "ok", "needs_confirmation"]
