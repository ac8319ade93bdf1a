"""Real parts for tests: a private mosquitto, edged in-process or as a subprocess, MQTT peers.

No sleeps as synchronisation: everything waits on a condition (a port accepting, a message,
a datagram from the daemon's sd_notify) with a timeout.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_HINT = "apt-get install -y mosquitto mosquitto-clients"


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    raise RuntimeError(f"mosquitto is not installed; run: {MOSQUITTO_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll a condition until it holds (a condition wait, not a sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Broker:
    """A private mosquitto on a free loopback port with its own persistence directory."""

    def __init__(self, workdir: Path | None = None, *, port: int | None = None,
                 extra: str = "") -> None:
        self.exe = find_mosquitto()
        # mosquitto drops to its own user when started as root, so its directory must be
        # reachable by that user: pytest's tmp dirs are 0700 root, a fresh /tmp dir is not.
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="edged-mq-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        (self.dir / "data").mkdir(exist_ok=True)
        self._write_conf()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        user = ""
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("mosquitto")
                for p in (self.dir, self.dir / "data"):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
                if self.log.exists():
                    os.chown(self.log, pw.pw_uid, pw.pw_gid)
                user = "user mosquitto\n"
            except KeyError:
                user = "user root\n"
        self.conf.write_text(
            f"{user}"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir / 'data'}/\n"
            "autosave_on_changes true\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            "set_tcp_nodelay true\n"
            f"{self.extra}"
        )

    def start(self, timeout: float = 10.0) -> Broker:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._accepting, timeout, f"mosquitto on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _signal(self, sig: int, wait: bool = True) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        if wait:
            self.proc.wait(timeout=30)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        self.thaw()
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no goodbye; what autosave_on_changes wrote is all that survives."""
        self._signal(signal.SIGKILL)

    def restart(self, *, hard: bool = False) -> None:
        self.kill() if hard else self.stop()
        self.start()

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP, wait=False)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT, wait=False)

    def cleanup(self) -> None:
        self.thaw()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as e:
            return f"<no broker log: {e}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _nodelay(_c: Any, _u: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------------------------
# An MQTT peer for tests: a device, an automation, a dashboard.


class Peer:
    """A paho client in its own thread that records what it receives."""

    def __init__(self, broker_port: int, *, client_id: str | None = None, v5: bool = True,
                 persistent: bool = False) -> None:
        self.client_id = client_id or f"peer-{uuid.uuid4().hex[:8]}"
        self.v5 = v5
        self.port = broker_port
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        self.persistent = persistent
        self.messages: list[paho.MQTTMessage] = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self._subs: list[str] = []
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.connected.clear()
        self.c.on_socket_open = _nodelay
        self.c.reconnect_delay_set(0.05, 0.5)

    def _on_connect(self, c: paho.Client, *_a: Any) -> None:
        for t in self._subs:
            c.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def connect(self, timeout: float = 10.0) -> Peer:
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if self.persistent else 0
        if self.v5:
            self.c.connect("127.0.0.1", self.port, keepalive=5,
                           clean_start=not self.persistent, properties=props)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=5)
        self.c.loop_start()
        if not self.connected.wait(timeout):
            raise TimeoutError("peer could not connect")
        return self

    def subscribe(self, *topics: str, timeout: float = 10.0) -> Peer:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self._subs.extend(topics)
        self.c.subscribe([(t, 1) for t in topics])
        if not done.wait(timeout):
            raise TimeoutError(f"no SUBACK for {topics}")
        return self

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1,
                response_topic: str | None = None, correlation: bytes | None = None,
                wait: bool = True, retain: bool = False) -> None:
        props = None
        if self.v5 and (response_topic or correlation):
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
        info = self.c.publish(topic, payload, qos=qos, properties=props, retain=retain)
        if wait and qos > 0:
            info.wait_for_publish(timeout=30)

    def wait_count(self, n: int, timeout: float = 30.0,
                   pred: Callable[[paho.MQTTMessage], bool] = lambda m: True) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [m for m in self.messages if pred(m)]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"got {len(got)} of {n} messages in {timeout:g} s")
                self.cond.wait(left)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# ----------------------------------------------------------------------------------------------
# edged as a subprocess, with readiness from its sd_notify datagrams.


class NotifySocket:
    """A real NOTIFY_SOCKET: a unix datagram socket that records what the daemon sends."""

    def __init__(self, directory: Path) -> None:
        # AF_UNIX paths are limited to ~107 bytes: keep it short.
        self.path = Path(tempfile.mkdtemp(prefix="edn-")) / "n.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def wait(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if text in m:
                return m
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {text!r} from the daemon in {timeout:g} s; "
                                   f"got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages.append(data)
            if text in data:
                return data

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)


class DaemonProcess:
    """``python -m edged run -c CONFIG`` (or a wrapper module) as a child process."""

    def __init__(self, config_path: Path, workdir: Path, *, module: str = "edged",
                 env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.workdir = workdir
        self.module = module
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daemon.log"
        self.starts = 0

    def start(self, timeout: float = 30.0, *, wait_online: bool = True) -> DaemonProcess:
        self.notify = NotifySocket(self.workdir)
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path),
               "PYTHONPATH": str(ROOT), **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run", "-c", str(self.config_path)],
            stdout=log, stderr=log, env=env, cwd=str(ROOT),
        )
        log.close()
        self.starts += 1
        try:
            self.notify.wait("READY=1", timeout)
            if wait_online:  # subscribed: from here on nothing published is missed
                self.notify.wait("STATUS=online", timeout)
        except TimeoutError:
            self.kill()
            raise TimeoutError(f"daemon not ready; log:\n{self.tail()}") from None
        return self

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(timeout=30)
        self._close_notify()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(timeout=timeout)
        self._close_notify()
        return rc

    def _close_notify(self) -> None:
        n = getattr(self, "notify", None)
        if n is not None:
            n.close()
            self.notify = None  # type: ignore[assignment]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def write_config(path: Path, broker: Broker, *, db: Path, client_id: str = "edged-test",
                 extra: str = "", delivery: str = "", mqtt: str = "") -> Path:
    """A daemon config for tests. ``delivery``/``mqtt`` are TOML lines that override the
    test defaults of those sections; ``extra`` is appended as is."""
    import tomllib

    def merged(defaults: str, override: str) -> str:
        d = tomllib.loads(defaults)
        d.update(tomllib.loads(override))
        return "\n".join(f"{k} = {_toml(v)}" for k, v in d.items())

    mqtt_s = merged(f"""url = "{broker.url}"
client_id = "{client_id}"
keepalive_s = 5
reconnect_min_s = 0.1
reconnect_max_s = 1.0""", mqtt)
    delivery_s = merged("""rate_per_s = 0
shutdown_timeout_s = 5
status_interval_s = 1""", delivery)
    path.write_text(
        f"""
[log]
level = "info"
format = "json"

[mqtt]
{mqtt_s}

[storage]
path = "{db}"

[delivery]
{delivery_s}

{extra}
"""
    )
    return path


def _toml(v: Any) -> str:
    import json
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


@contextmanager
def peer(port: int, **kw: Any) -> Iterator[Peer]:
    p = Peer(port, **kw).connect()
    try:
        yield p
    finally:
        p.close()
