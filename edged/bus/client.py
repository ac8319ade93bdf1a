"""A thin asyncio adapter over paho-mqtt with manual acks.

Why not aiomqtt: edged must acknowledge a QoS 1 message only after it is journaled, and
aiomqtt has no public manual-ack API (aiomqtt issue #345). paho has ``manual_ack``; this module
drives paho from the event loop the way paho documents for external loops (socket callbacks +
``add_reader``/``add_writer`` + a ``loop_misc`` tick), so every paho call happens on the loop
thread and no locks are needed. Only the blocking TCP/TLS connect runs in a worker thread.

Flow control: nothing is acked before the journal commits, the broker may have at most
``receive_maximum`` unacked messages in flight to us (MQTT v5 Receive Maximum), and when that
many are held locally the adapter stops reading the socket, so a flood waits in the broker, not
in our memory. Acks carry the connection generation: an ack for a message received on an
earlier connection is dropped (its mid may have been reused) and the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..config import MQTTConfig, Secret

log = logging.getLogger("edged.bus")


class BusError(Exception):
    pass


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    retain: bool
    dup: bool
    response_topic: str | None
    correlation: bytes | None
    received: float


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def parse_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BusError(f"mqtt.url: expected mqtt://host[:port] or mqtts://..., got {url!r}")
    return unquote(parts.hostname), parts.port or (8883 if tls else 1883), tls


class MQTTBus:
    """One MQTT connection, kept up forever with jittered exponential back-off."""

    def __init__(
        self,
        cfg: MQTTConfig,
        *,
        subscriptions: list[str],
        will: Will | None = None,
        password: Secret | None = None,
        on_ready: Callable[[bool], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.host, self.port, self.tls = parse_url(cfg.url)
        self.v5 = cfg.protocol == "5"
        self.subscriptions = subscriptions
        self.capacity = cfg.receive_maximum
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.generation = 0
        self.state = "idle"
        # read-only for others: monotonic time since the bus is not online (None while
        # online, or once stopped), for the watchdog's health check
        self.disconnected_since: float | None = time.monotonic()
        self.last_error = ""
        self.stats = {"received": 0, "acked": 0, "stale_acks": 0, "published": 0,
                      "reconnects": 0}
        self._on_ready = on_ready  # called after SUBACK, with the session-present flag
        self._session_present = False
        self._held = 0  # messages handed out and not yet acked/released
        self._paused = False
        self._sock_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_pub: dict[int, asyncio.Future[None]] = {}
        self._disconnected = asyncio.Event()
        self._stop_event = asyncio.Event()
        self.subscribed = asyncio.Event()  # set on SUBACK of the current connection
        self._stopping = False
        self._first_connect = True
        self._client = self._make_client(client_id or cfg.client_id, will, password)

    # -- set-up -------------------------------------------------------------------------------

    def _make_client(
        self, client_id: str, will: Will | None, password: Secret | None
    ) -> paho.Client:
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
        if self.tls:
            t = self.cfg.tls
            c.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
                      cert_reqs=ssl.CERT_NONE if t.insecure else ssl.CERT_REQUIRED)
            if t.insecure:
                c.tls_insecure_set(True)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    # -- the connection manager ---------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until :meth:`stop`. Never returns early on errors."""
        self._loop = asyncio.get_running_loop()
        misc = asyncio.create_task(self._misc_tick(), name="mqtt-misc")
        attempt = 0
        try:
            while not self._stopping:
                self._disconnected.clear()
                self._set_state("connecting")
                try:
                    await asyncio.to_thread(self._connect_blocking)
                except (OSError, ssl.SSLError, ValueError) as e:
                    self._set_state("disconnected", f"connect to {self.host}:{self.port}: {e}")
                else:
                    await self._disconnected.wait()
                    if self.connected.is_set() or self.state == "online":
                        attempt = 0
                if self._stopping:
                    break
                delay = self._backoff(attempt)
                attempt += 1
                self.stats["reconnects"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        finally:
            misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await misc

    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2**min(attempt, 20))
        return random.uniform(cap / 2, cap)  # "equal jitter": never zero, spread out

    def _connect_blocking(self) -> None:
        if self._first_connect:
            props = None
            if self.v5:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.cfg.session_expiry_s
                props.ReceiveMaximum = self.capacity
            self._client.connect(self.host, self.port, keepalive=self.cfg.keepalive_s,
                                 clean_start=False if self.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                                 properties=props)
            self._first_connect = False
        else:
            self._client.reconnect()

    async def _misc_tick(self) -> None:
        """paho's keepalive/ping and CONNACK timeout checks."""
        while True:
            await asyncio.sleep(min(1.0, self.cfg.keepalive_s / 4))
            self._client.loop_misc()

    async def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop reconnecting."""
        self._stopping = True
        self._stop_event.set()
        if self._client.is_connected():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout)
        if self._sock_fd is not None:
            # The broker did not answer: drop the socket without the DISCONNECT handshake.
            self._drop_socket()

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        if sock is not None:
            self._unwatch()
            with contextlib.suppress(OSError):
                sock.close()
        self.connected.clear()
        self._disconnected.set()

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.state or (error and error != self.last_error):
            msg = f"mqtt {self.host}:{self.port}: {self.state} -> {state}"
            if error:
                log.warning("%s (%s)", msg, error)
            else:
                log.info(msg)
        self.state = state
        if state in ("online", "stopped"):
            self.disconnected_since = None
        elif self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        if error:
            self.last_error = error

    # -- paho callbacks (all on the loop thread, except socket ones during connect) -----------

    def _on_connect(self, client: paho.Client, _u: Any, flags: paho.ConnectFlags,
                    rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            self._set_state("refused", f"broker refused the connection: {rc}")
            return
        self.generation += 1
        self._set_state("online")
        self._session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()
        if self.subscriptions:
            client.subscribe(self._qos1(self.subscriptions))
        else:
            self._subscribed()

    def _qos1(self, topics: list[str]
              ) -> list[tuple[str, SubscribeOptions]] | list[tuple[str, int]]:
        """``topics`` as paho's subscribe list at QoS 1 (options for v5, a plain QoS for
        3.1.1)."""
        if self.v5:
            opts = SubscribeOptions(qos=1)
            return [(t, opts) for t in topics]
        return [(t, 1) for t in topics]

    def _subscribed(self) -> None:
        self.subscribed.set()
        if self._on_ready:
            self._on_ready(self._session_present)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _mid: int, rcs: list[ReasonCode],
                      _p: Properties | None) -> None:
        bad = [str(rc) for rc in rcs if getattr(rc, "is_failure", False)]
        if bad:
            self._set_state("online", f"subscription refused: {', '.join(bad)}")
        self._subscribed()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: paho.DisconnectFlags,
                       rc: ReasonCode, _p: Properties | None) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping:
            self._set_state("disconnected", f"connection lost: {rc}")
        else:
            self._set_state("stopped")
        self._disconnected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        rt = getattr(props, "ResponseTopic", None) if props is not None else None
        cd = getattr(props, "CorrelationData", None) if props is not None else None
        # paho declares bytes | bytearray; its decoder hands out bytes (so no copy here)
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        self.stats["received"] += 1
        self._held += 1
        self.inbox.put_nowait(Inbound(
            topic=msg.topic, payload=payload, qos=msg.qos, mid=msg.mid,
            generation=self.generation, retain=bool(msg.retain), dup=bool(msg.dup),
            response_topic=rt or None, correlation=bytes(cd) if cd else None,
            received=time.time(),
        ))
        if self._held >= self.capacity and not self._paused:
            self._pause_reading()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode,
                    _p: Properties) -> None:
        fut = self._pending_pub.pop(mid, None)
        if fut is not None and not fut.done():
            if getattr(rc, "is_failure", False):
                fut.set_exception(BusError(f"broker rejected publish: {rc}"))
            else:
                fut.set_result(None)

    # socket plumbing: paho's documented external-loop hooks

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        # paho leaves Nagle on: a PUBACK followed by a small reply would wait for the peer's
        # delayed ACK (~40 ms a hop). Requests and replies are small; send them at once.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        self._threadsafe(self._watch, fd)

    def _watch(self, fd: int) -> None:
        assert self._loop is not None
        self._sock_fd = fd
        self._paused = False
        self._loop.add_reader(fd, self._readable)
        if self._held >= self.capacity:
            self._pause_reading()

    def _on_socket_close(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self._unwatch)

    def _unwatch(self) -> None:
        if self._sock_fd is not None and self._loop is not None:
            with contextlib.suppress(OSError, ValueError):  # the fd may be closed already
                self._loop.remove_reader(self._sock_fd)
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_writer(self._sock_fd)
        self._sock_fd = None

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self._want_write)

    def _want_write(self) -> None:
        if self._sock_fd is not None and self._loop is not None:
            self._loop.add_writer(self._sock_fd, self._writable)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._threadsafe(self._no_write)

    def _no_write(self) -> None:
        if self._sock_fd is not None and self._loop is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_writer(self._sock_fd)

    def _readable(self) -> None:
        # paho 2.2's loop_read ignores max_packets and reads about one packet per call: keep
        # reading while messages arrive (up to 64) so a burst costs one wake-up, not 64.
        for _ in range(64):
            before = self.stats["received"]
            self._client.loop_read()
            if self._paused or self._sock_fd is None or self.stats["received"] == before:
                break
        sock = self._client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending() and not self._paused:
            self._client.loop_read()
            sock = self._client.socket()

    def _writable(self) -> None:
        self._client.loop_write()

    def _pause_reading(self) -> None:
        if self._sock_fd is not None and self._loop is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._sock_fd)
        self._paused = True

    def _resume_reading(self) -> None:
        self._paused = False
        if self._sock_fd is not None and self._loop is not None:
            self._loop.add_reader(self._sock_fd, self._readable)

    # -- the API the service uses -----------------------------------------------------------

    def ack(self, msg: Inbound) -> None:
        """Acknowledge a message once it is durable (or release it without ack when not)."""
        self._held -= 1
        if msg.qos > 0:
            if msg.generation == self.generation and self.connected.is_set():
                self._client.ack(msg.mid, msg.qos)
                self.stats["acked"] += 1
            else:
                self.stats["stale_acks"] += 1
        if self._paused and self._held < self.capacity // 2 + 1:
            self._resume_reading()

    def release(self, msg: Inbound) -> None:
        """Give back a message's slot without acking: the broker will redeliver it."""
        self._held -= 1
        if self._paused and self._held < self.capacity // 2 + 1:
            self._resume_reading()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> asyncio.Future[None]:
        """Publish; the future resolves on PUBACK (at once for QoS 0)."""
        assert self._loop is not None, "bus is not running"
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                props.CorrelationData = correlation
            if content_type:
                props.ContentType = content_type
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        fut: asyncio.Future[None] = self._loop.create_future()
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            fut.set_exception(BusError(f"publish to {topic} failed: {paho.error_string(info.rc)}"))
        elif qos == 0:
            fut.set_result(None)
        else:
            self._pending_pub[info.mid] = fut
        self.stats["published"] += 1
        return fut

    def resubscribe(self, topics: list[str]) -> tuple[list[str], list[str]]:
        """Change the subscriptions (a reload changed the routes): (added, removed)."""
        new = list(dict.fromkeys(topics))
        added = [t for t in new if t not in self.subscriptions]
        removed = [t for t in self.subscriptions if t not in new]
        self.subscriptions = new
        if self.connected.is_set():
            if added:
                self._client.subscribe(self._qos1(added))
            if removed:
                self._client.unsubscribe(removed)
        return added, removed

    @property
    def held(self) -> int:
        return self._held

    def server_address(self) -> str:
        return f"{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
