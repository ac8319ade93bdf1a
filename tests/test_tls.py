"""mqtts:// with a CA file: edged verifies the broker's certificate (real TLS, real mosquitto)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from edged import config
from edged.service import Daemon

from .harness import Broker, free_port, peer


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker():
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS test: apt-get install -y openssl")
    b = Broker(port=free_port())
    d = b.dir / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=edged-test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("mosquitto") if _has_user("mosquitto") else None
        if pw:
            for f in [d, *d.iterdir()]:
                os.chown(f, pw.pw_uid, pw.pw_gid)
    plain = free_port()
    b.extra = (f"listener {plain} 127.0.0.1\n"  # a plain listener for the test peer
               f"listener {b.port} 127.0.0.1\ncafile {d / 'ca.crt'}\n"
               f"certfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n")
    conf = b.conf.read_text().replace(f"listener {b.port} 127.0.0.1\n", "")
    b.conf.write_text(conf + b.extra)
    b.plain_port = plain
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _cfg(tmp_path: Path, broker: Broker, ca: Path | None) -> config.Config:
    raw = {
        "mqtt": {"url": f"mqtts://127.0.0.1:{broker.port}", "client_id": "edged-tls",
                 "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                 "tls": {"ca_file": str(ca)} if ca else {}},
        "storage": {"path": str(tmp_path / "tls.db")},
        "delivery": {"rate_per_s": 0},
    }
    return config.loads_dict(raw)


async def test_mqtts_round_trip_with_ca_file(tmp_path, tls_broker):
    d = Daemon(_cfg(tmp_path, tls_broker, tls_broker.dir / "pki" / "ca.crt"))
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 10)
        await asyncio.wait_for(d.bus.subscribed.wait(), 10)
        with peer(tls_broker.plain_port) as p:
            p.subscribe("edged/out/+")
            p.publish("edged/in/secure", json.dumps({"id": "t1", "text": "over tls"}))
            [m] = await asyncio.to_thread(p.wait_count, 1, 10)
        assert json.loads(m.payload)["text"] == "over tls"
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 20)


async def test_untrusted_broker_certificate_is_refused(tmp_path, tls_broker):
    # Without the CA, the system trust store does not know the test CA: never connect.
    d = Daemon(_cfg(tmp_path, tls_broker, None))
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 10)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "certificate" not in d.bus.last_error.lower():
            assert loop.time() < deadline, f"no certificate error; last: {d.bus.last_error!r}"
            await asyncio.sleep(0.02)
        assert not d.bus.connected.is_set()
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 20)
