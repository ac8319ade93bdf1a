"""Two gateways in one shared subscription group split the load; losing one loses nothing."""

from __future__ import annotations

import collections
import json
import threading

from .harness import DaemonProcess, Peer, wait_for, write_config


def test_shared_group_splits_load_and_survives_a_kill(tmp_path, broker):
    n = 600
    procs = []
    for name in ("a", "b"):
        cfg = write_config(tmp_path / f"{name}.toml", broker, db=tmp_path / f"{name}.db",
                           client_id=f"edged-{name}", mqtt='shared_group = "gw"',
                           delivery="max_attempts = 50")
        procs.append(DaemonProcess(cfg, tmp_path / name, module="tests.probe_daemon",
                                   env={"EDGED_PROBE_FILE": str(tmp_path / f"{name}.effects")}))
        (tmp_path / name).mkdir()
        (tmp_path / f"{name}.effects").touch()
    a, b = procs
    sub = Peer(broker.port, client_id="group-sub", persistent=True).connect()
    sub.subscribe("edged/out/+")
    pub = Peer(broker.port).connect()
    a.start()
    b.start()

    def answered() -> set[str]:
        with sub.cond:
            return {json.loads(m.payload)["id"] for m in sub.messages}

    ids = [f"g{i:04d}" for i in range(n)]

    def publish(batch: list[str]) -> None:
        for i, rid in enumerate(batch):
            pub.publish(f"edged/in/dev{i % 5}",
                        json.dumps({"id": rid, "text": "x", "agent": "probe"}),
                        wait=(i % 20 == 19))

    first, second = ids[: n // 2], ids[n // 2:]
    t = threading.Thread(target=publish, args=(second,), daemon=True)
    try:
        publish(first)
        wait_for(lambda: set(first) <= answered(), 60, "the first half answered")
        split = (len((tmp_path / "a.effects").read_text().split()),
                 len((tmp_path / "b.effects").read_text().split()))
        t.start()
        wait_for(lambda: len(answered()) >= len(first) + 20, 60, "the second half started")
        a.kill()  # one gateway dies mid-stream; the other keeps serving the group
        count_at_kill = len(answered())
        t.join(60)
        wait_for(lambda: len(answered()) >= count_at_kill + 50, 60, "b carrying on alone")
        # mosquitto keeps what was queued or in flight to a's persistent session for a: it is
        # delivered when a comes back (not re-routed, so never processed twice).
        a.start()
        wait_for(lambda: set(ids) <= answered(), 90, "every request answered")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- a ---\n{a.tail()}\n--- b ---\n{b.tail()}") from None
    finally:
        a.kill()
        b.kill()
        sub.close()
        pub.close()

    # both gateways took a real share of the first half
    assert min(split) > len(first) // 5, split
    effects_a = collections.Counter((tmp_path / "a.effects").read_text().split())
    effects_b = collections.Counter((tmp_path / "b.effects").read_text().split())
    both = effects_a + effects_b
    assert not {k: v for k, v in both.items() if v > 1}, "a side effect ran twice"
    bodies = [json.loads(m.payload) for m in sub.messages]
    errors = [x for x in bodies if "error" in x]
    assert all(e["error"]["code"] == "in_doubt" for e in errors)
    # at most the requests a's 4 workers were inside (between a step's start and end) at the kill
    assert len(errors) <= 4
