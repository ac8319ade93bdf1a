"""Hostile topics against the sender: a reply that can never be published is dead-lettered
and never stops the daemon or blocks other replies (real mosquitto, the daemon as a
process, so that a crash or a restart loop would show)."""

from __future__ import annotations

import json

from .harness import peer

MAX_TOPIC = 65535  # bytes: MQTT's limit


def test_a_reply_topic_over_mqtts_limit_is_dead_lettered_not_fatal(tmp_path, broker,
                                                                     make_config,
                                                                     daemon_process):
    """A request on a topic at MQTT's length limit: its default reply topic
    (`edged/out/<device>`) is one byte too long for paho. It used to raise inside the sender
    and end the daemon, and again on every restart (the row stayed in the outbox)."""
    device = "x" * (MAX_TOPIC - len("edged/in/"))
    assert len(f"edged/out/{device}".encode()) == MAX_TOPIC + 1
    d = daemon_process(make_config()).start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/dlq", "edged/out/ok")
        p.publish(f"edged/in/{device}", json.dumps({"id": "long", "text": "hi",
                                                    "agent": "echo"}))
        p.publish("edged/in/ok", json.dumps({"id": "after", "text": "still here",
                                             "agent": "echo"}))
        msgs = p.wait_count(2, 60)
        by_topic = {m.topic: json.loads(m.payload) for m in msgs}
        assert by_topic["edged/out/ok"]["text"] == "still here"
        dead = by_topic["edged/dlq"]
        assert dead["code"] == "unpublishable" and "cannot publish the reply" in dead["reason"]
        assert len(dead["payload"]) <= 4096 and len(dead["topic"]) <= 1024  # bounded copy
    assert d.proc is not None and d.proc.poll() is None, d.tail()
    # a restart finds nothing poisoned left in the outbox
    assert d.terminate() == 0
    d.start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/ok")
        p.publish("edged/in/ok", json.dumps({"id": "again", "text": "again",
                                             "agent": "echo"}))
        [m] = p.wait_count(1, 60)
        assert json.loads(m.payload)["text"] == "again"
