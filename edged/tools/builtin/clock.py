"""Date and time on the gateway."""

from __future__ import annotations

import datetime as dt

from edged.plugin import tool


@tool(examples=["what time is it", "what's the date today", "what day is it"])
def now() -> dict[str, str]:
    """Tell the current local date, time and weekday."""
    t = dt.datetime.now().astimezone()
    return {"time": t.strftime("%H:%M"), "date": t.date().isoformat(),
            "weekday": t.strftime("%A"), "timezone": str(t.tzinfo)}
