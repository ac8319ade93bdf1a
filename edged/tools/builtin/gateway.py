"""The gateway's own health: memory, load, uptime, temperature where a sensor exists."""

from __future__ import annotations

import os
import time

import psutil

from edged.plugin import tool


@tool(examples=["how is the gateway doing", "system status", "how much memory is free"])
def status() -> dict[str, object]:
    """Report the gateway's memory, CPU load, disk space and uptime."""
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage("/")
    out: dict[str, object] = {
        "memory_available_mb": round(vm.available / 2**20),
        "memory_total_mb": round(vm.total / 2**20),
        "load_1m": round(os.getloadavg()[0], 2),
        "disk_free_gb": round(disk.free / 2**30, 1),
        "uptime_h": round((time.time() - psutil.boot_time()) / 3600, 1),
    }
    temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
    values = [t.current for entries in (temps or {}).values() for t in entries if t.current]
    if values:
        out["temperature_c"] = max(values)
    return out
