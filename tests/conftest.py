"""Fixtures: a private mosquitto per test, edged in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from edged import config
from edged.service import Daemon

from .harness import Broker, DaemonProcess, find_mosquitto, write_config


def pytest_configure(config: pytest.Config) -> None:
    # Fail early and say exactly what to run where mosquitto is missing.
    find_mosquitto()


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker().start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def make_config(tmp_path: Path, broker: Broker) -> Callable[..., Path]:
    def make(name: str = "edged.toml", **kw: Any) -> Path:
        kw.setdefault("db", tmp_path / "edged.db")
        return write_config(tmp_path / name, broker, **kw)
    return make


@pytest_asyncio.fixture
async def run_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start edged in this event loop; returns the Daemon once it is subscribed."""
    running: list[tuple[Daemon, asyncio.Task[None]]] = []

    async def start(cfg_path: Path, *, stages: dict[str, Any] | None = None,
                    timeout: float = 20.0) -> Daemon:
        d = Daemon(config.load(cfg_path), stages=stages)
        task = asyncio.create_task(d.run())
        running.append((d, task))
        await asyncio.wait_for(d.ready.wait(), timeout)
        assert d.bus is not None
        await asyncio.wait_for(d.bus.subscribed.wait(), timeout)
        return d

    yield start
    for d, task in running:
        d.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    procs: list[DaemonProcess] = []

    def make(cfg_path: Path, **kw: Any) -> DaemonProcess:
        p = DaemonProcess(cfg_path, tmp_path, **kw)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()
