"""Operating the service: the systemd watchdog, Prometheus metrics, SIGHUP config reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import httpx
import pytest

from edged import config
from edged.messages import Reply
from edged.models import GenerationRequest
from edged.service import Daemon

from .harness import NotifySocket, free_port, peer, write_config

MODEL = """
[models.small]
backend = "llama_cpp"
path = "bundled:smollm2-135m"
context = 2048
threads = 1

[resources]
stuck_after_s = 1.0
"""


class LongGeneration:
    """A stage that holds the model for seconds: a JSON string of 600-650 characters,
    enforced by the grammar, so the model cannot stop early."""

    name = "long"

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def handle(self, request: Any, ctx: Any) -> Reply:
        gen = await self.pool.generate("small", GenerationRequest(
            prompt="Write a very long story.\n", max_tokens=2000,
            json_schema={"type": "string", "minLength": 600, "maxLength": 650}))
        return Reply(id=request.id, agent="long", text=f"{len(gen.text)} characters")


async def test_watchdog_pings_only_while_healthy(tmp_path, broker, make_config, monkeypatch):
    sock = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    d = Daemon(config.load(make_config(extra=MODEL)))
    d.app.stages["long"] = LongGeneration(d.app.pool)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.to_thread(sock.wait, "READY=1", 60)
        await asyncio.to_thread(sock.wait, "WATCHDOG=1", 10)
        with peer(broker.port) as p:
            p.subscribe("edged/out/+")
            await asyncio.wait_for(d.bus.subscribed.wait(), 30)
            p.publish("edged/in/dev", json.dumps({"id": "w1", "text": "go", "agent": "long"}))
            # a generation held past stuck_after_s: the pings stop, the status says why
            await asyncio.to_thread(sock.wait, "STATUS=unhealthy: model small held", 30)
            n = len(sock.messages)
            # while it is stuck, no ping comes (over five ping intervals)
            await asyncio.to_thread(_collect, sock, 1.0)
            assert d.app.pool.stuck(1.0), "the generation ended too soon for this check"
            assert not any("WATCHDOG=1" in m for m in sock.messages[n:]), sock.messages[n:]
            [reply] = await asyncio.to_thread(
                p.wait_count, 1, 120, lambda m: json.loads(m.payload).get("id") == "w1")
            assert json.loads(reply.payload)["text"].endswith("characters")
            # done: healthy again, the pings resume
            await asyncio.to_thread(sock.wait, "STATUS=online: healthy again", 30)
            k = len(sock.messages)
            await asyncio.to_thread(_wait_new, sock, "WATCHDOG=1", k, 10)
        assert d.app.last_error.startswith("unhealthy: model small held")
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 60)
        sock.close()


def _collect(sock: NotifySocket, seconds: float) -> None:
    """Record every datagram that arrives within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.sock.settimeout(left)
        try:
            sock.messages.append(sock.sock.recv(65536).decode())
        except TimeoutError:
            return


def _wait_new(sock: NotifySocket, text: str, after: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m for m in sock.messages[after:]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new {text!r}: {sock.messages[after:]}")
        sock.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock.messages.append(sock.sock.recv(65536).decode())
        except TimeoutError:
            pass


async def test_metrics_endpoint_is_scraped_with_a_real_client(broker, make_config, run_daemon):
    port = free_port()
    cfg = make_config(extra=f'[metrics]\nenabled = true\nlisten = "127.0.0.1:{port}"\n')
    await run_daemon(cfg)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+")
        for i in range(5):
            p.publish("edged/in/dev", json.dumps({"id": f"m{i}", "text": "hi"}))
        p.publish("edged/in/dev", b"\xff\xfe not utf-8")
        await asyncio.to_thread(p.wait_count, 6, 30)
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        m = _parse(r.text)
        assert m['edged_messages_total{stage="processed"}'] == 5
        assert m['edged_messages_total{stage="rejected"}'] == 1
        assert m['edged_ingest_total{outcome="accepted",route="edged/in/+"}'] == 5
        assert m['edged_ingest_total{outcome="bad_encoding",route="edged/in/+"}'] == 1
        assert m['edged_requests_total{agent="echo",outcome="ok"}'] == 5
        h = 'edged_request_seconds_count{agent="echo",escalated="False"}'
        assert m[h] == 5
        assert m['edged_request_seconds_bucket{agent="echo",escalated="False",le="+Inf"}'] == 5
        assert m["edged_up"] == 1 and m["edged_bus_connected"] == 1
        assert m["edged_rss_bytes"] > 10e6 and m["edged_pending_requests"] == 0
        assert 'edged_governor{flag="memory_pressure"}' in m
        # per-stage latency: a histogram and exact recent quantiles, for every stage these
        # echo requests passed (6 messages ingested, 5 processed; replies + error published)
        assert m['edged_stage_seconds_count{stage="ingest"}'] == 6
        for stage in ("queue", "agent", "commit"):
            assert m[f'edged_stage_seconds_count{{stage="{stage}"}}'] == 5, stage
            assert m[f'edged_stage_recent_seconds_count{{stage="{stage}"}}'] == 5, stage
            p50 = m[f'edged_stage_recent_seconds{{quantile="0.5",stage="{stage}"}}']
            p99 = m[f'edged_stage_recent_seconds{{quantile="0.99",stage="{stage}"}}']
            assert 0 <= p50 <= p99 < 5, (stage, p50, p99)
        assert m['edged_stage_seconds_count{stage="publish"}'] >= 6  # replies, error, status
        assert 'edged_stage_seconds_count{stage="model"}' not in m  # echo uses no model
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 404
    # every sample line parses as "name{labels} value" with a HELP and TYPE for each family
    for line in r.text.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge", "histogram", "summary")


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_sighup_reloads_config_and_rejects_an_invalid_one(tmp_path, broker, daemon_process):
    db = tmp_path / "edged.db"
    cfg_path = write_config(tmp_path / "edged.toml", broker, db=db)
    good = cfg_path.read_text()
    d = daemon_process(cfg_path).start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/+", "edged/events/+", "home/+/reply")

        def reload_and_wait(kind: str) -> dict[str, Any]:
            n = len(p.wait_count(0, 0.1, lambda m: m.topic == f"edged/events/{kind}"))
            d.proc.send_signal(signal.SIGHUP)
            try:
                ev = p.wait_count(n + 1, 30, lambda m: m.topic == f"edged/events/{kind}")[-1]
            except TimeoutError:
                raise AssertionError(f"no {kind} event; daemon log:\n{d.tail(30)}") from None
            return json.loads(ev.payload)["data"]

        # a new route: its topic is subscribed to and routed, without a restart
        cfg_path.write_text(good + '\n[[routes]]\ntopic = "home/+/say"\nagent = "echo"\n'
                            'reply_topics = ["home/+/reply"]\n')
        data = reload_and_wait("config_reloaded")
        assert data["routes"] == ["home/+/say"] and data["restart_needed"] == []
        p.publish("home/kitchen/say", json.dumps({"id": "r1", "text": "hello",
                                                  "reply_to": "home/kitchen/reply"}))
        [m] = p.wait_count(1, 30, lambda m: m.topic == "home/kitchen/reply")
        assert json.loads(m.payload)["text"] == "hello"
        # an invalid file is rejected with the key path; the running config stays
        cfg_path.write_text(good + '\n[resources]\nidle_unload_s = "abc"\n')
        data = reload_and_wait("reload_failed")
        assert "resources.idle_unload_s: expected int >= 0" in data["error"]
        p.publish("home/hall/say", json.dumps({"id": "r2", "text": "still here",
                                               "reply_to": "home/kitchen/reply"}))
        [m] = p.wait_count(1, 30, lambda m: m.topic == "home/kitchen/reply"
                           and json.loads(m.payload)["id"] == "r2")
        # a section that needs a restart is named, and keeps its running value
        cfg_path.write_text(good.replace('client_id = "edged-test"', 'client_id = "other"'))
        data = reload_and_wait("config_reloaded")
        assert data["restart_needed"] == ["mqtt"] and data["routes"] == []
    assert d.proc.poll() is None
    assert "reload rejected" in d.tail(200)


def test_stage_quantiles_are_exact_over_a_bounded_window():
    from edged.metrics import WINDOW, Metrics

    m = Metrics()
    for ms in range(1, 101):  # 1..100 ms
        m.stage("agent", ms / 1000)
    m.stage("ingest", 0.002)
    q = m.stage_quantiles()
    assert list(q) == ["ingest", "agent"]  # pipeline order, not insertion order
    assert q["agent"]["n"] == 100
    assert q["agent"]["p50"] == pytest.approx(0.0505)
    assert q["agent"]["p99"] == pytest.approx(0.09901)
    for _ in range(WINDOW):  # old observations leave the window; the histogram keeps all
        m.stage("agent", 0.5)
    assert m.stage_quantiles()["agent"]["p50"] == 0.5
    assert m.hists["edged_stage_seconds"][(("stage", "agent"),)][-1] == 100 + WINDOW


def test_notify_never_blocks_on_a_receiver_that_does_not_read(tmp_path, monkeypatch):
    """A real datagram socket nobody reads (a busy systemd): its queue fills after
    net.unix.max_dgram_qlen datagrams, and notify() must then drop, not block the loop."""
    import socket
    import threading

    from edged.notify import notify

    path = tmp_path / "n.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.extend(notify(f"STATUS={i}")
                                                       for i in range(200)), daemon=True)
    t.start()
    t.join(30)
    try:
        assert not t.is_alive(), "notify() blocked on a full receiver queue"
        assert results[0] is True and results[-1] is False  # first ones queued, later dropped
        assert receiver.recv(100) == b"STATUS=0"  # what was queued is intact
    finally:
        receiver.close()
