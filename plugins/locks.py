"""Example plugin: door locks.

Pair it with an [[acl]] rule: kids' devices get deny = ["locks.*"].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from edged.plugin import ToolContext, tool

Door = Literal["front door", "back door", "garage"]


def _set(ctx: ToolContext, door: str, locked: bool) -> dict:
    path = Path(ctx.state_dir) / "locks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(path.read_text()) if path.exists() else {}
    state[door] = locked
    path.write_text(json.dumps(state))
    return {"door": door, "locked": locked}


@tool(examples=[("unlock the front door", {"door": "front door", "locked": False}),
                ("lock the back door", {"door": "back door", "locked": True}),
                ("open the garage lock", {"door": "garage", "locked": False}),
                ("lock up the house", {"door": "front door", "locked": True})],
      aliases={"door": {"front": "front door", "back": "back door", "main door": "front door"}})
def set_lock(door: Door, locked: bool, *, ctx: ToolContext) -> dict:
    """Lock or unlock a door.

    Args:
        door: Which door.
        locked: True to lock, False to unlock.
    """
    return _set(ctx, door, locked)
