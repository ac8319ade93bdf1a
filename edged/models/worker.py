"""A model worker process: one loaded model (or the embedder), nothing else.

Started by :class:`edged.models.process.WorkerProcess` as ``python -m edged.models.worker FD``
(a fresh interpreter: the daemon has threads, so it never forks). It serves one request at a
time over the socket FD until told to stop or until the daemon goes away. A native crash
here (SIGSEGV, abort, the OOM killer) ends this process only; the daemon turns it into a
model error and restarts the worker.

Inside, before anything loads: stdout goes to stderr (native libraries print), the process
asks the kernel's OOM killer to pick it before the daemon, writes no core files, its
address space is capped, and glibc's mmap threshold is pinned so that the 20-25 MB transient
arrays of each llama.cpp generation go back to the OS when freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import resource
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from . import ipc
from .base import Backend, ModelError, NotSupported

if TYPE_CHECKING:
    from .embed import Embedder

OOM_SCORE_ADJ = 500  # the daemon keeps 0: under memory pressure the kernel kills a model first


def _harden(memory_limit_mb: int) -> None:
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    with contextlib.suppress(OSError):
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(OOM_SCORE_ADJ))
    with contextlib.suppress(ValueError, OSError):
        # no core files: a crashing model would write hundreds of MB to an SD card each time
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_mb > 0:
        limit = memory_limit_mb << 20
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: see the docstring


def _watch_parent(parent: int) -> None:
    """Exit when the daemon is gone (even SIGKILLed mid-generation, when nobody reads)."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _open(start: ipc.Start) -> Backend | Embedder:
    if start.what == "embedder":
        from .embed import create_embedder

        return create_embedder(start.embedder_spec, threads=start.embedder_threads)
    from . import create_local_backend

    assert start.cfg is not None
    return create_local_backend(start.alias, start.cfg, start.path)


def _system_info() -> str:
    with contextlib.suppress(Exception):
        import llama_cpp

        return bytes(llama_cpp.llama_print_system_info()).decode(errors="replace")
    return ""


def serve(chan: ipc.Channel[ipc.Request, ipc.Reply]) -> int:
    start = chan.recv()
    if not isinstance(start, ipc.Start):
        chan.send(ipc.Failed("internal", f"expected Start, got {type(start).__name__}"))
        return 2
    _harden(start.memory_limit_mb)
    t0 = time.perf_counter()
    try:
        model = _open(start)
        model.load()
    except BaseException as e:  # noqa: BLE001 - every failure is an answer
        failure = _failure(e)
        if start.memory_limit_mb and (failure.kind == "memory" or _MEMORY.search(str(e))):
            what = f"model {start.alias!r}" if start.what == "backend" else "the embedder"
            failure = ipc.Failed("memory", f"{what} cannot load within its worker's memory "
                                 f"limit of {start.memory_limit_mb} MB (memory_limit_mb): "
                                 f"{_last_line(str(e))}")
        chan.send(failure)
        return 1
    info = _system_info() if start.what == "backend" and start.cfg and \
        start.cfg.backend == "llama_cpp" else ""
    chan.send(ipc.Loaded(pid=os.getpid(), dim=int(getattr(model, "dim", 0) or 0),
                         system_info=info, seconds=time.perf_counter() - t0))
    while True:
        try:
            msg = chan.recv()
        except ipc.Closed:
            return 0  # the daemon went away
        if isinstance(msg, ipc.Stop):
            with contextlib.suppress(BaseException):
                model.unload()
            chan.send(ipc.Done())
            return 0
        try:
            reply = _handle(model, msg, chan)
        except ipc.Closed:
            return 0
        except BaseException as e:  # noqa: BLE001 - SystemExit from a library included
            reply = _failure(e)
        chan.send(reply)


def _handle(model: Backend | Embedder, msg: ipc.Request,
            chan: ipc.Channel[ipc.Request, ipc.Reply]) -> ipc.Reply:
    if isinstance(msg, ipc.Generate):
        if not isinstance(model, Backend):
            raise NotSupported("the embedder worker does not generate")
        cb = (lambda piece: chan.send(ipc.Token(piece))) if msg.stream else None
        return ipc.Generated(model.generate(msg.req, cb))
    if isinstance(msg, ipc.Embed):
        return ipc.Vectors(model.embed(msg.texts))
    if isinstance(msg, ipc.CountTokens):
        if not isinstance(model, Backend):
            raise NotSupported("the embedder worker does not count tokens")
        return ipc.Count(model.count_tokens(msg.text))
    if isinstance(msg, ipc.SetThreads):
        model.set_threads(msg.n)
        return ipc.Done()
    return ipc.Failed("internal", f"unexpected message {type(msg).__name__}")


_MEMORY = re.compile(r"failed to map|cannot allocate|out of memory|bad_alloc|mmap", re.I)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-2] if len(lines) > 1 and lines[-1].startswith(")") else
            lines[-1] if lines else "")[:300]


def _failure(e: BaseException) -> ipc.Failed:
    if isinstance(e, NotSupported):
        return ipc.Failed("not_supported", str(e))
    if isinstance(e, ModelError):
        return ipc.Failed("model", str(e))
    if isinstance(e, MemoryError):
        return ipc.Failed("memory", "out of memory (the worker's memory limit, or the system)")
    return ipc.Failed("internal", f"{type(e).__name__}: {e}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m edged.models.worker FD (started by edged, not by hand)",
              file=sys.stderr)
        return 2
    _watch_parent(os.getppid())
    sock = socket.socket(fileno=int(argv[1]))
    chan: ipc.Channel[ipc.Request, ipc.Reply] = ipc.Channel(sock, ipc.Request)
    try:
        return serve(chan)
    except ipc.Closed:
        return 0
    finally:
        chan.close()


if __name__ == "__main__":
    # os._exit: skip interpreter teardown (native runtimes' destructors are not needed and
    # some of them hang or crash at exit); the unload has already run.
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
