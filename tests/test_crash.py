"""Nothing lost, nothing twice: SIGKILL the daemon at random points under a stream of requests.

The daemon runs as a subprocess (``tests.probe_daemon``) whose ``probe`` agent performs a side
effect (appending the request id to a file) through edged's at-most-once step log. Kill points
are chosen by progress (a random reply count), so they land at arbitrary internal states:
mid-batch, mid-step, between publish and the outbox commit.
"""

from __future__ import annotations

import collections
import json
import random
import threading
from pathlib import Path

import pytest

from .harness import DaemonProcess, Peer, wait_for


def _run_crash_test(tmp_path: Path, broker, make_config, n: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    effects = tmp_path / "effects.log"
    effects.touch()
    cfg = make_config(delivery="max_attempts = 50\noutbox_max_inflight = 1\nworkers = 4\n")
    daemon = DaemonProcess(cfg, tmp_path, module="tests.probe_daemon",
                           env={"EDGED_PROBE_FILE": str(effects)})
    # The device side: a persistent subscriber so that no reply is lost while it reconnects.
    sub = Peer(broker.port, client_id="crash-sub", persistent=True).connect()
    sub.subscribe("edged/out/+")
    pub = Peer(broker.port, client_id="crash-pub").connect()
    daemon.start()  # creates the persistent session and subscribes before anything is sent

    ids = [f"r{i:05d}" for i in range(n)]

    def publish_all() -> None:
        for i, rid in enumerate(ids):
            pub.publish(f"edged/in/dev{i % 7}", json.dumps(
                {"id": rid, "text": f"request {i}", "agent": "probe"}), wait=(i % 50 == 49))
        pub.c.publish("edged/in/sync", "flush", qos=1).wait_for_publish(30)

    publisher = threading.Thread(target=publish_all, daemon=True)
    publisher.start()

    def replied_ids() -> set[str]:
        with sub.cond:
            return {json.loads(m.payload).get("id") for m in sub.messages
                    if m.topic != "edged/out/sync"}

    thresholds = sorted(rng.sample(range(n // 20, n - n // 20), kills))
    try:
        for t in thresholds:
            wait_for(lambda t=t: len(replied_ids()) >= t, 120, f"{t} replies")
            daemon.kill()
            daemon.start()
        publisher.join(60)
        assert not publisher.is_alive()
        wait_for(lambda: set(ids) <= replied_ids(), 180, "every request answered")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- daemon log ---\n{daemon.tail()}") from None
    finally:
        daemon.kill()
        sub.close()
        pub.close()

    replies: dict[str, list[dict]] = collections.defaultdict(list)
    for m in sub.messages:
        body = json.loads(m.payload)
        if body.get("id") in set(ids):
            replies[body["id"]].append(body)
    effect_counts = collections.Counter(effects.read_text().split())

    # Nothing lost: every request got a reply, matched by id.
    assert set(replies) == set(ids)
    # Nothing twice: the side effect ran at most once per id...
    twice = {k: v for k, v in effect_counts.items() if v > 1}
    assert not twice, f"side effect repeated: {twice}"
    in_doubt = []
    for rid in ids:
        first = replies[rid][0]
        if "error" in first:
            # ...and the only acceptable error: a kill between the step's start and end.
            assert first["error"]["code"] == "in_doubt", first
            in_doubt.append(rid)
        else:
            assert first["text"].startswith("request ") and effect_counts[rid] == 1, rid
    assert len(in_doubt) <= kills * 4  # at most the 4 workers' steps open at each kill
    # A reply repeats only when the daemon died between sending and recording it (outbox
    # window 1: at most one per kill), and always carries the same id and body.
    repeats = {rid: r for rid, r in replies.items() if len(r) > 1}
    assert sum(len(r) - 1 for r in repeats.values()) <= kills, repeats
    for r in repeats.values():
        assert all(x == r[0] for x in r[1:])
    assert daemon.starts == kills + 1
    print(f"\ncrash test: {n} requests, {kills} kills, {len(in_doubt)} in doubt, "
          f"{sum(len(r) - 1 for r in repeats.values())} repeated replies")


def test_sigkill_loses_nothing_and_repeats_no_side_effect(tmp_path, broker, make_config):
    _run_crash_test(tmp_path, broker, make_config, n=2000, kills=3, seed=1)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path, broker, make_config):
    _run_crash_test(tmp_path, broker, make_config, n=4000, kills=12, seed=7)
