"""Driving one paho-mqtt client from the asyncio event loop (for :mod:`edged.bus.client`).

The way paho documents for external loops: socket callbacks register the socket with
``add_reader``/``add_writer`` and a ``loop_misc`` tick does keepalive and timeouts, so every
paho call happens on the loop thread and no locks are needed. Only the blocking TCP/TLS
connect runs in a worker thread. Reading stops while the bus holds as many unacked messages
as it may (``full``), so that a flood waits in the broker, not in our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..config import MQTTConfig, Secret

if TYPE_CHECKING:
    from .client import Will


class PahoDriver:
    """One paho client (manual acks, no paho-side reconnect or queueing) and its socket."""

    def __init__(self, cfg: MQTTConfig, client_id: str, *, host: str, port: int, tls: bool,
                 will: Will | None, password: Secret | None, full: Callable[[], bool],
                 received: Callable[[], int]) -> None:
        self.cfg = cfg
        self.host, self.port = host, port
        self.v5 = cfg.protocol == "5"
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the bus's run()
        self.sock_fd: int | None = None
        self.paused = False
        self._full = full  # as many messages held as the broker may send: stop reading
        self._received = received  # messages received so far (a read that made progress)
        self._first_connect = True
        self.client = self._make_client(client_id, tls, will, password)

    def _make_client(self, client_id: str, tls: bool, will: Will | None,
                     password: Secret | None) -> paho.Client:
        c = paho.Client(
            callback_api_version=paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        c.enable_logger(logging.getLogger("paho"))
        c.max_inflight_messages_set(65535)  # the outbox bounds what we publish
        c.max_queued_messages_set(0)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, password.get() if password else None)
        if tls:
            t = self.cfg.tls
            c.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
                      cert_reqs=ssl.CERT_NONE if t.insecure else ssl.CERT_REQUIRED)
            if t.insecure:
                c.tls_insecure_set(True)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    def connect(self) -> None:
        """The blocking TCP/TLS connect (in a worker thread): the first one asks for the
        persistent session, later ones reconnect."""
        if self._first_connect:
            props = None
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                props.ReceiveMaximum = self.cfg.receive_maximum
            self.client.connect(self.host, self.port, keepalive=self.cfg.keepalive_s,
                                clean_start=False if self.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                                properties=props)
            self._first_connect = False
        else:
            self.client.reconnect()

    async def tick(self) -> None:
        """paho's keepalive/ping and CONNACK timeout checks."""
        while True:
            await asyncio.sleep(min(1.0, self.cfg.keepalive_s / 4))
            self.client.loop_misc()

    def qos1(self, topics: list[str]
             ) -> list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]:
        """``topics`` as paho's subscribe list at QoS 1 (options for v5, a plain QoS for
        3.1.1)."""
        if self.v5:
            opts = SubscribeOptions(qos=1)
            return [(t, opts) for t in topics]
        return [(t, 1) for t in topics]

    def drop(self) -> None:
        """Close the socket without the DISCONNECT handshake."""
        sock = self.client.socket()
        if sock is not None:
            self.unwatch()
            with contextlib.suppress(OSError):
                sock.close()

    # socket plumbing: paho's documented external-loop hooks

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        # paho leaves Nagle on: a PUBACK followed by a small reply would wait for the peer's
        # delayed ACK (~40 ms a hop). Requests and replies are small; send them at once.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self._threadsafe(self._watch, fd)

    def _watch(self, fd: int) -> None:
        assert self.loop is not None
        self.sock_fd = fd
        self.paused = False
        self.loop.add_reader(fd, self._readable)
        if self._full():
            self.pause()

    def _on_socket_close(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self.unwatch)

    def unwatch(self) -> None:
        if self.sock_fd is not None and self.loop is not None:
            with contextlib.suppress(OSError, ValueError):  # the fd may be closed already
                self.loop.remove_reader(self.sock_fd)
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_writer(self.sock_fd)
        self.sock_fd = None

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self._want_write)

    def _want_write(self) -> None:
        if self.sock_fd is not None and self.loop is not None:
            self.loop.add_writer(self.sock_fd, self._writable)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self._no_write)

    def _no_write(self) -> None:
        if self.sock_fd is not None and self.loop is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_writer(self.sock_fd)

    def _readable(self) -> None:
        # paho 2.2's loop_read ignores max_packets and reads about one packet per call: keep
        # reading while messages arrive (up to 64) so a burst costs one wake-up, not 64.
        for _ in range(64):
            before = self._received()
            self.client.loop_read()
            if self.paused or self.sock_fd is None or self._received() == before:
                break
        sock = self.client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending() and not self.paused:
            self.client.loop_read()
            sock = self.client.socket()

    def _writable(self) -> None:
        self.client.loop_write()

    def pause(self) -> None:
        """Stop reading the socket (flow control)."""
        if self.sock_fd is not None and self.loop is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.sock_fd)
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self.sock_fd is not None and self.loop is not None:
            self.loop.add_reader(self.sock_fd, self._readable)
