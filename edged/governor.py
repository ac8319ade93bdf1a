"""Memory, power and thermal policy.

Readings come from an injectable reader: :class:`PsutilReader` on a real board; tests inject
readings because this VM has no battery and no temperature sensors (psutil returns None/{}).
Policies from ``[resources]``:

- memory pressure (available < ``min_free_memory_mb``): unload idle models, then reject
  low-priority work;
- battery below ``battery_low_percent`` and not plugged in: agents switch to their
  ``low_power_model`` and deferrable jobs wait;
- temperature above ``thermal_high_c``: models run with one thread, deferrable work pauses.

Every transition is logged, published as an event (``governor``) and shown in status.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from .config import ResourcesConfig

log = logging.getLogger("edged.governor")


@dataclass(frozen=True, slots=True)
class Readings:
    mem_available_mb: float
    mem_total_mb: float
    rss_mb: float
    cpu_load: float  # 1-minute load average per core
    battery_percent: float | None = None
    plugged: bool | None = None
    temperature_c: float | None = None


class Reader(Protocol):
    def read(self) -> Readings: ...


class PsutilReader:
    """Real readings from psutil (battery/temperature are None where the board has none)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()

    def read(self) -> Readings:
        vm = psutil.virtual_memory()
        battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
        temp = None
        if hasattr(psutil, "sensors_temperatures"):
            try:
                temps = psutil.sensors_temperatures() or {}
            except OSError:
                temps = {}
            values = [t.current for entries in temps.values() for t in entries if t.current]
            temp = max(values) if values else None
        return Readings(
            mem_available_mb=vm.available / 2**20, mem_total_mb=vm.total / 2**20,
            rss_mb=self._proc.memory_info().rss / 2**20,
            cpu_load=os.getloadavg()[0] / (os.cpu_count() or 1),
            battery_percent=battery.percent if battery else None,
            plugged=battery.power_plugged if battery else None,
            temperature_c=temp,
        )


@dataclass(frozen=True, slots=True)
class State:
    memory_pressure: bool = False
    low_battery: bool = False
    hot: bool = False

    @property
    def name(self) -> str:
        flags = [n for n in ("memory_pressure", "low_battery", "hot") if getattr(self, n)]
        return "+".join(flags) or "normal"


class PoolLike(Protocol):
    async def unload_idle(self, reason: str) -> list[str]: ...
    async def set_threads(self, cap: int | None) -> None: ...


class Governor:
    def __init__(self, resources: ResourcesConfig, reader: Reader | None = None, *,
                 pool: PoolLike | None = None,
                 emit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
                 interval_s: float = 5.0) -> None:
        self.res = resources
        self.reader: Reader = reader or PsutilReader()
        self.pool = pool
        self._emit = emit
        self.interval_s = interval_s
        self.state = State()
        self.last: Readings | None = None
        self.transitions = 0
        self.changed = asyncio.Event()

    # -- what the rest of edged asks --------------------------------------------------------

    def admit(self, priority: int) -> bool:
        """Under memory pressure only high-priority work (>= 5) is taken."""
        return not self.state.memory_pressure or priority >= 5

    def model_for(self, model: str, low_power_model: str | None) -> str:
        return low_power_model if (self.state.low_battery and low_power_model) else model

    def tier_cap(self, tiers: int) -> int:
        """How many local model tiers may run now: all, or under memory, heat or battery
        pressure only the cheapest (a larger model is the first thing pressure drops)."""
        return min(tiers, 1) if self.defer else tiers

    @property
    def defer(self) -> bool:
        """Deferrable jobs (consolidation, re-embedding) wait while this is true."""
        return self.state.low_battery or self.state.hot or self.state.memory_pressure

    def status(self) -> dict[str, Any]:
        r = self.last
        return {
            "state": self.state.name,
            "mem_available_mb": round(r.mem_available_mb) if r else None,
            "rss_mb": round(r.rss_mb, 1) if r else None,
            "battery_percent": r.battery_percent if r else None,
            "temperature_c": r.temperature_c if r else None,
        }

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.check()
                failing = False
            except Exception as e:  # noqa: BLE001 - a broken sensor must not stop the daemon
                if not failing:
                    log.error("governor: cannot read the sensors: %r; keeping state %s",
                              e, self.state.name)
                failing = True
            await asyncio.sleep(self.interval_s)

    async def check(self) -> State:
        """Take one reading, apply the policies, report transitions."""
        r = await asyncio.to_thread(self.reader.read)
        self.last = r
        res = self.res
        new = State(
            memory_pressure=r.mem_available_mb < res.min_free_memory_mb,
            low_battery=(r.battery_percent is not None and r.battery_percent <
                         res.battery_low_percent and not r.plugged),
            hot=r.temperature_c is not None and r.temperature_c > res.thermal_high_c,
        )
        old = self.state
        if new != old:
            self.state = new
            self.transitions += 1
            actions = await self._apply(old, new)
            log.warning("governor: %s -> %s (available %.0f MB, battery %s, %s)%s",
                        old.name, new.name, r.mem_available_mb,
                        f"{r.battery_percent:.0f}%" if r.battery_percent is not None else "n/a",
                        f"{r.temperature_c:.0f} C" if r.temperature_c is not None else "no sensor",
                        f"; {', '.join(actions)}" if actions else "")
            self.changed.set()
            if self._emit is not None:
                await self._emit("governor", {"from": old.name, "to": new.name,
                                              "actions": actions, **self.status()})
        elif new.memory_pressure and self.pool is not None:
            # still under pressure: keep unloading whatever went idle meanwhile
            await self.pool.unload_idle("memory pressure")
        return new

    async def _apply(self, old: State, new: State) -> list[str]:
        actions: list[str] = []
        if self.pool is None:
            return actions
        if new.memory_pressure and not old.memory_pressure:
            unloaded = await self.pool.unload_idle("memory pressure")
            actions.append(f"unloaded {', '.join(unloaded) or 'nothing (none idle)'}")
            actions.append("low-priority work rejected")
        if new.hot != old.hot:
            await self.pool.set_threads(1 if new.hot else None)
            actions.append("models limited to 1 thread" if new.hot else "threads restored")
        if new.low_battery != old.low_battery:
            actions.append("low-power models, deferrable jobs wait" if new.low_battery
                           else "normal models")
        return actions
