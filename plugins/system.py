"""Example plugin: the gateway talks about itself (uptime of edged, disk, network)."""

from __future__ import annotations

import shutil
import socket
import time

from edged.plugin import tool

_STARTED = time.time()


@tool(examples=["how long have you been running", "what's your uptime"])
def uptime() -> dict:
    """Tell how long this assistant has been running."""
    return {"uptime_h": round((time.time() - _STARTED) / 3600, 2)}


@tool(examples=["how much disk space is left", "is the disk full"])
def disk_space() -> dict:
    """Report the free disk space of the gateway."""
    u = shutil.disk_usage("/")
    return {"free_gb": round(u.free / 2**30, 1), "used_percent": round(100 * u.used / u.total)}


@tool(examples=["what's your hostname", "what is the gateway called"])
def hostname() -> str:
    """Tell the gateway's network name."""
    return socket.gethostname()
