"""The built-in ``echo`` agent: replies with the request text (connectivity checks, tests)."""

from __future__ import annotations

import msgspec

from ..messages import Reply, Request
from .base import Context


class EchoAgent:
    name = "echo"

    async def handle(self, request: Request, ctx: Context) -> Reply:
        text = request.text
        if not text and request.data is not None:
            text = msgspec.json.encode(request.data).decode()
        return Reply(id=request.id, agent=self.name, text=text)
