import asyncio, json
from .harness import peer

async def test_echo_roundtrip(broker, make_config, run_daemon):
    d = await run_daemon(make_config())
    def go():
        with peer(broker.port) as p:
            p.subscribe("edged/out/dev1")
            p.publish("edged/in/dev1", json.dumps({"id": "a1", "text": "hello"}))
            return p.wait_count(1, timeout=10)
    msgs = await asyncio.to_thread(go)
    body = json.loads(msgs[0].payload)
    assert body["id"] == "a1" and body["text"] == "hello" and body["agent"] == "echo"
