"""A thin asyncio adapter over paho-mqtt with manual acks.

Why not aiomqtt: edged must acknowledge a QoS 1 message only after it is journaled, and
aiomqtt has no public manual-ack API (aiomqtt issue #345). paho has ``manual_ack``; paho is
driven from the event loop the way paho documents for external loops (socket callbacks +
``add_reader``/``add_writer`` + a ``loop_misc`` tick: :mod:`edged.bus.driver`), so every paho
call happens on the loop thread and no locks are needed. Only the blocking TCP/TLS connect
runs in a worker thread. This module keeps the connection up and is the asyncio-facing side.

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

from ..config import MQTTConfig, Secret
from .driver import PahoDriver

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
        self._pending_pub: dict[int, asyncio.Future[None]] = {}
        self._disconnected = asyncio.Event()
        self._stop_event = asyncio.Event()
        self.subscribed = asyncio.Event()  # set on SUBACK of the current connection
        self._stopping = False
        # the paho client and its socket on the event loop; reading pauses while we hold
        # ``capacity`` unacked messages
        self._driver = PahoDriver(
            cfg, client_id or cfg.client_id, host=self.host, port=self.port, tls=self.tls,
            will=will, password=password, full=lambda: self._held >= self.capacity,
            received=lambda: self.stats["received"])
        self._client = c = self._driver.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe

    # -- the connection manager ---------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected until :meth:`stop`. Never returns early on errors."""
        self._driver.loop = asyncio.get_running_loop()
        misc = asyncio.create_task(self._driver.tick(), name="mqtt-misc")
        attempt = 0
        try:
            while not self._stopping:
                self._disconnected.clear()
                self._set_state("connecting")
                try:
                    await asyncio.to_thread(self._driver.connect)
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

    async def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the session stays on the broker) and stop reconnecting."""
        self._stopping = True
        self._stop_event.set()
        if self._client.is_connected():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout)
        if self._driver.sock_fd is not None:
            # The broker did not answer: drop the socket without the DISCONNECT handshake.
            self._driver.drop()
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

    # -- paho callbacks (all on the loop thread; the socket ones are the driver's) ------------

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
            client.subscribe(self._driver.qos1(self.subscriptions))
        else:
            self._subscribed()

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
        if self._held >= self.capacity and not self._driver.paused:
            self._driver.pause()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode,
                    _p: Properties) -> None:
        fut = self._pending_pub.pop(mid, None)
        if fut is not None and not fut.done():
            if getattr(rc, "is_failure", False):
                fut.set_exception(BusError(f"broker rejected publish: {rc}"))
            else:
                fut.set_result(None)

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
        if self._driver.paused and self._held < self.capacity // 2 + 1:
            self._driver.resume()

    def release(self, msg: Inbound) -> None:
        """Give back a message's slot without acking: the broker will redeliver it."""
        self._held -= 1
        if self._driver.paused and self._held < self.capacity // 2 + 1:
            self._driver.resume()

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
        loop = self._driver.loop
        assert loop is not None, "bus is not running"
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            if correlation is not None:
                props.CorrelationData = correlation
            if content_type:
                props.ContentType = content_type
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        fut: asyncio.Future[None] = loop.create_future()
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
                self._client.subscribe(self._driver.qos1(added))
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
