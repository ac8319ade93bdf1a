"""The ``edged`` command. A subcommand is listed here only once it works."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, config, logs

if TYPE_CHECKING:
    import paho.mqtt.client as paho

    from .agents import Stage
    from .memory import Consolidator, Memory, MemoryRow
    from .models import Backend
    from .models.pool import ModelPool

log = logging.getLogger("edged.cli")


def _load(args: argparse.Namespace) -> config.Config:
    path = args.config or config.default_config_path()
    return config.load(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.config or config.default_config_path()
    cfg = config.load(path)
    # Secrets are read (to prove they are readable) but never printed.
    config.mqtt_password(cfg)
    if cfg.cloud.enabled:
        config.cloud_api_key(cfg)
    print(f"{path or '<built-in defaults>'}: OK: {cfg.summary()}")
    return 0


def cmd_run(args: argparse.Namespace, stages: dict[str, Stage] | None = None) -> int:
    import asyncio

    from .service import Daemon

    cfg = _load(args)
    logs.setup(cfg.log.level, cfg.log.format, args.verbose - args.quiet)
    # whatever edged or a plugin creates is private to the service user (state, notes, ...)
    os.umask(0o077)

    async def main() -> None:
        daemon = Daemon(cfg, stages=stages)
        daemon.config_path = args.config or config.default_config_path()  # for SIGHUP
        await daemon.run(install_signals=True)

    from .journal import JournalError

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except JournalError as e:  # cannot open or read it at start: say what to do, no traceback
        c = f" -c {args.config}" if args.config else ""
        print(f"edged: cannot open the journal: {e}\n"
              f"  check it:             edged journal check{c}\n"
              f"  save what it holds:   edged journal recover{c}  (keeps the damaged file)",
              file=sys.stderr)
        return 1
    return 0


def _mqtt_client(cfg: config.Config, prefix: str) -> tuple[paho.Client, str, int, bool]:
    import paho.mqtt.client as paho

    from .bus.client import parse_url

    host, port, tls = parse_url(cfg.mqtt.url)
    v5 = cfg.mqtt.protocol == "5"
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5 if v5 else paho.MQTTv311)
    if cfg.mqtt.username:
        pw = config.mqtt_password(cfg)
        c.username_pw_set(cfg.mqtt.username, pw.get() if pw else None)
    if tls:
        t = cfg.mqtt.tls
        c.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file)
        if t.insecure:
            c.tls_insecure_set(True)
    return c, host, port, v5


def _connect(c: paho.Client, host: str, port: int, timeout: float) -> None:
    ready = threading.Event()
    c.on_connect = lambda *a: ready.set()
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise SystemExit(f"edged: cannot connect to the broker at {host}:{port}: "
                         f"{e.strerror or e}") from None
    c.loop_start()
    if not ready.wait(timeout):
        c.loop_stop()
        raise SystemExit(f"edged: cannot connect to the broker at {host}:{port}")


def _close(c: paho.Client) -> None:
    """Disconnect, then stop the loop: in this order the DISCONNECT wakes paho's network
    thread at once (the other way round, ``loop_stop`` waits out its 1 s select)."""
    c.disconnect()
    c.loop_stop()


def _round_trip(cfg: config.Config, envelope: dict[str, Any], device: str,
                timeout: float) -> tuple[bytes | None, float]:
    """Send one request to ``<prefix>/in/<device>`` and wait for its reply: (payload or None
    on timeout, milliseconds from publish to reply)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c, host, port, v5 = _mqtt_client(cfg, "edged-ask")
    prefix = cfg.mqtt.topic_prefix
    req_id = uuid.uuid4().hex[:16]
    reply_topic = f"{prefix}/out/{device}/{req_id}"  # in the device's own reply space
    got: dict[str, Any] = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        got["payload"] = msg.payload
        done.set()

    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    _connect(c, host, port, timeout)
    c.subscribe(reply_topic, qos=1)
    if not subscribed.wait(timeout):
        raise SystemExit("edged: the broker did not confirm the reply subscription")
    props = None
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply_topic
        props.CorrelationData = req_id.encode()
    t0 = time.perf_counter()
    c.publish(f"{prefix}/in/{device}",
              json.dumps({"id": req_id, **envelope, "reply_to": reply_topic}).encode(), qos=1,
              properties=props)
    ok = done.wait(timeout)
    _close(c)
    return (got["payload"] if ok else None), (time.perf_counter() - t0) * 1000


def _reply_or_error(payload: bytes | None, cfg: config.Config, timeout: float
                    ) -> tuple[dict[str, Any] | None, int]:
    """The decoded reply and 0, or None and the exit code after printing why."""
    if payload is None:
        print(f"edged: no reply within {timeout:g} s (is edged running on {cfg.mqtt.url}?)",
              file=sys.stderr)
        return None, 2
    try:
        reply = json.loads(payload)
    except ValueError:
        reply = {"text": payload.decode("utf-8", "replace")}
    if isinstance(reply, dict) and "error" in reply:
        err = reply["error"] if isinstance(reply["error"], dict) else {}
        print(f"error {err.get('code')}: {err.get('message')}", file=sys.stderr)
        return None, 1
    return reply if isinstance(reply, dict) else {"text": str(reply)}, 0


def cmd_ask(args: argparse.Namespace) -> int:
    cfg = _load(args)
    envelope: dict[str, Any] = {"text": args.text}
    if args.agent:
        envelope["agent"] = args.agent
    payload, elapsed = _round_trip(cfg, envelope, args.device, args.timeout)
    if args.json and payload is not None:
        print(payload.decode("utf-8", "replace"))
        try:
            return 1 if "error" in json.loads(payload) else 0
        except ValueError:
            return 0
    reply, rc = _reply_or_error(payload, cfg, args.timeout)
    if reply is None:
        return rc
    print(reply.get("text", ""))
    for call in reply.get("tool_calls") or []:
        print(f"  tool {call.get('tool')}({json.dumps(call.get('arguments'))}) -> "
              f"{json.dumps(call.get('result'))}")
    print(f"  [{reply.get('agent')}, {elapsed:.0f} ms]", file=sys.stderr)
    return 0


def cmd_models_control(args: argparse.Namespace) -> int:
    """``edged models load|unload ALIAS``: ask the running daemon (its ``models`` agent)."""
    cfg = _load(args)
    data: dict[str, Any] = {"action": args.models_command, "model": args.alias}
    payload, _ = _round_trip(cfg, {"agent": "models", "data": data}, args.device, args.timeout)
    reply, rc = _reply_or_error(payload, cfg, args.timeout)
    if reply is not None:
        print(reply.get("text", ""))
    return rc


def _read_status(cfg: config.Config, timeout: float) -> bytes | None:
    """The retained status payload, or None when there is none."""
    c, host, port, _v5 = _mqtt_client(cfg, "edged-status")
    got: dict[str, Any] = {}
    done = threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        got["payload"] = msg.payload
        done.set()

    c.on_message = on_message
    _connect(c, host, port, timeout)
    c.subscribe(f"{cfg.mqtt.topic_prefix}/status", qos=1)
    done.wait(timeout)
    _close(c)
    return got.get("payload")


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    payload = _read_status(cfg, args.timeout)
    if payload is None:
        print(f"edged: no status on {cfg.mqtt.topic_prefix}/status at {cfg.mqtt.url} "
              "(edged has never run against this broker?)", file=sys.stderr)
        return 1
    got = {"payload": payload}
    try:
        st = json.loads(got["payload"])
    except ValueError:
        print(got["payload"].decode("utf-8", "replace"))
        return 1
    if args.json:
        print(json.dumps(st, indent=2))
        return 0 if st.get("state") == "online" else 1
    age = time.time() - float(st.get("ts", 0) or 0)
    d = st.get("detail", {})
    print(f"edged {st.get('version', '?')} on {cfg.mqtt.url} as {st.get('client_id')}: "
          f"{st.get('state', '?').upper()} ({st.get('health', '?')}), updated {age:.0f} s ago")
    print(f"  queue: {st.get('pending', 0)} pending, {d.get('active', 0)} active, "
          f"{st.get('outbox', 0)} in outbox")
    print(f"  totals: {d.get('in', 0)} in, {d.get('processed', 0)} processed, "
          f"{d.get('out', 0)} sent, {d.get('rejected', 0)} rejected, {d.get('dead', 0)} dead, "
          f"{d.get('duplicates', 0)} duplicates")
    models = st.get("models_loaded") or []
    per = {m["alias"]: m for m in d.get("models", [])}
    loaded = [f"{a} ({per.get(a, {}).get('rss_delta_mb', 0):.0f} MB"
              + (f", worker pid {per[a]['pid']})" if per.get(a, {}).get("pid") else ")")
              for a in models]
    print(f"  models loaded: {', '.join(loaded) if loaded else 'none'}; "
          f"daemon RSS {d.get('rss_mb', '?')} MB")
    for m in d.get("models", []):
        if m.get("failed"):
            print(f"  model {m['alias']} FAILED: {m['failed']}")
        elif m.get("crashes"):
            print(f"  model {m['alias']}: {m['crashes']} worker crash(es) since start")
    gov = d.get("governor") or {}
    print(f"  governor: {gov.get('state', '?')}, {gov.get('mem_available_mb', '?')} MB "
          f"available, battery {gov.get('battery_percent') or 'n/a'}, "
          f"temperature {gov.get('temperature_c') or 'n/a'}; bus {d.get('bus', '?')}")
    errors = d.get("plugin_errors") or []
    print(f"  tools: {d.get('tools', '?')}; plugins not loaded: "
          f"{'; '.join(errors) if errors else 'none'}")
    if d.get("storage", "ok") != "ok":
        print(f"  storage: DEGRADED: {d['storage']}")
    mem = d.get("memory") or {}
    if mem.get("unavailable"):
        print(f"  memory: UNAVAILABLE: {mem['unavailable']}")
    elif mem:
        print(f"  memory: {mem.get('memories', 0)} memories, {mem.get('turns', 0)} turns, "
              f"{mem.get('pending_vectors', 0)} to re-embed")
    cloud = d.get("cloud") or {}
    if cloud:
        print(f"  cloud: {cloud.get('state', '?')}, {cloud.get('answered', 0)} answered, "
              f"{cloud.get('waiting', 0)} waiting, {cloud.get('followups', 0)} follow-ups")
    lat = d.get("latency_ms") or {}
    if lat:
        print("  latency p50/p95 ms: " + ", ".join(
            f"{stage} {_ms(p50)}/{_ms(p95)}" for stage, (p50, p95) in lat.items()))
    print(f"  last error: {d.get('last_error') or d.get('bus_error') or 'none'}")
    return 0 if st.get("state") == "online" else 1


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def cmd_models_list(args: argparse.Namespace) -> int:
    """Configured models with their files; loaded state and RSS from the running daemon."""
    from .models.base import ModelError, file_size
    from .models.bundled import resolve

    cfg = _load(args)
    live: dict[str, Any] = {}
    try:
        payload = _read_status(cfg, args.timeout)
        if payload:
            st = json.loads(payload)
            if st.get("state") == "online":
                live = {m["alias"]: m for m in st.get("detail", {}).get("models", [])}
    except (SystemExit, ValueError):
        pass  # no broker or no daemon: show the configuration alone
    rows = [("ALIAS", "BACKEND", "FILE", "SIZE", "LOADED", "RSS")]
    why: list[str] = []
    for alias, m in cfg.models.items():
        try:
            path = resolve(m.path) if m.path else (m.base_url or "")
            size = file_size(path)
            size_s = f"{size / 2**20:.0f} MB" if size else ("remote" if m.base_url else "-")
        except ModelError as e:
            path, size_s = f"{m.path} ({e})", "missing"
        info = live.get(alias)
        loaded = "?" if not live else ("yes" if info and info.get("loaded") else "no")
        rss = f"{info['rss_delta_mb']:.0f} MB" if info and info.get("loaded") else "-"
        if info and info.get("failed"):
            loaded = "FAILED"
            why.append(f"{alias}: failed: {info['failed']}")
        elif info and info.get("crashes"):
            why.append(f"{alias}: {info['crashes']} worker crash(es) since start")
        rows.append((alias, m.backend, path, size_s, loaded, rss))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    for line in why:
        print(line)
    if not cfg.models:
        print("(no [models] configured)")
    if not live:
        print("(loaded state unknown: no running daemon answered on the status topic)")
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    """Check each local model's files against their published hashes (with progress), load
    it once in a worker process and time a short decode: on a new gateway, before the first
    request has to. A runtime that faults on this CPU is reported in one line."""
    from .models import GenerationRequest, ModelError, create_backend
    from .models.pool import rss_bytes
    from .models.process import WorkerCrashed, WorkerEmbedder, fault_hint
    from .models.verify import check

    cfg = _load(args)
    local = [a for a, m in cfg.models.items() if m.backend != "openai"]
    unknown = [a for a in args.alias if a not in cfg.models]
    if unknown:
        print(f"edged: no model named {', '.join(map(repr, unknown))}; configured: "
              f"{', '.join(cfg.models) or 'none'}", file=sys.stderr)
        return 2
    targets: list[tuple[str, str, bool]] = [  # (label, spec, is the embedder)
        (a, cfg.models[a].path, False) for a in (args.alias or local)
        if cfg.models[a].backend != "openai"]
    emb = cfg.memory.embedder
    if not args.alias and cfg.memory.enabled and emb and not emb.startswith("model:"):
        targets.append(("memory.embedder", emb, True))
    if not targets:
        print("edged: no local models to prepare (remote ones need no files)")
        return 0
    failed = 0
    for label, spec, is_embedder in targets:
        print(f"{label} ({spec})")
        try:
            checks = check(spec, _progress(f"  checking {label} (MB)", scale=2**20),
                           embedder=is_embedder)
        except (ModelError, OSError) as e:
            print(f"  MISSING: {e}")
            failed += 1
            continue
        bad = False
        for c in checks:
            what = f"  file {c.path}: {c.size / 2**20:.1f} MB, sha256 {c.sha256[:16]}..."
            if c.expected is None:
                print(f"{what} (no published hash to compare with; put one in "
                      f"{os.path.basename(c.path)}.sha256 to have it checked)")
            elif c.ok:
                print(f"{what} matches the {c.source}")
            else:
                print(f"{what} DOES NOT MATCH the {c.source} ({c.expected[:16]}...): the file "
                      f"is damaged; reinstall or download it again")
                bad = True
        if bad:
            failed += 1
            continue
        if args.verify_only:
            continue
        t0 = time.perf_counter()
        b: Backend | None = None
        try:  # in a worker process, as the daemon runs it: a native fault is reported here
            if is_embedder:
                embedder = WorkerEmbedder(spec)
                embedder.load()
                loaded = time.perf_counter() - t0
                t1 = time.perf_counter()
                embedder.embed(["turn on the kitchen lights"])
                warm = f"one sentence embedded in {(time.perf_counter() - t1) * 1e3:.1f} ms"
                rss = embedder.worker.rss()
                embedder.unload()
            else:
                b = create_backend(label, cfg.models[label])
                b.load()
                loaded = time.perf_counter() - t0
                try:
                    gen = b.generate(GenerationRequest(
                        prompt="The three primary colours are", max_tokens=24,
                        temperature=0.0), None)
                finally:
                    worker = getattr(b, "worker", None)
                    rss = worker.rss() if worker is not None else rss_bytes()
                    b.unload()
                rate = gen.completion_tokens / gen.seconds if gen.seconds else 0.0
                warm = (f"{gen.prompt_tokens} prompt + {gen.completion_tokens} generated "
                        f"tokens in {gen.seconds:.2f} s ({rate:.0f} tokens/s)")
        except WorkerCrashed as e:
            print(f"  RUNTIME CRASHED: {fault_hint(e, getattr(b, 'system_info', ''))}")
            failed += 1
            continue
        except ModelError as e:
            print(f"  LOAD FAILED: {e}")
            failed += 1
            continue
        print(f"  loaded in a worker in {loaded:.2f} s, worker RSS {rss / 2**20:.0f} MB; "
              f"warm-up: {warm}")
    ok = len(targets) - failed
    print(f"edged: {ok} of {len(targets)} ready" + (f", {failed} FAILED" if failed else ""))
    return 1 if failed else 0


def cmd_tools_list(args: argparse.Namespace) -> int:
    """Every tool the configured plugin folders, entry points and built-ins provide."""
    from .tools import registry

    cfg = _load(args)
    reg = registry.load(list(cfg.plugins.dirs), import_timeout_s=cfg.plugins.import_timeout_s)
    for t in sorted(reg.tools.values(), key=lambda t: t.name):
        params = ", ".join(
            f"{n}{'' if n in t.parameters.get('required', []) else '?'}"
            for n in t.parameters.get("properties", {}))
        print(f"{t.name}({params}): {t.description}")
    for e in reg.errors:
        print(f"NOT LOADED {e.plugin} ({e.source}): {e.error}", file=sys.stderr)
    return 1 if reg.errors else 0


def cmd_tools_audit(args: argparse.Namespace) -> int:
    """The audit trail: every tool call, run or refused, newest first."""
    import sqlean

    cfg = _load(args)
    db = cfg.db_path
    if not db.exists():
        print(f"edged: no database at {db}", file=sys.stderr)
        return 1
    conn = sqlean.connect(f"file:{db}?mode=ro", uri=True)
    sql = ("SELECT ts, device, agent, tool, arguments, outcome, detail, duration_ms, "
           "request_id FROM tool_calls")
    params: list[str | int] = []
    where = []
    if args.device:
        where.append("device = ?")
        params.append(args.device)
    if args.tool:
        where.append("tool GLOB ?")
        params.append(args.tool)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(args.limit)
    rows = conn.execute(sql, params).fetchall()
    for ts, device, agent, tool, arguments, outcome, detail, ms, rid in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
        extra = f" ({detail})" if detail and outcome != "ok" else ""
        print(f"{when} {device} {agent} {tool}({arguments}) -> {outcome}{extra} "
              f"[{ms:.0f} ms, request {rid}]")
    if not rows:
        print("(no tool calls recorded)")
    return 0


def cmd_journal(args: argparse.Namespace) -> int:
    """check | recover the journal database (``storage.path``)."""
    import sqlean

    from .journal import INBOX_STATES, JournalError, check_file, recover_file

    cfg = _load(args)
    path = cfg.db_path
    if not path.is_file():
        print(f"edged: no journal at {path}", file=sys.stderr)
        return 1
    c = f" -c {args.config}" if args.config else ""
    if args.journal_command == "check":
        report = check_file(path)
        if report.problems:
            print(f"edged journal {path}: DAMAGED")
            for problem in report.problems[:20]:
                print(f"  {problem}")
            print(f"  stop edged, then save what it holds: edged journal recover{c}")
            return 1
        n = report.counts
        print(f"edged journal {path}: OK")
        print(f"  inbox {n['inbox']} (" + ", ".join(
            f"{report.states.get(s, 0)} {s}" for s in INBOX_STATES) + f"), outbox "
            f"{n['outbox']}, dedup keys {n['seen']}, steps {n['steps']}, tool calls "
            f"{n['tool_calls']}, scheduled {n['scheduled']}, escalations {n['escalations']}")
        return 0
    try:
        s = recover_file(path)
    except (JournalError, sqlean.Error, OSError) as e:
        print(f"edged: cannot recover {path}: {e}", file=sys.stderr)
        return 1
    how = "it read whole: copied as is" if s.method == "copy" else \
        "damaged: read row by row, skipping what is unreadable"
    print(f"edged journal {path}: recovered ({how})")
    print("  saved: " + ", ".join(f"{t} {k}" for t, k in s.saved.items()))
    for lost in s.unreadable:
        print(f"  lost: {lost}")
    print(f"  the damaged file is kept as {s.kept}")
    return 0


class _OfflineMemory:
    """The memory database with the configured embedder, for the CLI (no daemon needed; it
    may run at the same time: SQLite WAL)."""

    def __init__(self, cfg: config.Config, *, with_model: bool = False) -> None:
        self.cfg = cfg
        self.with_model = with_model
        self.pool: ModelPool | None = None
        self.memory: Memory
        self.consolidator: Consolidator

    async def __aenter__(self) -> _OfflineMemory:

        from .memory import Consolidator, Memory, open_embedder, schema_generate
        from .models.pool import ModelPool

        cfg = self.cfg
        model = cfg.memory_model if self.with_model else None
        if cfg.memory.embedder.startswith("model:") or model:
            self.pool = ModelPool(dict(cfg.models), cfg.resources)
        embed, ident, _ = await open_embedder(cfg, self.pool)
        self.memory = Memory(cfg.memory, cfg.memory_path, embed=embed, embedder_id=ident)
        pending = await self.memory.open()
        if pending:
            print(f"re-embedding {pending} memories with {ident} first ...", file=sys.stderr)
            await self.memory.reembed(progress=_progress("re-embedded"))
        # a consolidation model comes with the pool made for it above
        generate = schema_generate(self.pool, model, priority=5) \
            if model and self.pool is not None else None
        self.consolidator = Consolidator(self.memory, cfg.memory, generate=generate,
                                         model=model)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.memory.close()
        if self.pool is not None:
            await self.pool.close()


def _progress(what: str, *, scale: int = 1) -> Callable[[int, int], None]:
    """A progress line on stderr ("what: 12/40 (30%)"), redrawn in place on a terminal and
    printed every 10% otherwise (logs stay short). ``scale`` divides the counts (bytes ->
    MB)."""
    tty = sys.stderr.isatty()
    last = [-1]

    def show(done: int, total: int) -> None:
        done, total = -(-done // scale), -(-total // scale)  # rounded up: ends at total
        pct = int(100 * done / total) if total else 100
        if tty:
            end = "\n" if done >= total else ""
            print(f"\r{what}: {done}/{total} ({pct}%)", end=end, file=sys.stderr, flush=True)
        elif pct // 10 != last[0] or done >= total:
            last[0] = pct // 10
            print(f"{what}: {done}/{total} ({pct}%)", file=sys.stderr, flush=True)
    return show


def _print_memories(rows: list[MemoryRow], as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated))
        sim = f" sim {r.similarity:.2f}" if r.similarity is not None else ""
        print(f"#{r.id} [{r.scope}] {r.kind}{sim} ({when}, importance {r.importance:.2f}): "
              f"{r.text}")
    if not rows:
        print("(no memories)")


def cmd_memory(args: argparse.Namespace) -> int:
    """search | list | forget | consolidate | stats on the memory database."""
    import asyncio

    cfg = _load(args)
    action = args.memory_command
    if action != "consolidate" and not cfg.memory_path.exists():
        print(f"edged: no memory database at {cfg.memory_path}", file=sys.stderr)
        return 1
    if action == "forget" and not args.device:
        raise SystemExit("edged memory forget: --device is required (what to forget)")

    async def main() -> int:
        if action in ("list", "forget", "stats"):
            from .memory import MemoryStore

            store = MemoryStore(cfg.memory_path)
            store.open()
            try:
                if action == "list":
                    _print_memories(store.list(args.device, kind=args.kind, limit=args.limit),
                                    args.json)
                elif action == "stats":
                    print(json.dumps(store.stats(), indent=1))
                else:
                    gone = store.forget(args.device)
                    print(f"forgot device {args.device!r}: {gone['memories']} memories, "
                          f"{gone['vectors']} vectors, {gone['turns']} turns")
            finally:
                store.close()
            return 0
        async with _OfflineMemory(cfg, with_model=action == "consolidate") as om:
            if action == "search":
                scopes = [args.device] if args.device else \
                    await om.memory.run(om.memory.store.scopes)
                rows = []
                for scope in scopes:
                    rows += await om.memory.recall(
                        args.query, scope, k=args.limit, kinds=[args.kind] if args.kind
                        else None, min_similarity=0.0, touch=False)
                rows.sort(key=lambda r: -(r.score or 0.0))
                _print_memories(rows[: args.limit], args.json)
            else:  # consolidate
                shown = _progress("consolidated sessions")

                async def on_session(_session: str, i: int, n: int) -> None:
                    shown(i, n)

                report = await om.consolidator.run(on_session=on_session)
                print(json.dumps(report.to_dict(), indent=1))
        return 0

    return asyncio.run(main())


def cmd_demo(args: argparse.Namespace) -> int:
    """The house assistant against an embedded MQTT broker: zero set-up (extra: demo)."""
    from . import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edged", description="Event-driven AI daemon for edge gateways.")
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=None,
                        help="config file (default: $EDGED_CONFIG, /etc/edged/edged.toml, "
                             "~/.config/edged/edged.toml, else built-in defaults)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    common.add_argument("-q", "--quiet", action="count", default=0, help="less logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("run", parents=[common], help="run the daemon (foreground)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("check-config", parents=[common], help="validate the config file")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("ask", parents=[common], help="send a request over MQTT, print the reply")
    s.add_argument("text")
    s.add_argument("--agent", default=None)
    s.add_argument("--device", default="cli")
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--json", action="store_true", help="print the raw reply JSON")
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("models", parents=[common],
                       help="models: list, load, unload, prepare")
    msub = s.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    m = msub.add_parser("list", parents=[common],
                        help="configured models, files, sizes, loaded state and RSS")
    m.add_argument("--timeout", type=float, default=2.0)
    m.set_defaults(func=cmd_models_list)
    for action, what in (("load", "load a model in the running daemon now"),
                         ("unload", "unload a model from the running daemon now")):
        m = msub.add_parser(action, parents=[common], help=what)
        m.add_argument("alias")
        m.add_argument("--device", default="cli", help="the device id the request comes "
                       f"from (the ACL checks models.{action} for it)")
        m.add_argument("--timeout", type=float, default=60.0)
        m.set_defaults(func=cmd_models_control)
    m = msub.add_parser("prepare", parents=[common],
                        help="check model files against published hashes, load once, warm up")
    m.add_argument("alias", nargs="*", help="configured models (default: all local ones "
                   "and the memory embedder)")
    m.add_argument("--verify-only", action="store_true", help="check the files, load nothing")
    m.set_defaults(func=cmd_models_prepare)

    s = sub.add_parser("tools", parents=[common], help="tools: list, audit")
    tsub = s.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    t = tsub.add_parser("list", parents=[common], help="tools from plugins, with parameters")
    t.set_defaults(func=cmd_tools_list)
    t = tsub.add_parser("audit", parents=[common],
                        help="the audit trail of tool calls (run or refused)")
    t.add_argument("--device", default=None)
    t.add_argument("--tool", default=None, help="a glob, e.g. 'locks.*'")
    t.add_argument("--limit", type=int, default=50)
    t.set_defaults(func=cmd_tools_audit)

    s = sub.add_parser("memory", parents=[common],
                       help="memory: search, list, forget, consolidate, stats")
    msub = s.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    m = msub.add_parser("search", parents=[common], help="memories nearest to a text")
    m.add_argument("query")
    m.add_argument("--device", default=None, help="one device's scope (default: all)")
    m.add_argument("--kind", default=None)
    m.add_argument("--limit", type=int, default=5)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_memory)
    m = msub.add_parser("list", parents=[common], help="memories, newest first")
    m.add_argument("--device", default=None)
    m.add_argument("--kind", default=None)
    m.add_argument("--limit", type=int, default=50)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_memory)
    m = msub.add_parser("forget", parents=[common],
                        help="remove a device's memories, vectors and turns")
    m.add_argument("--device", required=True)
    m.set_defaults(func=cmd_memory)
    m = msub.add_parser("consolidate", parents=[common],
                        help="run consolidation once now (prints the report)")
    m.set_defaults(func=cmd_memory)
    m = msub.add_parser("stats", parents=[common], help="counts, embedder, database size")
    m.set_defaults(func=cmd_memory)

    s = sub.add_parser("journal", parents=[common], help="journal: check, recover")
    jsub = s.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    j = jsub.add_parser("check", parents=[common],
                        help="integrity check and table counts; exit 1 when damaged")
    j.set_defaults(func=cmd_journal)
    j = jsub.add_parser("recover", parents=[common],
                        help="copy what can be read into a fresh journal (edged stopped); "
                             "keeps the damaged file as <name>.corrupt-<time>")
    j.set_defaults(func=cmd_journal)

    s = sub.add_parser("status", parents=[common], help="show the retained daemon status")
    s.add_argument("--timeout", type=float, default=3.0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser(
        "demo",
        help="the house assistant with an embedded MQTT broker and sample requests (zero set-up)",
        description="Start an embedded MQTT broker (amqtt, extra 'demo') on a free loopback "
                    "port, run edged against it (MQTT 3.1.1) with the house assistant, send a "
                    "few sample device requests and print the replies, then keep running for "
                    "'edged ask ... -c STATE/demo.toml' until Ctrl-C.")
    s.add_argument("-c", "--config", type=Path, default=None,
                   help="the config to start from (default: the repository's "
                        "examples/house.toml); the demo replaces its broker and storage and "
                        "finds relative plugin folders next to it")
    s.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    s.add_argument("-q", "--quiet", action="count", default=0, help="less logging")
    s.add_argument("--port", type=int, default=None,
                   help="the broker's port on 127.0.0.1 (default: a free one)")
    s.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help="state folder: database, plugin state, demo.toml "
                        "(default: ~/.local/state/edged-demo)")
    s.add_argument("--samples", type=int, default=None, metavar="N",
                   help="how many of the sample requests to send (default: all)")
    s.add_argument("--no-wait", action="store_true",
                   help="stop after the samples instead of running until Ctrl-C")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None, *, stages: dict[str, Stage] | None = None) -> int:
    """Entry point. ``stages`` lets an embedding program add processing stages to ``run``."""
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.setup("warning", "auto", args.verbose - args.quiet)
    try:
        if args.command == "run":
            return cmd_run(args, stages)
        return int(args.func(args))
    except config.ConfigError as e:
        print(f"edged: config error:\n{e}", file=sys.stderr)
        return 2
