"""edged with one extra stage, ``probe``, whose side effect is observable from outside.

Run as ``python -m tests.probe_daemon run -c CONFIG`` with $EDGED_PROBE_FILE set. The probe
appends the request id to that file inside ``Context.once`` (edged's at-most-once step), so a
test can count how often each request's side effect really happened across SIGKILLs.
Optional $EDGED_PROBE_FAIL: a request whose text contains it raises (a failing tool).
"""

from __future__ import annotations

import os

from edged.agents.base import Context
from edged.cli import main
from edged.messages import Reply, Request, ToolCall


class ProbeAgent:
    name = "probe"

    def __init__(self, path: str, fail_marker: str | None) -> None:
        self.path = path
        self.fail_marker = fail_marker

    async def handle(self, request: Request, ctx: Context) -> Reply:
        if self.fail_marker and self.fail_marker in request.text:
            raise RuntimeError("probe asked to fail")

        async def effect() -> dict[str, object]:
            with open(self.path, "a", encoding="utf-8") as f:  # noqa: ASYNC230 - tiny append
                f.write(request.id + "\n")
            return {"written": request.id}

        result = await ctx.once("effect", effect)
        return Reply(id=request.id, agent=self.name, text=request.text,
                     tool_calls=[ToolCall(tool="probe.effect", arguments={}, result=result)])


if __name__ == "__main__":
    probe = ProbeAgent(os.environ["EDGED_PROBE_FILE"], os.environ.get("EDGED_PROBE_FAIL"))
    raise SystemExit(main(stages={"probe": probe}))
