"""sd_notify: the few lines of systemd's datagram protocol, no dependency."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send e.g. "READY=1" to $NOTIFY_SOCKET; False when not under systemd, on error, or
    when the receiver's queue is full.

    Never blocks: it runs on the event loop, and a unix datagram send blocks once the
    receiver has ``net.unix.max_dgram_qlen`` (10 by default) datagrams unread. A busy
    systemd, or a supervisor that reads only READY=1, would otherwise hang the daemon on its
    next STATUS= (the soak benchmark found this: the loop stopped after ~10 reconnects). A
    dropped STATUS= is harmless; a dropped WATCHDOG=1 is followed by the next one.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                           | socket.SOCK_NONBLOCK) as s:
            s.connect(addr)
            s.send(message.encode())
        return True
    except OSError:  # BlockingIOError (queue full) included
        return False


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec), or None when the
    service has no watchdog (or the watchdog is meant for another process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return max(0.05, int(usec) / 2e6)
    except ValueError:
        return None
