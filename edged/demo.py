"""``edged demo``: the house assistant against an embedded MQTT broker, with zero set-up.

Nothing but the package is needed (no mosquitto): an amqtt broker (extra ``demo``, imported
only here) runs in this process, on its own thread and event loop, on a free loopback port.
edged runs against it in MQTT 3.1.1 mode with the house assistant of
``examples/house.toml`` (the bundled SmolLM2-135M, MiniLM embeddings and the example plugins),
a few devices send sample requests the way real ones do, and the replies are printed. Then it
keeps running, so that ``edged ask ... -c <state>/demo.toml`` works from another terminal, until
Ctrl-C or SIGTERM: edged stops gracefully first, then the broker.

amqtt 0.12.1 (MIT) quirks found with paho 2.2 in MQTT 3.1.1, and what the demo does:

- The session of an anonymous client is never kept: edged's clean_session=0 connect gets
  ``session present = 0`` every time and nothing is queued for it while it is away. edged
  re-subscribes on every connect, and broker and daemon live and die in one process, so there
  is no "away" to bridge. (A session that is kept, for a client with a user name, does not
  resend a delivered, unacknowledged QoS 1 message on reconnect either, MQTT-4.4.0-1, and
  shutdown could hang after a session take-over: the demo stays with anonymous clients.)
- Keep-alive is not enforced (a read timeout is ignored) but PINGREQ is answered: idle
  clients stay connected; on loopback the kernel reports a dead peer anyway.
- On connect, a client is sent the retained messages matching *any* client's subscriptions,
  its own or not: while something watches ``edged/status``, ``edged ask`` took the retained
  status for its reply. The demo's broker sends a client its own subscriptions' only.
- ``Broker.shutdown()`` is bounded by a timeout in case it hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__, config
from .extras import EXTRAS, MissingExtra

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

T = TypeVar("T")

log = logging.getLogger("edged.demo")

# (device, request): what the demo's devices say. The kids' tablet is denied locks.* by the
# house config's ACL: its request is refused in code, never run.
SAMPLES: list[tuple[str, str]] = [
    ("kitchen-panel", "turn on the kitchen lights"),
    ("phone", "set the bedroom to twenty one degrees"),
    ("phone", "add oat milk to the shopping list"),
    ("kids-tablet", "unlock the front door"),
    ("hall", "what time is it"),
]

HOST = "127.0.0.1"
REPLY_TIMEOUT_S = 180.0  # the first request also loads the model
START_TIMEOUT_S = 180.0  # loading the embedder and the plugins

# A copy of examples/house.toml for an installation without the repository's examples (the
# example plugins are not part of the package: without them the assistant has the built-in
# tools only).
HOUSE_FALLBACK = """
[mqtt]
client_id = "edged-house"
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 1024
threads = 2
[resources]
idle_unload_s = 300
[agents.house]
model = "small"
description = "Controls lights, heating, locks, notes and timers, and tells the time."
tools = ["home.*", "notes.*", "locks.*", "timers.*", "clock.*", "system.*", "gateway.*",
         "memory.*"]
[router]
default_agent = "house"
[memory]
embedder = "bundled:minilm-l6-int8"
[[acl]]
match = "kids-tablet"
deny = ["locks.*", "models.*"]
[[acl]]
match = "cli"
allow = ["models.*"]
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _require_amqtt() -> Any:
    """amqtt's broker module, or MissingExtra naming the extra (the same phrasing as
    :func:`edged.extras.require`)."""
    try:
        import amqtt.broker
    except ImportError as e:
        raise MissingExtra(
            f"amqtt is not installed ({e}); install it with: pip install 'edged[demo]'"
        ) from e
    return amqtt.broker


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edged-demo"


def house_example() -> Path | None:
    """examples/house.toml of the checkout the package runs from, if there is one."""
    p = Path(__file__).resolve().parent.parent / "examples" / "house.toml"
    return p if p.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# The demo config: the house assistant, pointed at the embedded broker


def _resolve_dirs(dirs: list[str], base: Path | None) -> tuple[list[str], list[str]]:
    """Plugin folders made absolute: a relative one is looked up next to the config file and
    one level up (examples/house.toml names the repository's ``plugins``)."""
    found, missing = [], []
    for d in dirs:
        p = Path(d).expanduser()
        candidates = [p] if p.is_absolute() or base is None else \
            [base.parent / p, base.parent.parent / p]
        hit = next((c for c in candidates if c.is_dir()), None)
        if hit is None:
            missing.append(d)
        else:
            found.append(str(hit.resolve()))
    return found, missing


def demo_config(base: Path | None, state: Path, port: int) -> tuple[dict[str, Any], list[str]]:
    """The raw config of the demo and notes about it. ``base`` is the config to start from
    (examples/house.toml, else a copy of it)."""
    raw = tomllib.loads(base.read_text(encoding="utf-8")) if base else \
        tomllib.loads(HOUSE_FALLBACK)
    notes = []
    mqtt = raw.setdefault("mqtt", {})
    for key in ("username", "password_file", "tls", "shared_group", "embedded_broker"):
        mqtt.pop(key, None)  # the embedded broker: anonymous, plain TCP, no shared subscriptions
    mqtt.update(url=f"mqtt://{HOST}:{port}", protocol="3.1.1", client_id="edged-demo")
    raw.setdefault("storage", {})["path"] = str(state / "edged.db")
    raw.get("memory", {}).pop("path", None)  # next to the journal, in the state folder
    plugins = raw.setdefault("plugins", {})
    dirs, missing = _resolve_dirs(list(plugins.get("dirs", [])), base)
    plugins["dirs"] = dirs
    if base is None:
        notes.append("examples/house.toml and the example plugins come with the repository, "
                     "not the package: only the built-in tools are there")
    elif missing:
        notes.append(f"plugin folder(s) not found: {', '.join(missing)}")
    return raw, notes


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON escapes are TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_dumps(d: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """A small TOML writer for decoded configs (tables, arrays of tables, scalars, lists)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in d.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for k, v in d.items():
        sub = (*path, k)
        if isinstance(v, dict):
            only_tables = v and all(isinstance(x, dict) or _is_table_array(x)
                                    for x in v.values())
            header = [""] if only_tables else ["", f"[{'.'.join(map(_key, sub))}]"]
            lines += [*header, toml_dumps(v, sub)]
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{'.'.join(map(_key, sub))}]]", toml_dumps(item, sub)]
    return "\n".join(lines).strip("\n")


def write_config(raw: dict[str, Any], path: Path, source: str) -> None:
    text = (f"# Written by `edged demo` (edged {__version__}) from {source}: the embedded broker,\n"
            "# MQTT 3.1.1, state in this folder. Regenerated on every start of the demo.\n\n"
            + toml_dumps(raw) + "\n")
    if tomllib.loads(text) != raw:  # the writer is small: never write a config that lies
        raise RuntimeError("internal error: the demo config does not round-trip through TOML")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def preflight(cfg: config.Config) -> list[str]:
    """What the house assistant needs and is not installed, each with its install command."""
    from .models.base import ModelError
    from .models.bundled import resolve

    problems = []
    runtimes = {"llama_cpp": "llama_cpp", "onnx_genai": "onnxruntime_genai"}
    needed = {runtimes[m.backend] for m in cfg.models.values() if m.backend in runtimes}
    paths = [m.path for m in cfg.models.values() if m.path]
    if cfg.memory.embedder.startswith("bundled:"):
        needed |= {"onnxruntime", "tokenizers", "numpy"}
        paths.append(cfg.memory.embedder)
    for module in sorted(needed):
        if importlib_util.find_spec(module) is None:
            problems.append(f"{module} is not installed; install it with: "
                            f"pip install 'edged[{EXTRAS.get(module, 'all')}]'")
    for p in paths:
        if p.startswith("bundled:"):
            try:
                resolve(p)
            except ModelError as e:
                problems.append(str(e))
    return problems


# --------------------------------------------------------------------------------------------
# The embedded broker


class DemoError(Exception):
    pass


class EmbeddedBroker:
    """An amqtt broker on HOST:port, on its own thread and event loop (so that nothing the
    daemon's loop does can stall it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            # anonymous clients only; no $SYS topics and no packet logging
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }

    def start(self, timeout: float = 15.0) -> None:
        broker_mod = _require_amqtt()
        self._thread = threading.Thread(target=self._run, args=(broker_mod,),
                                        name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise DemoError(f"the embedded broker did not start within {timeout:g} s")
        if self._error is not None:
            raise self._error

    def _run(self, broker_mod: Any) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def start() -> None:
            self._broker = _own_retained_only(broker_mod.Broker)(self.config())
            await self._broker.start()

        try:
            loop.run_until_complete(start())
        except BaseException as e:  # reported by start() in the caller's thread
            self._error = e
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            with contextlib.suppress(RuntimeError):
                loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            try:
                await asyncio.wait_for(self._broker.shutdown(), timeout)
            except TimeoutError:
                log.warning("the embedded broker did not shut down within %g s; "
                            "closing it anyway", timeout)

        fut = asyncio.run_coroutine_threadsafe(shutdown(), loop)
        try:
            fut.result(timeout + 2.0)
        except Exception as e:
            log.warning("embedded broker shutdown: %r", e)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)


def _own_retained_only(broker_cls: Any) -> Any:
    """amqtt 0.12's Broker, except that a connecting client is sent the retained messages of
    its own subscriptions only. amqtt sends it those matching every client's subscriptions,
    so while anyone watches ``edged/status``, ``edged ask`` would take the retained status
    for its reply (and edged would receive it as a request)."""

    class Broker(broker_cls):
        async def _publish_retained_messages_for_subscription(
                self, subscription: tuple[str, int], session: Any) -> None:
            subscribers = self._subscriptions.get(subscription[0], ())
            if any(s.client_id == session.client_id for s, _qos in subscribers):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return Broker


def start_broker(port: int | None) -> EmbeddedBroker:
    """The broker on ``port``, else on a free port (another pick if one is taken meanwhile)."""
    for attempt in range(3):
        broker = EmbeddedBroker(port or free_port())
        try:
            broker.start()
            return broker
        except MissingExtra:
            raise
        except Exception as e:
            cause = e.__cause__ or e
            in_use = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
            if port is None and in_use and attempt < 2:
                continue
            raise DemoError(f"cannot start the embedded MQTT broker on "
                            f"{HOST}:{broker.port}: {cause}") from None
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Devices: paho clients that talk to edged the way an MQTT 3.1.1 device does


@dataclass
class Answer:
    reply: dict[str, Any] | None  # None: no reply in time
    elapsed_ms: float


class Device:
    """One device: publishes ``<prefix>/in/<name>`` (QoS 1) with a JSON envelope whose
    ``reply_to`` names its own reply topic (3.1.1 has no response-topic property)."""

    def __init__(self, name: str, port: int, prefix: str) -> None:
        import paho.mqtt.client as paho

        self.name = name
        self.port = port
        self.prefix = prefix
        self.reply_topic = f"{prefix}/out/{name}/reply"  # in the device's own reply space
        self._loop = asyncio.get_running_loop()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connected: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._subscribed: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"demo-{name}-{uuid.uuid4().hex[:6]}",
                             protocol=paho.MQTTv311, clean_session=True)
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self._settle(self._connected, rc)
        self.c.on_subscribe = lambda _c, _u, _m, rcs, _p: self._settle(self._subscribed, rcs)
        self.c.on_message = self._on_message

    def _settle(self, fut: asyncio.Future[T], value: T) -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_result(value)
        self._loop.call_soon_threadsafe(settle)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            reply = json.loads(msg.payload)
        except ValueError:
            return
        fut = self._waiting.get(str(reply.get("id"))) if isinstance(reply, dict) else None
        if fut is not None:
            self._settle(fut, reply)

    async def connect(self, timeout: float = 10.0) -> Device:
        await asyncio.to_thread(self.c.connect, HOST, self.port, 30)
        self.c.loop_start()
        rc = await asyncio.wait_for(self._connected, timeout)
        if getattr(rc, "is_failure", False):
            raise DemoError(f"the broker refused the connection: {rc}")
        self.c.subscribe(self.reply_topic, qos=1)
        await asyncio.wait_for(self._subscribed, timeout)
        return self

    async def ask(self, text: str, timeout: float) -> Answer:
        rid = f"{self.name}-{uuid.uuid4().hex[:8]}"
        fut = self._waiting[rid] = self._loop.create_future()
        body = json.dumps({"id": rid, "text": text, "reply_to": self.reply_topic})
        t0 = time.perf_counter()
        self.c.publish(f"{self.prefix}/in/{self.name}", body.encode(), qos=1)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            reply = None
        finally:
            self._waiting.pop(rid, None)
        return Answer(reply, (time.perf_counter() - t0) * 1000)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.c.disconnect()
        self.c.loop_stop()


def _j(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def show(answer: Answer) -> None:
    """The reply, its tool calls and the latency (under the request, printed when sent)."""
    r = answer.reply
    if r is None:
        _say(f"edged> (no reply within {REPLY_TIMEOUT_S:g} s)")
        return
    if "error" in r:
        err = r.get("error") or {}
        _say(f"edged> error {err.get('code')}: {err.get('message')}")
    else:
        lines = str(r.get("text", "")).splitlines() or [""]
        _say(f"edged> {lines[0]}")
        for extra in lines[1:]:
            _say(f"       {extra}")
    for call in r.get("tool_calls") or []:
        result = call.get("result")
        err = result.get("error") if isinstance(result, dict) and len(result) == 1 else None
        if isinstance(err, str) and err.startswith("not allowed"):
            outcome = f"REFUSED, not run ({err})"
        elif err is not None:
            outcome = f"error: {err}"
        else:
            outcome = _j(result)
        _say(f"  tool {call.get('tool')}({_j(call.get('arguments'))}) -> {outcome}")
    _say(f"  [{r.get('agent', '?')} agent, {answer.elapsed_ms:.0f} ms]")


# --------------------------------------------------------------------------------------------
# The demo


def _edged_command() -> list[str]:
    """How to run this edged from another terminal."""
    script = Path(sys.executable).parent / "edged"
    found = shutil.which("edged")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return ["edged"]
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "edged"]


async def _until(what: Awaitable[object], daemon_task: asyncio.Task[None], timeout: float
                 ) -> bool:
    """Await ``what`` unless the daemon stops first; False then."""
    waiter = asyncio.ensure_future(what)
    try:
        done, _ = await asyncio.wait({waiter, daemon_task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if waiter in done:
        return True
    if daemon_task in done:
        return False
    raise TimeoutError


async def _samples(samples: list[tuple[str, str]], port: int, prefix: str) -> int:
    """Send the samples one by one, print each answer; the number answered."""
    devices: dict[str, Device] = {}
    answered = 0
    try:
        for name, text in samples:
            if name not in devices:
                device = Device(name, port, prefix)
                try:
                    devices[name] = await device.connect()
                except (OSError, TimeoutError, DemoError) as e:
                    device.close()
                    _say(f"{name}: cannot connect to the broker: {e or type(e).__name__}")
                    continue
            _say(f"{name}> {text}")
            answer = await devices[name].ask(text, REPLY_TIMEOUT_S)
            show(answer)
            _say()
            answered += answer.reply is not None
    finally:
        for d in devices.values():
            d.close()
    return answered


async def run_demo(args: argparse.Namespace, cfg: config.Config, cfg_path: Path,
                   broker: EmbeddedBroker) -> int:
    """Run edged against the broker, send the samples, then wait for a signal (or not)."""
    from .service import Daemon

    daemon = Daemon(cfg)
    daemon.config_path = cfg_path  # SIGHUP re-reads it
    loop = asyncio.get_running_loop()
    # A signal before the daemon installs its own handlers stops it once it is online (a stop
    # while its MQTT connect is under way would leave that socket to the garbage collector).
    early_stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, early_stop.set)
    daemon_task = asyncio.create_task(daemon.run(install_signals=True), name="edged")
    status = 0
    try:
        online = await _until(daemon.ready.wait(), daemon_task, START_TIMEOUT_S)
        if online:
            assert daemon.bus is not None  # set before ready
            online = await _until(daemon.bus.subscribed.wait(), daemon_task, 30.0)
        if early_stop.is_set():
            daemon.request_stop()
        elif online:
            tools = len(daemon.app.registry.tools)
            samples = SAMPLES if args.samples is None else SAMPLES[: max(0, args.samples)]
            _say(f"edged demo: edged {__version__} is online with {len(cfg.agents)} agent(s) "
                 f"and {tools} tools; sending {len(samples)} sample request(s) "
                 "(the model loads when first needed)")
            _say()
            sampling = asyncio.create_task(
                _samples(samples, broker.port, cfg.mqtt.topic_prefix), name="samples")
            done, _ = await asyncio.wait({sampling, daemon_task},
                                         return_when=asyncio.FIRST_COMPLETED)
            if sampling in done:
                answered = sampling.result()
                _say(f"edged demo: {answered} of {len(samples)} requests answered")
                if answered < len(samples):
                    status = 1
                if not args.no_wait and not daemon_task.done():
                    _hint(cfg_path)
            else:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
        if args.no_wait:
            daemon.request_stop()
        await daemon_task
    except TimeoutError:
        print("edged demo: edged did not come online in time", file=sys.stderr)
        status = 1
    except Exception as e:
        print(f"edged demo: edged failed: {e!r}", file=sys.stderr)
        log.debug("edged failed", exc_info=True)
        status = 1
    finally:
        if not daemon_task.done():
            daemon.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(daemon_task), 60)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    _say("edged demo: edged stopped")
    return status


def _hint(cfg_path: Path) -> None:
    exe = _edged_command()
    c = ["-c", str(cfg_path)]
    _say("edged demo: running. Try it from another terminal:")
    _say("  " + shlex.join([*exe, "ask", "what time is it", *c]))
    _say("  " + shlex.join([*exe, "ask", "turn off the kitchen lights", *c]))
    _say("  " + shlex.join([*exe, "ask", "unlock the front door", "--device", "kids-tablet",
                            *c]))
    _say("  " + shlex.join([*exe, "status", *c]))
    _say("  " + shlex.join([*exe, "tools", "audit", *c]))
    _say("Press Ctrl-C to stop.")


def _interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    verbosity = args.verbose - args.quiet
    # amqtt reports every connection at info and its own quirks as warnings: the demo's
    # output is the conversation. -v shows them.
    logging.getLogger("amqtt").setLevel(logging.NOTSET if verbosity > 0 else logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        _require_amqtt()
    except MissingExtra as e:
        print(f"edged demo: {e}", file=sys.stderr)
        return 1
    if args.config is not None and not Path(args.config).is_file():
        raise config.ConfigError(f"{args.config}: file not found")
    base = Path(args.config) if args.config is not None else house_example()
    source = str(base) if base else "a built-in copy of examples/house.toml"
    state = (args.state or default_state_dir()).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    # Until the event loop handles them: SIGTERM like Ctrl-C, so that the broker is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        broker = start_broker(args.port)
    except DemoError as e:
        print(f"edged demo: {e}", file=sys.stderr)
        return 1
    try:
        _say(f"edged demo: embedded MQTT broker (amqtt) on {HOST}:{broker.port}")
        raw, notes = demo_config(base, state, broker.port)
        cfg_path = state / "demo.toml"
        write_config(raw, cfg_path, source)
        cfg = config.load(cfg_path)
        problems = preflight(cfg)
        if problems:
            print("edged demo: the house assistant needs what is not installed:\n  "
                  + "\n  ".join(problems), file=sys.stderr)
            return 1
        _say(f"edged demo: house assistant from {source}; "
             f"plugins: {', '.join(cfg.plugins.dirs) or 'none'}")
        for n in notes:
            _say(f"edged demo: note: {n}")
        _say(f"edged demo: state in {state}; config written to {cfg_path}")
        _say("edged demo: starting edged (MQTT 3.1.1) and loading the embedder ...")
        return asyncio.run(run_demo(args, cfg, cfg_path, broker))
    except KeyboardInterrupt:
        return 130
    finally:
        broker.stop()
        _say("edged demo: broker stopped")
