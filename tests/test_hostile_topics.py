"""Hostile topics against ingest and the sender (real mosquitto, the daemon as a process, so
that a crash or a restart loop would show): a topic that names no valid device is refused
before anything is answered; a row that can never be published is dead-lettered and never
stops the daemon or blocks other replies."""

from __future__ import annotations

import asyncio
import json

from edged.journal import Journal, OutRow

from .harness import peer

MAX_TOPIC = 65535  # bytes: MQTT's limit


def test_a_device_id_at_mqtts_topic_limit_is_refused_not_fatal(broker, make_config,
                                                                 daemon_process):
    """A request on a topic at MQTT's length limit: its default reply topic would be one byte
    too long for paho (it used to raise inside the sender and end the daemon, again at every
    restart). The id is refused at ingest: a bounded dead letter, no reply anywhere."""
    device = "x" * (MAX_TOPIC - len("edged/in/"))
    d = daemon_process(make_config()).start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/dlq", "edged/out/#")
        p.publish(f"edged/in/{device}", json.dumps({"id": "long", "text": "hi",
                                                    "agent": "echo"}))
        p.publish("edged/in/", json.dumps({"id": "empty", "text": "hi"}))  # no device at all
        p.publish("edged/in/ok", json.dumps({"id": "after", "text": "still here",
                                             "agent": "echo"}))
        msgs = p.wait_count(3, 60)
        replies = [json.loads(m.payload) for m in msgs if m.topic.startswith("edged/out/")]
        dead = [json.loads(m.payload) for m in msgs if m.topic == "edged/dlq"]
    assert [r["text"] for r in replies] == ["still here"]
    assert sorted(x["id"] for x in dead) == ["empty", "long"]
    assert {x["code"] for x in dead} == {"bad_device"}
    assert all(len(x["topic"]) <= 1024 for x in dead)  # a bounded copy
    assert d.proc is not None and d.proc.poll() is None, d.tail()


def test_an_unpublishable_row_left_in_the_outbox_is_dead_lettered(tmp_path, broker,
                                                                   make_config,
                                                                   daemon_process):
    """A journal from before this check holds a reply on a topic paho refuses (a wildcard)
    and a reply behind it: the daemon starts, dead-letters the first, sends the second."""
    db = tmp_path / "edged.db"

    async def poison() -> None:
        j = Journal(db)
        await j.open()
        await j.enqueue([
            OutRow(topic="edged/out/a+b", payload=b'{"id":"bad"}', priority=9, kind="reply"),
            OutRow(topic="edged/out/fine", payload=b'{"id":"fine"}', priority=1, kind="reply"),
        ])
        await j.close()

    asyncio.run(poison())
    with peer(broker.port) as p:
        p.subscribe("edged/dlq", "edged/out/#")
        d = daemon_process(make_config(db=db)).start(timeout=60)
        msgs = p.wait_count(2, 60)
        by_topic = {m.topic: json.loads(m.payload) for m in msgs}
    assert by_topic["edged/out/fine"]["id"] == "fine"
    dead = by_topic["edged/dlq"]
    assert dead["code"] == "unpublishable" and "cannot publish the reply" in dead["reason"]
    assert dead["topic"] == "edged/out/a+b"
    assert d.proc is not None and d.proc.poll() is None, d.tail()
    # a restart finds nothing poisoned left
    assert d.terminate() == 0
    d.start(timeout=60)
    with peer(broker.port) as p:
        p.subscribe("edged/out/ok")
        p.publish("edged/in/ok", json.dumps({"id": "again", "text": "again", "agent": "echo"}))
        [m] = p.wait_count(1, 60)
        assert json.loads(m.payload)["text"] == "again"
