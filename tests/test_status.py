"""Retained status and the Last Will: a crashed daemon is reported offline by the broker."""

from __future__ import annotations

import json

from edged.bus.client import MQTTBus
from edged.config import MQTTConfig

from .harness import peer


def _status(p) -> dict:
    [m] = p.wait_count(1, 10, lambda m: m.topic == "edged/status")
    return json.loads(m.payload)


def test_status_online_then_will_says_offline_after_sigkill(broker, make_config,
                                                            daemon_process):
    d = daemon_process(make_config()).start()
    with peer(broker.port) as p:
        p.subscribe("edged/status")
        online = _status(p)
    assert online["state"] == "online" and online["pid"] == d.pid
    assert online["client_id"] == "edged-test" and online["health"] == "ok"
    d.kill()  # no goodbye: only the will can tell
    with peer(broker.port) as p:
        p.subscribe("edged/status")
        p.wait_count(1, 10, lambda m: json.loads(m.payload)["state"] == "offline")
        [m] = [m for m in p.messages if m.topic == "edged/status"][-1:]
    assert m.retain and json.loads(m.payload)["client_id"] == "edged-test"


def test_sigterm_exits_zero_and_leaves_offline_status(broker, make_config, daemon_process):
    d = daemon_process(make_config()).start()
    assert d.terminate() == 0
    with peer(broker.port) as p:
        p.subscribe("edged/status")
        st = _status(p)
    assert st["state"] == "offline" and st["pid"] == d.pid


def test_reconnect_backoff_is_jittered_exponential_and_capped():
    bus = MQTTBus(MQTTConfig(reconnect_min_s=0.5, reconnect_max_s=8.0), subscriptions=[])
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (30, 8.0)]:
        delays = {bus._backoff(attempt) for _ in range(200)}
        assert all(cap / 2 <= x <= cap for x in delays), (attempt, min(delays), max(delays))
        assert len(delays) > 100  # jittered, not a fixed schedule
