"""Model runtimes in supervised worker processes, behind the same interfaces as in-process.

:class:`WorkerBackend` is a :class:`~edged.models.base.Backend` and :class:`WorkerEmbedder`
an :class:`~edged.models.embed.Embedder`; each forwards every call to its own worker process
(:mod:`edged.models.worker`), so the pool, the agents and memory do not know the difference.
Load starts the worker, unload stops it: the model's memory goes back to the OS with the
process. A worker that dies (a native crash, the OOM killer, a stop at a deadline) turns the
call in flight into :class:`WorkerCrashed`, a :class:`~edged.models.base.ModelError` that
says how it died; the pool decides about restarts (see :mod:`edged.models.pool`).

Workers are fresh interpreters (``subprocess`` + exec, never a bare fork: the daemon has
threads); they talk over a Unix socket pair (:mod:`edged.models.ipc`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import psutil

from ..config import ModelConfig
from . import ipc
from .base import (
    Backend,
    Generation,
    GenerationRequest,
    ModelError,
    ModelUnavailable,
    NotSupported,
    TokenCallback,
)
from .embed import Embedder

_SIGNALS = {
    signal.SIGSEGV: "SIGSEGV (segmentation fault)",
    signal.SIGILL: "SIGILL (an instruction this CPU does not run)",
    signal.SIGBUS: "SIGBUS (bus error)",
    signal.SIGABRT: "SIGABRT (the runtime aborted)",
    signal.SIGFPE: "SIGFPE (arithmetic fault)",
    signal.SIGKILL: "SIGKILL (out of memory, or killed)",
    signal.SIGTERM: "SIGTERM",
}
A = TypeVar("A", ipc.Loaded, ipc.Generated, ipc.Vectors, ipc.Count, ipc.Done)
STOP_GRACE_S = 5.0
CRASH_LIMIT = 5  # the embedder: crashes within CRASH_WINDOW_S before it is failed
CRASH_WINDOW_S = 60.0


class WorkerCrashed(ModelUnavailable):
    """The worker process died during a call; ``reason`` says how (for the operator)."""

    def __init__(self, message: str, *, reason: str, deadline: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.deadline = deadline


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        sig = -code
        try:
            name = _SIGNALS.get(signal.Signals(sig), signal.Signals(sig).name)
        except ValueError:
            name = f"signal {sig}"
        return f"crashed with {name}"
    return f"exited with status {code}"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def fault_hint(e: WorkerCrashed, system_info: str = "") -> str:
    """One line for an operator: how the runtime died and what to do about it."""
    line = f"{e}"
    if "SIGSEGV" in e.reason or "SIGILL" in e.reason:
        amx = sorted(f for f in cpu_flags() if f.startswith("amx"))
        built_amx = "AMX" in system_info.upper()
        if amx or built_amx:
            line += (f"; this CPU advertises Intel AMX ({', '.join(amx) or 'amx'})"
                     + (" and this llama.cpp build uses it" if built_amx else "")
                     + ": a native build faults at ldtilecfg when the kernel has not granted "
                     "tile permission")
        line += ("; the runtime was probably built for another CPU: rebuild it portable "
                 "with scripts/setup.sh (GGML_NATIVE=OFF; the wheel cache key has the "
                 "build flags)")
    return line


class WorkerProcess:
    """One worker process and its channel. ``call`` is serialised; ``kill`` may be called
    from any thread (it unblocks a call in flight)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.proc: subprocess.Popen[bytes] | None = None
        self.chan: ipc.Channel[ipc.Reply, ipc.Request] | None = None
        self._lock = threading.Lock()
        self._killed_for = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        try:
            return int(psutil.Process(self.pid).memory_info().rss) if self.alive() else 0
        except psutil.Error:
            return 0

    def start(self, start: ipc.Start) -> ipc.Loaded:
        """Start the process and load; WorkerCrashed or ModelError when that fails."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # fewer glibc arenas: less address space
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edged.models.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                close_fds=True)
        except OSError as e:
            ours.close()
            raise ModelError(f"{self.label}: cannot start a worker process: {e}") from None
        finally:
            theirs.close()
        self._killed_for = ""
        self.chan = ipc.Channel(ours, ipc.Reply)
        reply = self.call(start)
        if isinstance(reply, ipc.Loaded):
            return reply
        self.stop()
        raise ModelError(f"{self.label}: unexpected answer to load: {type(reply).__name__}")

    def call(self, msg: ipc.Request, on_token: TokenCallback | None = None) -> ipc.Answer:
        """Send one request; return its final answer (Token frames go to ``on_token``).
        A ``Failed`` answer is raised as ModelError / NotSupported; a dead worker as
        WorkerCrashed."""
        with self._lock:
            chan = self.chan
            if chan is None or self.proc is None:
                raise ModelError(f"{self.label}: worker not running")
            try:
                chan.send(msg)
                while True:
                    reply = chan.recv()
                    if isinstance(reply, ipc.Token):
                        if on_token is not None:
                            on_token(reply.text)
                        continue
                    break
            except ipc.Closed:
                raise self._crashed() from None
        if isinstance(reply, ipc.Failed):
            if reply.kind == "not_supported":
                raise NotSupported(reply.message)
            raise ModelError(reply.message)
        return reply

    def call_for(self, msg: ipc.Request, answer: type[A],
                 on_token: TokenCallback | None = None) -> A:
        """:meth:`call`, expecting an ``answer`` (another one is a ModelError)."""
        reply = self.call(msg, on_token)
        if not isinstance(reply, answer):
            raise ModelError(f"{self.label}: unexpected answer to {type(msg).__name__}: "
                             f"{type(reply).__name__}")
        return reply

    def _crashed(self) -> WorkerCrashed:
        code = self._reap(5.0)
        reason = self._killed_for or describe_exit(code)
        self._close_channel()
        return WorkerCrashed(f"{self.label}: the model worker {reason}", reason=reason,
                             deadline=bool(self._killed_for))

    def kill(self, why: str) -> None:
        """Stop the process at once (a deadline, or shutdown); a call in flight fails."""
        self._killed_for = why
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def stop(self) -> None:
        """Ask the worker to unload and exit; kill it when it does not within the grace."""
        if self.proc is None:
            return
        if self.alive() and self.chan is not None and self._lock.acquire(timeout=STOP_GRACE_S):
            try:
                self.chan.send(ipc.Stop())
                self.chan.sock.settimeout(STOP_GRACE_S)
                self.chan.recv()
            except (ipc.Closed, TimeoutError):
                pass
            finally:
                self._lock.release()
        if self._reap(STOP_GRACE_S) is None:
            self.kill("stopped")
            self._reap(STOP_GRACE_S)
        self._close_channel()
        self.proc = None

    def _reap(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close_channel(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None


class WorkerBackend(Backend):
    """A local model (llama.cpp, ONNX Runtime GenAI) run by a worker process."""

    isolated = True

    def __init__(self, alias: str, cfg: ModelConfig, path: str,
                 inner: Callable[[], Backend]) -> None:
        super().__init__(alias, cfg, path)
        self.kind = cfg.backend
        self._local = inner()  # the in-process object (unloaded): estimate, description
        self._estimate = self._local.memory_estimate()
        self.worker = WorkerProcess(f"model {alias!r}")
        self.system_info = ""

    def memory_limit_mb(self) -> int:
        """The worker's address-space cap: ``memory_limit_mb``, or by default generous
        (twice the estimate plus 2 GiB: threads, arenas and mappings reserve far more
        address space than they use) so that only a runaway worker meets it."""
        if self.cfg.memory_limit_mb:
            return self.cfg.memory_limit_mb
        return (2 * self._estimate >> 20) + 2048

    def load(self) -> None:
        start = ipc.Start(what="backend", alias=self.alias, cfg=self.cfg, path=self.path,
                          memory_limit_mb=self.memory_limit_mb())
        try:
            loaded = self.worker.start(start)
        except ModelError:
            self.worker.stop()  # reaps a worker that refused or died while loading
            raise
        self.system_info = loaded.system_info
        self.loaded = True

    def unload(self) -> None:
        self.worker.stop()
        self.loaded = False

    def abort(self, why: str) -> None:
        self.worker.kill(why)

    def alive(self) -> bool:
        return self.worker.alive()

    def _call(self, msg: ipc.Request, answer: type[A], on_token: TokenCallback | None = None
              ) -> A:
        try:
            return self.worker.call_for(msg, answer, on_token)
        except WorkerCrashed:
            self.loaded = False
            self.worker.proc = None
            raise

    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        reply = self._call(ipc.Generate(req, stream=on_token is not None), ipc.Generated,
                           on_token)
        return reply.gen

    def count_tokens(self, text: str) -> int:
        return int(self._call(ipc.CountTokens(text), ipc.Count).n)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._call(ipc.Embed(texts), ipc.Vectors).vectors

    def set_threads(self, n: int) -> None:
        if self.loaded:
            self._call(ipc.SetThreads(n), ipc.Done)

    def memory_estimate(self) -> int:
        return self._estimate

    def describe(self) -> dict[str, Any]:
        d = self._local.describe()
        d.update(loaded=self.loaded, pid=self.worker.pid if self.loaded else None,
                 worker_rss_mb=round(self.worker.rss() / 2**20, 1) if self.loaded else 0)
        return d


class WorkerEmbedder(Embedder):
    """The sentence embedder in its own worker process. A crash during a call restarts the
    worker and repeats the call once (embedding has no side effects); crashing again is an
    error. Calls are serialised (one worker, one request at a time)."""

    isolated = True

    def __init__(self, spec: str, *, threads: int = 1, restart_backoff_s: float = 0.5) -> None:
        from .embed import create_embedder

        inner = create_embedder(spec, threads=threads)  # checks the spec, loads nothing
        super().__init__(inner.name, dim=inner.dim)
        self.kind = inner.kind
        self.spec = spec
        self.threads = threads
        self._estimate = inner.memory_estimate()
        self.worker = WorkerProcess(f"embedder {spec!r}")
        self.restarts = 0
        self.last_crash = ""
        self._backoff = restart_backoff_s
        self._lock = threading.Lock()
        self._crashes: deque[float] = deque()

    def load(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        start = ipc.Start(what="embedder", alias="embedder", embedder_spec=self.spec,
                          embedder_threads=self.threads,
                          memory_limit_mb=(2 * self._estimate >> 20) + 2048)
        loaded = self.worker.start(start)
        self.dim = loaded.dim or self.dim
        self.loaded = True

    def unload(self) -> None:
        with self._lock:
            self.worker.stop()
            self.loaded = False

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            for attempt in (1, 2):
                if not self.worker.alive():
                    self._restart()
                try:
                    return self.worker.call_for(ipc.Embed(texts), ipc.Vectors).vectors
                except WorkerCrashed as e:
                    self.last_crash = e.reason
                    self._crashes.append(time.monotonic())
                    self.worker.proc = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _restart(self) -> None:
        """Start the worker again (lazily, on the next call), after a short back-off; more
        than ``CRASH_LIMIT`` crashes within ``CRASH_WINDOW_S`` fail at once instead of a
        crash loop, until the window has passed."""
        now = time.monotonic()
        while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
            self._crashes.popleft()
        if len(self._crashes) >= CRASH_LIMIT:
            raise ModelError(f"embedder {self.spec!r} failed: its worker crashed "
                             f"{len(self._crashes)} times within {CRASH_WINDOW_S:.0f} s "
                             f"(last: {self.last_crash})")
        if self.loaded:
            self.restarts += 1
            if self._crashes and now - self._crashes[-1] < self._backoff:
                time.sleep(self._backoff - (now - self._crashes[-1]))
        self._start()

    def memory_estimate(self) -> int:
        return self._estimate

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pid": self.worker.pid, "restarts": self.restarts,
                "last_crash": self.last_crash,
                "worker_rss_mb": round(self.worker.rss() / 2**20, 1)}
