"""Request -> reply latency: edged (journal, ack after commit, outbox) vs a bare paho responder.

Both answer the same sequential requests through the same private mosquitto: the baseline is a
paho client that republishes each request on its MQTT v5 response topic (the least any MQTT
request/reply service must do); edged runs its full durable path with the built-in ``echo``
agent. The ratio is the price of "nothing lost, nothing twice" per request.

Then the whole ``edged ask`` command (a new process: start, connect, subscribe, request,
reply, disconnect) against ``mosquitto_rr`` (the C request/response client) asking the same
daemon, interleaved round by round: what the CLI adds to a bare MQTT request.

    .venv/bin/python bench/latency.py [--n 500] [--asks 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._runner import Bench, Timing, time_commands  # noqa: E402
from tests.harness import Broker, DaemonProcess, Peer, write_config  # noqa: E402

RESPONDER = """
import sys, socket, paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bare-responder",
                protocol=paho.MQTTv5)
def nodelay(_c, _u, sock): sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def on_message(cl, _u, m):
    p = Properties(PacketTypes.PUBLISH)
    p.CorrelationData = m.properties.CorrelationData
    cl.publish(m.properties.ResponseTopic, m.payload, qos=1, properties=p)
def on_connect(cl, *a):
    cl.subscribe("bare/in/+", qos=1)
def on_subscribe(*a):
    print("ready", flush=True)
c.on_socket_open = nodelay
c.on_message = on_message
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
"""


def round_trips(port: int, topic: str, n: int) -> Timing:
    p = Peer(port).connect()
    # edged answers only within the device's reply space (edged/out/<device>/...)
    reply = f"edged/out/{topic.split('/')[-1]}/reply" if topic.startswith("edged/in/") \
        else "bench/reply"
    p.subscribe(reply)
    samples: list[float] = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            p.publish(topic, f"request {i}", response_topic=reply,
                      correlation=f"{topic}-{i}".encode(), wait=False)
            p.wait_count(i + 1, 30)
            if i >= 20:  # warm-up
                samples.append(time.perf_counter() - t0)
    finally:
        p.close()
    return Timing.of(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--asks", type=int, default=15, help="runs of each command")
    args = ap.parse_args()
    bench = Bench("latency")
    bench.param(n=args.n, qos=1, agent="echo")
    work = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    broker = Broker().start()
    daemon = None
    responder = None
    try:
        responder = subprocess.Popen([sys.executable, "-c", RESPONDER, str(broker.port)],
                                     stdout=subprocess.PIPE, text=True)
        ready = threading.Event()
        threading.Thread(target=lambda: (responder.stdout.readline(), ready.set()),
                         daemon=True).start()
        if not ready.wait(10):
            raise SystemExit("bare responder did not start")
        base = round_trips(broker.port, "bare/in/dev", args.n)
        cfg = write_config(work / "edged.toml", broker, db=work / "edged.db",
                           # mosquitto_rr repeats one payload without an id: no dedup
                           delivery="rate_per_s = 0\ndedup_window_s = 0.001")
        daemon = DaemonProcess(cfg, work).start()
        edged = round_trips(broker.port, "edged/in/dev", args.n)
        bench.record_timing("bare paho responder", base, unit="ms")
        bench.record_timing("edged echo (journal+outbox)", edged, unit="ms",
                            baseline=base, baseline_name="bare paho")
        cmds = {"mosquitto_rr": ["mosquitto_rr", "-p", str(broker.port), "-q", "1",
                                 "-t", "edged/in/cli", "-e", "bench/rr", "-m", "hi", "-W", "10"],
                "edged ask": [sys.executable, "-m", "edged", "ask", "hi", "-c", str(cfg),
                              "--device", "cli", "--timeout", "10"]}
        t = time_commands(cmds, args.asks, warmup=2)
        bench.record_timing("mosquitto_rr (whole command)", t["mosquitto_rr"])
        bench.record_timing("edged ask (whole command)", t["edged ask"],
                            baseline=t["mosquitto_rr"], baseline_name="mosquitto_rr")
    finally:
        if daemon:
            daemon.kill()
        if responder:
            responder.kill()
        broker.cleanup()
    bench.finish()


if __name__ == "__main__":
    main()
