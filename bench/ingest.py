"""Ingest throughput: edged (journal, ack after commit, ``sink`` route) against a bare aiomqtt
subscriber, both draining the same N QoS 1 messages from the same broker and publisher.

Method, per contender and round (each round gets a fresh private mosquitto, so no session or
queue left over from an earlier round can interfere):

1. create the contender's persistent session (MQTT v5, clean start off, session expiry > 0)
   with a QoS 1 subscription to ``bench/sink/#``, then disconnect it;
2. publish N QoS 1 JSON requests (``{"id": ..., "text": ...}``, ~140 bytes) with one paho
   publisher (the same code for both); the broker queues them for the offline session, so the
   publisher's speed cannot limit either contender;
3. connect the contender and time how fast it drains the queue:

   * baseline: an ``aiomqtt.Client`` that counts messages from ``client.messages``. The clock
     starts when the first message enters aiomqtt's queue and stops when the N-th is consumed;
     rate = (N - 1) / span.
   * edged: ``python -m edged run`` (a subprocess, as deployed) with ``bench/sink/#`` routed to
     the built-in ``sink`` agent (journal only, no reply), rate limiting off and a large
     ``max_pending``. Its time is the span between the first and the last ``received_at`` in
     its journal's ``inbox`` table (stamped when a batch is journaled). The rows of the first
     batch share the first stamp, so rate = (N - rows of the first batch) / span, i.e. the same
     "messages after the first instant / time since the first instant" as the baseline.
     Completion is awaited by polling ``max(id)`` of ``inbox`` (ids are rowids and nothing is
     deleted, so it equals the row count) over a read-only connection, every 50 ms: WAL mode
     lets a reader look while the daemon writes, ``max(id)`` is an index lookup, not a scan, and
     the timing does not depend on the poll since it comes from the journal's own stamps. After
     a graceful stop (SIGTERM), the journal is checked: exactly N rows, N distinct keys, all
     ``done`` -- nothing lost, nothing doubled.

Both counts reaching N also proves the broker had queued all N messages for each session
(the publisher waits for every PUBACK first; the broker log is checked for dropped messages).

Peak RSS of edged is ``VmHWM`` from ``/proc/<pid>/status`` read just before it is stopped (its
idle value after start-up is recorded too). Journal commits: while only ``sink`` messages flow,
every ``Journal.accept`` call is one commit, so the number of distinct ``received_at`` stamps
counts them (with the mean batch size).

Each contender runs ``--rounds`` rounds (interleaved: baseline, edged, baseline, ...); the table
shows the best round of each (throughput noise on a shared machine only ever slows a run down),
every round is in the JSON.

The broker: ``tests.harness.Broker`` (persistence on, max_queued_messages 1000000) with
``autosave_on_changes false``, because the harness's ``autosave_on_changes true`` with
``autosave_interval 1`` makes mosquitto rewrite its whole persistence file for every queued
message (~100 msgs/s: the broker, not the contenders, would be measured). ``--nodelay`` also
sets mosquitto's ``set_tcp_nodelay true`` (off by default in mosquitto).

Run: .venv/bin/python bench/ingest.py [--n 20000] [--rounds 3] [--nodelay]  (--help: more)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import ROOT, Bench  # noqa: E402

sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import sqlean  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from tests.harness import Broker, DaemonProcess, wait_for, write_config  # noqa: E402

FILTER = "bench/sink/#"
ROUTE = f'[[routes]]\ntopic = "{FILTER}"\nagent = "sink"\n'
BROKER_EXTRA = "autosave_on_changes false\nautosave_interval 3600\n"
DEVICES = 16
SESSION_EXPIRY_S = 3600


# ----------------------------------------------------------------------------------------------
# The publisher (the same for both contenders)


def make_messages(n: int, tag: str) -> list[tuple[str, bytes]]:
    """N device requests, ~140 bytes of JSON each, with unique ids (no dedup hits)."""
    out = []
    for i in range(n):
        payload = (
            f'{{"id": "{tag}-{i:07d}", "text": "reading {i}: temperature 21.{i % 10} C, '
            f'humidity 4{i % 10} %, battery 3.{i % 7} V, door closed, motion none"}}'
        ).encode()
        out.append((f"bench/sink/dev{i % DEVICES}", payload))
    return out


def publish(port: int, messages: list[tuple[str, bytes]], *, every: int = 100) -> float:
    """Publish QoS 1, waiting for the PUBACK of every ``every``-th message and, at the end, of
    all of them. Returns the publish rate (msgs/s); not part of any measurement."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv5)
    c.max_inflight_messages_set(max(every * 2, 20))
    c.max_queued_messages_set(0)
    connected = c.connect("127.0.0.1", port, keepalive=30)
    if connected != paho.MQTT_ERR_SUCCESS:
        raise RuntimeError(f"publisher could not connect: {paho.error_string(connected)}")
    c.loop_start()
    try:
        t0 = time.perf_counter()
        infos = []
        for i, (topic, payload) in enumerate(messages, 1):
            info = c.publish(topic, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")
            infos.append(info)
            if i % every == 0:
                info.wait_for_publish(timeout=60)
        for info in infos:
            info.wait_for_publish(timeout=60)
            if not info.is_published():
                raise RuntimeError("publisher: a message was not acknowledged by the broker")
        return len(messages) / (time.perf_counter() - t0)
    finally:
        c.disconnect()
        c.loop_stop()


def check_broker_log(broker: Broker) -> None:
    bad = [ln for ln in broker.log_text().splitlines()
           if re.search(r"drop|denied|out of memory", ln, re.I)]
    if bad:
        raise RuntimeError("broker dropped or refused messages:\n" + "\n".join(bad[:5]))


def new_broker(nodelay: bool) -> Broker:
    extra = BROKER_EXTRA + ("set_tcp_nodelay true\n" if nodelay else "")
    return Broker(extra=extra).start()


# ----------------------------------------------------------------------------------------------
# Baseline: a bare aiomqtt subscriber


class _StampQueue(asyncio.Queue):  # type: ignore[type-arg]
    """aiomqtt's incoming queue, noting when the first message arrived."""

    first: float | None = None

    def put_nowait(self, item: Any) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        super().put_nowait(item)


def _aiomqtt_client(port: int, client_id: str) -> aiomqtt.Client:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    return aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False, properties=props, queue_type=_StampQueue, keepalive=30,
    )


async def _baseline_session(port: int, client_id: str) -> None:
    async with _aiomqtt_client(port, client_id) as c:
        await c.subscribe(FILTER, qos=1)


async def _baseline_drain(port: int, client_id: str, n: int, timeout: float) -> dict[str, Any]:
    count = 0
    async with _aiomqtt_client(port, client_id) as c:
        async with asyncio.timeout(timeout):
            async for _msg in c.messages:
                count += 1
                if count == n:
                    break
        last = time.perf_counter()
        first = cast(_StampQueue, c._queue).first  # noqa: SLF001
    assert first is not None
    span = last - first
    return {"received": count, "span_s": span, "msgs_per_s": (n - 1) / span}


def run_baseline(n: int, *, nodelay: bool, timeout: float) -> dict[str, Any]:
    broker = new_broker(nodelay)
    try:
        client_id = f"bench-base-{uuid.uuid4().hex[:8]}"
        asyncio.run(_baseline_session(broker.port, client_id))
        pub_rate = publish(broker.port, make_messages(n, client_id))
        check_broker_log(broker)
        assert broker.proc is not None
        broker_cpu, own_cpu = cpu_s(broker.proc.pid), time.process_time()
        r = asyncio.run(_baseline_drain(broker.port, client_id, n, timeout))
        r["cpu_s"] = time.process_time() - own_cpu
        r["broker_cpu_s"] = cpu_s(broker.proc.pid) - broker_cpu
        if r["received"] != n:
            raise RuntimeError(f"baseline received {r['received']} of {n}")
        r["publish_msgs_per_s"] = pub_rate
        return r
    finally:
        broker.cleanup()


# ----------------------------------------------------------------------------------------------
# edged: the daemon as a subprocess, measured from its journal


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])  # kB
    return out


def _inbox_max_id(db: Path) -> int:
    try:
        conn = sqlean.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT max(id) FROM inbox").fetchone()
        finally:
            conn.close()
    except sqlean.Error:
        return 0
    return int(row[0] or 0)


def _mqtt_option(cfg: Path, line: str) -> None:
    """Add one line to the [mqtt] table that write_config wrote."""
    text = cfg.read_text()
    cfg.write_text(text.replace("[mqtt]\n", f"[mqtt]\n{line}\n", 1))


def run_edged(n: int, *, nodelay: bool, timeout: float, max_pending: int,
              receive_maximum: int | None, delivery: str, keep: bool) -> dict[str, Any]:
    broker = new_broker(nodelay)
    work = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    db = work / "edged.db"
    client_id = f"bench-edged-{uuid.uuid4().hex[:8]}"
    cfg = write_config(work / "edged.toml", broker, db=db, client_id=client_id, extra=ROUTE,
                       delivery=f"max_pending = {max_pending}\n{delivery}")
    if receive_maximum:
        _mqtt_option(cfg, f"receive_maximum = {receive_maximum}")
    daemon = DaemonProcess(cfg, work)
    ok = False
    try:
        # 1. First start: journal created, session + subscriptions created on the broker.
        daemon.start()
        idle = _proc_status(daemon.pid)
        startup_cpu = cpu_s(daemon.pid)
        if daemon.terminate() != 0:
            raise RuntimeError(f"edged exited non-zero after the first start:\n{daemon.tail()}")
        # 2. The N messages queue in the broker for edged's session.
        pub_rate = publish(broker.port, make_messages(n, client_id))
        check_broker_log(broker)
        # 3. Start again and wait (polling the journal) until all N are journaled.
        assert broker.proc is not None
        broker_cpu = cpu_s(broker.proc.pid)
        daemon.start()
        try:
            wait_for(lambda: _inbox_max_id(db) >= n, timeout,
                     f"edged to journal {n} messages", interval=0.05)
        except TimeoutError as e:
            got = _inbox_max_id(db)
            raise TimeoutError(f"{e}; journaled {got}; log:\n{daemon.tail()}") from None
        mem = _proc_status(daemon.pid)
        daemon_cpu = cpu_s(daemon.pid)
        broker_cpu = cpu_s(broker.proc.pid) - broker_cpu
        rc = daemon.terminate()
        if rc != 0:
            raise RuntimeError(f"edged exited {rc}:\n{daemon.tail()}")
        # 4. The journal, after a graceful stop: nothing lost, nothing doubled.
        conn = sqlean.connect(str(db))
        try:
            rows, keys, t_first, t_last, stamps = conn.execute(
                "SELECT count(*), count(DISTINCT key), min(received_at), max(received_at), "
                "count(DISTINCT received_at) FROM inbox").fetchone()
            first_batch = conn.execute("SELECT count(*) FROM inbox WHERE received_at = ?",
                                       (t_first,)).fetchone()[0]
            states = dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state"))
        finally:
            conn.close()
        if rows != n or keys != n or states != {"done": n}:
            raise RuntimeError(f"journal holds {rows} rows, {keys} distinct keys, states "
                               f"{states}; expected {n} done")
        span = t_last - t_first
        ok = True
        return {
            "received": rows, "span_s": span, "msgs_per_s": (n - first_batch) / span,
            "first_batch": first_batch, "commits": stamps, "mean_batch": rows / stamps,
            "peak_rss_mb": mem["VmHWM"] / 1024, "rss_at_end_mb": mem["VmRSS"] / 1024,
            "idle_peak_rss_mb": idle["VmHWM"] / 1024, "publish_msgs_per_s": pub_rate,
            # CPU of the whole second run minus that of an idle start-up (the first run).
            "cpu_s": daemon_cpu - startup_cpu, "broker_cpu_s": broker_cpu,
        }
    finally:
        daemon.kill()
        broker.cleanup()
        if ok and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"edged round failed; its files are kept in {work}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="messages per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per contender (best is shown)")
    ap.add_argument("--timeout", type=float, default=300.0, help="drain timeout per round, s")
    ap.add_argument("--nodelay", action="store_true", help="mosquitto set_tcp_nodelay true")
    ap.add_argument("--max-pending", type=int, default=1_000_000,
                    help="edged [delivery] max_pending")
    ap.add_argument("--receive-maximum", type=int, default=None,
                    help="edged [mqtt] receive_maximum (default: edged's default)")
    ap.add_argument("--delivery", action="append", default=[], metavar="KEY=VALUE",
                    help="extra edged [delivery] setting, e.g. batch_max=1024 (repeatable)")
    ap.add_argument("--only", choices=("baseline", "edged"), help="run one contender only")
    ap.add_argument("--keep", action="store_true", help="keep edged's work dirs (journal, log)")
    args = ap.parse_args()
    if args.n < 2:
        ap.error("--n must be >= 2")

    bench = Bench("ingest")
    bench.param(n=args.n, rounds=args.rounds, pick="best round", nodelay=args.nodelay,
                max_pending=args.max_pending, receive_maximum=args.receive_maximum,
                delivery=args.delivery, payload_bytes=round(statistics.fmean(
                    len(p) for _, p in make_messages(args.n, "bench-edged-00000000")), 1),
                topics=f"bench/sink/dev0..{DEVICES - 1}", broker_extra=BROKER_EXTRA.strip())
    delivery = "".join(f"{kv.split('=', 1)[0].strip()} = {kv.split('=', 1)[1].strip()}\n"
                       for kv in args.delivery)
    base_runs: list[dict[str, Any]] = []
    edged_runs: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1):
        if args.only != "edged":
            b = run_baseline(args.n, nodelay=args.nodelay, timeout=args.timeout)
            base_runs.append(b)
            print(f"round {r}: baseline {b['msgs_per_s']:.0f} msgs/s ({b['span_s']:.2f} s, "
                  f"cpu {b['cpu_s']:.2f} s, broker cpu {b['broker_cpu_s']:.2f} s)", file=sys.stderr)
        if args.only != "baseline":
            e = run_edged(args.n, nodelay=args.nodelay, timeout=args.timeout,
                          max_pending=args.max_pending, receive_maximum=args.receive_maximum,
                          delivery=delivery, keep=args.keep)
            edged_runs.append(e)
            print(f"round {r}: edged    {e['msgs_per_s']:.0f} msgs/s ({e['span_s']:.2f} s, "
                  f"{e['commits']} commits, peak RSS {e['peak_rss_mb']:.1f} MB, "
                  f"cpu ~{e['cpu_s']:.2f} s, "
                  f"broker cpu {e['broker_cpu_s']:.2f} s)", file=sys.stderr)

    def rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
        rates = [x["msgs_per_s"] for x in runs]
        return {"stat": "best", "median": statistics.median(rates), "rounds": runs}

    best_b = max(base_runs, key=lambda x: x["msgs_per_s"]) if base_runs else None
    best_e = max(edged_runs, key=lambda x: x["msgs_per_s"]) if edged_runs else None
    if best_b:
        bench.record("baseline aiomqtt msgs/s", best_b["msgs_per_s"], "msgs/s",
                     **rounds(base_runs))
    if best_e:
        bench.record("edged sink msgs/s", best_e["msgs_per_s"], "msgs/s",
                     baseline=best_b["msgs_per_s"] if best_b else None,
                     baseline_name="aiomqtt" if best_b else None, **rounds(edged_runs))
        if best_b:
            ratio = best_e["msgs_per_s"] / best_b["msgs_per_s"]
            bench.record("ratio edged/baseline", ratio, "x", target=">= 0.8", met=ratio >= 0.8)
        peak = max(x["peak_rss_mb"] for x in edged_runs)
        bench.record("edged peak RSS (VmHWM)", peak, "MB",
                     idle_peak_rss_mb=max(x["idle_peak_rss_mb"] for x in edged_runs))
        bench.record("edged journal commits (ingest)", best_e["commits"], "commits",
                     mean_batch=best_e["mean_batch"], first_batch=best_e["first_batch"])
    bench.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
