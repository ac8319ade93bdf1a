"""The connection to the cloud LLM behind :mod:`edged.escalation`.

One OpenAI-compatible client (:class:`~edged.models.openai.OpenAIBackend`), made on first
use, called on two threads of its own so the event loop never waits on the network; and
whether the cloud is reachable, learnt from real calls and from a cheap probe (``GET
/models``): a connection error, timeout, 5xx or 429 marks it offline and drops the client
(the next call connects anew), an answer marks it online. Each change is logged and
published as a ``cloud_online`` / ``cloud_offline`` event (not the first "online").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from .config import CloudConfig, ConfigError, ModelConfig
from .models import Generation, GenerationRequest, ModelError, Unreachable

if TYPE_CHECKING:
    from .models.openai import OpenAIBackend

log = logging.getLogger("edged.cloud")

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class CloudLink:
    """The cloud client and its state: ``unknown``, ``online`` or ``offline``."""

    def __init__(self, cfg: CloudConfig, *, emit: Emit) -> None:
        self.cfg = cfg
        self._emit = emit
        self.state = "unknown"  # unknown | online | offline
        self.last_error = ""
        self._backend: OpenAIBackend | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="edged-cloud")
        self._online = asyncio.Event()

    def _client(self) -> OpenAIBackend:
        if self._backend is None:
            from .models.openai import OpenAIBackend

            mcfg = ModelConfig(backend="openai", base_url=self.cfg.base_url,
                               model=self.cfg.model or None,
                               api_key_file=self.cfg.api_key_file, timeout_s=self.cfg.timeout_s)
            b = OpenAIBackend("cloud", mcfg, key_env="EDGED_CLOUD_API_KEY",
                              key_file_key="cloud.api_key_file", max_attempts=2)
            try:
                b.load()  # its GET /models probe: an unreachable cloud fails here
            except ConfigError as e:
                raise ModelError(str(e)) from None
            self._backend = b
        return self._backend

    async def _in_thread(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._backend is not None:
            await self._in_thread(self._backend.unload)
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def mark(self, state: str, error: str = "") -> None:
        """The cloud is ``state`` ("online" or "offline", with why)."""
        if state == "offline":
            self.last_error = error
        if state == self.state:
            return
        old, self.state = self.state, state
        if state == "online":
            self._online.set()
            log.info("cloud %s: online", self.cfg.base_url)
        else:
            self._online.clear()
            log.warning("cloud %s: offline (%s)", self.cfg.base_url, error)
        if old != "unknown" or state == "offline":
            await self._emit(f"cloud_{state}", {"error": error[:300]} if error else {})

    async def generate(self, req: GenerationRequest) -> Generation:
        """One completion. Unreachable (re-raised) drops the client; marking the cloud
        online or offline is the caller's."""
        def call() -> Generation:
            backend = self._client()
            return backend.generate(req)
        try:
            return await self._in_thread(call)
        except Unreachable:
            self.reset()
            raise

    def reset(self) -> None:
        """Drop the client: the next call connects anew."""
        b, self._backend = self._backend, None
        if b is not None:
            try:
                b.unload()
            except Exception:  # noqa: BLE001 - best effort
                pass

    async def probe(self) -> bool:
        """Is the cloud reachable now? Marks it online or offline."""
        try:
            def probe() -> None:
                self._client().probe()
            await self._in_thread(probe)
        except ModelError as e:
            self.reset()
            await self.mark("offline", str(e))
            return False
        await self.mark("online")
        return True
