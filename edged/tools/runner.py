"""Running a tool for a request: visibility, ACL, schema, at-most-once, timeout, audit.

Order of checks, all in code and before the tool runs: the tool exists; the agent may see it
(its ``tools`` patterns); the ACL allows it for this device/topic; the arguments validate
against its schema. Then it runs once per request (``Context.once``) with a timeout; sync
tools run on the runner's own bounded thread pool. Any failure, including SystemExit and
KeyboardInterrupt, becomes an error result for the agent, never an exception out of the agent
loop. Every call, run or refused, is written to the audit trail.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import msgspec

from ..journal import Journal, StepFailed, StepInDoubt
from ..messages import Request, ToolCall
from ..plugin import Memories, ToolContext
from .acl import ACL
from .base import ArgumentError, Tool, ToolCrashed
from .outlet import PluginOutlet
from .registry import Registry

log = logging.getLogger("edged.tools")


class ToolRunner:
    def __init__(self, registry: Registry, acl: ACL, journal: Journal | None = None, *,
                 default_timeout_s: float = 10.0,
                 emit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
                 state_dir: Path | None = None, outlet: PluginOutlet | None = None,
                 threads: int = 4, max_waiting: int | None = None,
                 stuck_after_s: float = 300.0) -> None:
        self.state_dir = state_dir or Path(".")
        self.outlet = outlet  # publish and timers for the tools (None: a tool gets neither)
        self.memory: Memories | None = None  # edged.memory.MemoryAccess once memory is open
        self.registry = registry
        self.acl = acl
        self.journal = journal
        self.default_timeout_s = default_timeout_s
        self._emit = emit
        self.stats = {"calls": 0, "errors": 0, "refused": 0, "timeouts": 0, "busy": 0}
        self.on_timing: Callable[[str, float], None] | None = None  # ("tool", seconds)
        # sync tools: our own threads, never the loop's default executor (see ToolThreads)
        self.threads = ToolThreads(threads, threads if max_waiting is None else max_waiting)
        self.stuck_after_s = stuck_after_s
        self._orphans: set[asyncio.Task[Any]] = set()  # async tools that ignored a cancel
        self.confirmations = Confirmations()

    def health(self) -> str | None:
        """Why the tools are unhealthy, or None: every tool thread held longer than
        ``stuck_after_s`` (threads cannot be killed; a restart is the way out)."""
        stuck = self.threads.stuck(self.stuck_after_s)
        if not stuck:
            return None
        names = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in Counter(stuck).items())
        return (f"all {self.threads.size} tool threads busy for more than "
                f"{self.stuck_after_s:g} s ({names})")

    async def confirm(self, token: str, *, request: Request, ctx: Any = None
                      ) -> ToolCall | None:
        """Run the call a device was asked to confirm (single use, its own device only, ACL
        checked again); None when there is none."""
        held = self.confirmations.take(token, request.device)
        if held is None:
            return None
        name, arguments, agent, agent_tools = held
        return await self.call(name, arguments, request=request, agent=agent,
                               agent_tools=agent_tools, ctx=ctx, step=f"confirm:{token}",
                               plan="confirmed")

    def visible(self, patterns: list[str] | None) -> list[Tool]:
        return self.registry.matching(patterns)

    async def call(self, name: str, arguments: dict[str, Any], *, request: Request,
                   agent: str, agent_tools: list[str] | None, ctx: Any = None,
                   step: str | None = None, plan: str = "local") -> ToolCall:
        """Run one tool call and return it with its result (``{"error": ...}`` on failure).
        ``plan``: "local" (a one-step local command), "multi" (one step of several), "cloud"
        (the cloud's call) or "confirmed"; a ``confirm`` tool runs only for local/confirmed."""
        t0 = time.perf_counter()
        audit: dict[str, Any] = {"inbox_id": getattr(ctx, "inbox_id", None),
                                 "request_id": request.id, "device": request.device,
                                 "topic": request.topic, "agent": agent, "tool": name,
                                 "arguments": _dump(arguments)}

        async def finish(outcome: str, result: Any, detail: str = "") -> ToolCall:
            took = time.perf_counter() - t0
            audit.update(outcome=outcome, detail=detail[:500], duration_ms=round(took * 1000, 2))
            if self.on_timing is not None:
                self.on_timing("tool", took)
            if self.journal is not None:
                try:
                    await self.journal.audit(**audit)
                except Exception as e:  # noqa: BLE001 - auditing must not break the reply
                    log.error("cannot record tool call audit: %s", e)
            return ToolCall(tool=name, arguments=arguments, result=result)

        tool = self.registry.get(name)
        if tool is None:
            self.stats["errors"] += 1
            return await finish("unknown", {"error": f"no tool named {name!r}"})
        if agent_tools is not None and not any(fnmatchcase(name, p) for p in agent_tools):
            self.stats["refused"] += 1
            return await finish("refused", {"error": f"agent {agent!r} may not use {name}"},
                                "not in the agent's tools")
        decision = self.acl.check(name, topic=request.topic, device=request.device)
        if not decision.allowed:
            self.stats["refused"] += 1
            log.warning("ACL refused %s for device %s on %s: %s", name, request.device,
                        request.topic, decision.reason)
            if self._emit is not None:
                await self._emit("tool_refused", {"tool": name, "device": request.device,
                                                  "topic": request.topic, "agent": agent,
                                                  "request_id": request.id,
                                                  "reason": decision.reason})
            return await finish("refused", {"error": f"not allowed: {decision.reason}"},
                                decision.reason)
        try:
            args = tool.validate(arguments)
        except ArgumentError as e:
            self.stats["errors"] += 1
            return await finish("invalid", {"error": str(e)}, str(e))

        if tool.confirm and plan not in ("local", "confirmed"):
            token = self.confirmations.hold(request.device, name, arguments, agent,
                                            agent_tools)
            return await finish("needs_confirmation", {
                "error": f"{name} is sensitive: it runs only after the device confirms "
                         f"(send {{\"data\": {{\"confirm\": \"{token}\"}}}} within "
                         f"{CONFIRM_TTL_S // 60:g} minutes)",
                "confirm": token}, f"{plan} plan")
        timeout = tool.timeout_s or self.default_timeout_s
        if tool.context_param:
            outlet = self.outlet
            args[tool.context_param] = ToolContext(
                request_id=request.id, device=request.device, topic=request.topic,
                agent=agent, text=request.text,
                state_dir=self.state_dir / "plugins" / tool.plugin,
                reply_topic=request.reply_topic or "",
                publish=outlet.publish if outlet is not None else None,
                timers=outlet, memory=self.memory)

        async def run() -> Any:
            if tool.is_async:
                return await self._run_async(tool, args, timeout)
            return await self._run_sync(tool, args, timeout)

        self.stats["calls"] += 1
        try:
            if ctx is not None:
                result = await ctx.once(step or f"tool:{name}", run)
            else:
                result = await run()
        except ToolsBusy as e:
            self.stats["busy"] += 1
            log.warning("tool %s refused: %s", name, e)
            return await finish("busy", {"error": f"{name} not run: {e}"}, str(e))
        except TimeoutError as e:
            self.stats["timeouts"] += 1
            why = " waiting for a free tool thread" if isinstance(e, _NoThread) else ""
            return await finish("timeout", {"error": f"{name} timed out after {timeout:g} s"
                                                     f"{why}"})
        except (StepInDoubt, StepFailed) as e:
            self.stats["errors"] += 1
            return await finish("not_rerun", {"error": str(e)}, str(e))
        except ToolCrashed as e:
            self.stats["errors"] += 1
            log.error("tool %s failed: %s", name, e)
            return await finish("error", {"error": str(e)}, str(e))
        except Exception as e:  # noqa: BLE001 - a tool's failure is the agent's error result
            self.stats["errors"] += 1
            log.warning("tool %s failed: %r", name, e)
            return await finish("error", {"error": f"{type(e).__name__}: {e}"}, repr(e))
        if self._emit is not None:
            await self._emit("tool_call", {"tool": name, "device": request.device,
                                           "agent": agent, "request_id": request.id})
        return await finish("ok", result)

    async def _run_sync(self, tool: Tool, args: dict[str, Any], timeout: float) -> Any:
        context = contextvars.copy_context()
        job = self.threads.submit(tool.name, lambda: context.run(_guarded, tool.func, args))
        try:
            ok, value = await asyncio.wait_for(job.future, timeout)
        except TimeoutError:
            if self.threads.give_up(job):
                raise _NoThread from None  # it never started and now never will
            raise  # still running: abandoned, its thread counts as busy until it returns
        except asyncio.CancelledError:
            self.threads.give_up(job)
            raise
        return _unwrap(ok, value)

    async def _run_async(self, tool: Tool, args: dict[str, Any], timeout: float) -> Any:
        async def guarded() -> tuple[bool, Any]:
            try:
                return True, _jsonable(await tool.func(**args))
            except asyncio.CancelledError as e:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise  # our cancel (timeout or the caller's): a real cancellation
                return False, e  # the tool's own CancelledError is just its error
            except BaseException as e:  # noqa: BLE001 - SystemExit must not end the loop
                return False, e

        # not wait_for: it waits for the cancelled tool to finish, and one that ignores
        # cancellation would hold the request forever; this one is left behind instead
        task = asyncio.create_task(guarded(), name=f"tool:{tool.name}")
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._orphans.add(task)
            task.add_done_callback(self._orphans.discard)
            raise TimeoutError
        ok, value = task.result()
        return _unwrap(ok, value)


class ToolsBusy(Exception):
    """Every tool thread is busy and the wait queue is full: the call is refused at once."""


class _NoThread(TimeoutError):
    """The timeout passed while the call waited for a thread (so it never ran)."""


@dataclass(eq=False)
class _Job:
    name: str
    fn: Callable[[], tuple[bool, Any]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[bool, Any]]
    started: float = 0.0
    abandoned: bool = False  # its caller gave up while it ran


class ToolThreads:
    """The sync tools' own bounded pool, apart from the loop's default executor that the MQTT
    reconnect, the embedder and the governor share: tools that never return exhaust this
    pool, never that one.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit (one hung tool would
    keep the daemon from ever exiting), its queue is unbounded and it cannot say which
    threads are stuck. Here the threads are daemon threads, at most ``size`` calls run and
    ``max_waiting`` wait; beyond that, or when every thread is held by a call whose caller
    gave up (abandoned: it counts as busy until it returns), a call is refused at once.
    """

    def __init__(self, size: int, max_waiting: int) -> None:
        self.size = size
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: set[_Job] = set()
        self._workers = 0

    def submit(self, name: str, fn: Callable[[], tuple[bool, Any]]) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(name, fn, loop, loop.create_future())
        with self._cond:
            busy = len(self._running)
            if sum(j.abandoned for j in self._running) >= self.size:
                raise ToolsBusy(f"all {self.size} tool threads are held by calls that timed "
                                f"out ({', '.join(sorted({j.name for j in self._running}))})")
            if busy + len(self._queue) >= self.size + self.max_waiting:
                raise ToolsBusy(f"all {self.size} tool threads are busy and the wait queue "
                                f"({self.max_waiting}) is full")
            self._queue.append(job)
            if self._workers - busy < len(self._queue) and self._workers < self.size:
                try:
                    threading.Thread(target=self._work, name=f"edged-tool-{self._workers + 1}",
                                     daemon=True).start()
                except RuntimeError as e:  # the process is out of threads
                    self._queue.remove(job)
                    raise ToolsBusy(f"cannot start a tool thread: {e}") from None
                self._workers += 1
            self._cond.notify()
        return job

    @property
    def busy(self) -> int:
        """Threads running a tool now (abandoned calls included)."""
        with self._cond:
            return len(self._running)

    def give_up(self, job: _Job) -> bool:
        """The caller stopped waiting. True if the job had not started (it never will);
        a running one is marked abandoned."""
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                return True
            if job in self._running:
                job.abandoned = True
            return False

    def stuck(self, after_s: float) -> list[str]:
        """The tools holding the threads, when every thread is held longer than after_s."""
        now = time.monotonic()
        with self._cond:
            if len(self._running) < self.size or any(
                    now - j.started <= after_s for j in self._running):
                return []
            return sorted(j.name for j in self._running)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                job = self._queue.popleft()
                job.started = time.monotonic()
                self._running.add(job)
            try:
                outcome = job.fn()
            except BaseException as e:  # noqa: BLE001 - _guarded already catches; belt and braces
                outcome = (False, e)
            with self._cond:
                self._running.discard(job)
            if job.abandoned:
                log.warning("tool %s returned %.1f s after its call was given up", job.name,
                            time.monotonic() - job.started)
            try:
                job.loop.call_soon_threadsafe(_deliver, job.future, outcome)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _deliver(future: asyncio.Future[tuple[bool, Any]], outcome: tuple[bool, Any]) -> None:
    if not future.done():
        future.set_result(outcome)


def _guarded(func: Callable[..., Any], args: dict[str, Any]) -> tuple[bool, Any]:
    """In a tool thread: whatever the tool raises becomes a value, never an unwinding."""
    try:
        return True, _jsonable(func(**args))
    except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
        return False, e


def _unwrap(ok: bool, value: Any) -> Any:
    if ok:
        return value
    if isinstance(value, Exception):
        raise value
    raise ToolCrashed(value)


def _dump(v: Any) -> str:
    try:
        return msgspec.json.encode(v).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(v)


def _jsonable(v: Any) -> Any:
    """Tool results go into replies and the journal: make them JSON values."""
    try:
        return msgspec.json.decode(msgspec.json.encode(v))
    except (TypeError, msgspec.EncodeError):
        return repr(v)


CONFIRM_TTL_S = 300.0


class Confirmations:
    """Calls of sensitive tools waiting for their device's confirmation: in memory, bounded,
    single use, expiring (a restart forgets them: the device asks again)."""

    def __init__(self, ttl_s: float = CONFIRM_TTL_S, limit: int = 256) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._held: dict[str, tuple[float, str, str, dict[str, Any], str, list[str] | None]] = {}

    def hold(self, device: str, name: str, arguments: dict[str, Any], agent: str,
             agent_tools: list[str] | None) -> str:
        now = time.monotonic()
        self._held = {k: v for k, v in self._held.items() if v[0] > now}
        while len(self._held) >= self.limit:
            self._held.pop(next(iter(self._held)))
        token = secrets.token_hex(4)
        self._held[token] = (now + self.ttl_s, device, name, dict(arguments), agent,
                             agent_tools)
        return token

    def take(self, token: str, device: str
             ) -> tuple[str, dict[str, Any], str, list[str] | None] | None:
        held = self._held.get(token)
        if held is None or held[1] != device:  # another device's token confirms nothing
            return None
        del self._held[token]
        if held[0] <= time.monotonic():
            return None
        return held[2], held[3], held[4], held[5]

