"""The governor inside the daemon: transitions are events on MQTT, status and admission."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from edged import config
from edged.governor import Readings
from edged.service import Daemon

from .harness import peer


class Sensors:
    """Injected readings: this VM has no battery or temperature sensor (psutil: None/{})."""

    def __init__(self) -> None:
        self.r = Readings(mem_available_mb=8000, mem_total_mb=16000, rss_mb=80, cpu_load=0.1)

    def read(self) -> Readings:
        return self.r


async def test_memory_pressure_is_published_and_sheds_low_priority(broker, make_config):
    sensors = Sensors()
    cfg = config.load(make_config(extra="[resources]\nmin_free_memory_mb = 500\n"))
    d = Daemon(cfg, sensors=sensors)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 10)
        await asyncio.wait_for(d.bus.subscribed.wait(), 10)
        with peer(broker.port) as p:
            p.subscribe("edged/events/+", "edged/out/+")
            sensors.r = dataclasses.replace(sensors.r, mem_available_mb=200)
            state = await d.app.governor.check()
            assert state.name == "memory_pressure"
            [ev] = await asyncio.to_thread(
                p.wait_count, 1, 10, lambda m: m.topic == "edged/events/governor")
            body = json.loads(ev.payload)
            assert body["kind"] == "governor" and body["data"]["to"] == "memory_pressure"
            assert json.loads(d.status_payload("online"))["health"] == "degraded"
            p.publish("edged/in/d", json.dumps({"id": "low", "text": "x", "priority": 2}))
            p.publish("edged/in/d", json.dumps({"id": "high", "text": "y", "priority": 7}))
            msgs = await asyncio.to_thread(
                p.wait_count, 2, 10, lambda m: m.topic == "edged/out/d")
        by_id = {json.loads(m.payload)["id"]: json.loads(m.payload) for m in msgs}
        assert by_id["low"]["error"]["code"] == "overloaded"
        assert by_id["high"]["text"] == "y"
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 20)
