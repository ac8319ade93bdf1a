"""Typed config loading: the example file, every error path an operator can hit, defaults, secrets.

Error messages are part of the interface: each must name the file, the key path and what was
expected, because a headless gateway's operator only sees one line in the journal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.config import ConfigError, loads_dict

from .harness import ROOT

EXAMPLE = ROOT / "config.example.toml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60,
        cwd=str(ROOT), env={**os.environ, **(env or {})},
    )


def example_with(tmp_path: Path, old: str, new: str, name: str = "edged.toml") -> Path:
    """The example config with exactly one textual change."""
    text = EXAMPLE.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in the example"
    p = tmp_path / name
    p.write_text(text.replace(old, new))
    return p


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        loads_dict(raw, "f.toml")
    return str(ei.value)


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EDGED_MQTT_PASSWORD", "EDGED_MQTT_PASSWORD_FILE", "EDGED_CLOUD_API_KEY",
                 "EDGED_CLOUD_API_KEY_FILE", "EDGED_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------------
# The real CLI on the example file


def test_check_config_example_ok() -> None:
    r = run_cli("check-config", "-c", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    line = lines[0]
    assert line.startswith(f"{EXAMPLE}: OK: ")
    # The summary reflects the file, not the built-in defaults.
    for part in ("mqtt://127.0.0.1:1883", "edged-gw1", "1 model(s)", "1 agent(s)", "1 route(s)",
                 "2 ACL rule(s)", "/var/lib/edged/edged.db"):
        assert part in line, (part, line)
    assert r.stderr == ""


def test_example_loads_typed() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.mqtt.client_id == "edged-gw1"
    assert cfg.resources.idle_unload_s == 300 and isinstance(cfg.resources.idle_unload_s, int)
    assert cfg.models["small"].backend == "llama_cpp"
    assert cfg.models["small"].threads == 2
    assert cfg.agents["house"].tools == ["home.*", "timers.*"]
    assert cfg.routes[0].topic == "home/+/say" and cfg.routes[0].agent == "house"
    assert cfg.acl[0].deny == ["locks.*"]
    assert cfg.db_path == Path("/var/lib/edged/edged.db")


def test_check_config_bad_int(tmp_path: Path) -> None:
    p = example_with(tmp_path, "idle_unload_s = 300", 'idle_unload_s = "abc"')
    r = run_cli("check-config", "-c", str(p))
    assert r.returncode != 0
    assert r.stdout == ""
    assert "resources.idle_unload_s" in r.stderr
    assert "expected int >= 0, got str" in r.stderr
    assert str(p) in r.stderr
    # One problem, one line naming file and key (plus the "config error:" header).
    assert f"{p}: resources.idle_unload_s: expected int >= 0, got str 'abc'" in r.stderr


def test_check_config_unknown_mqtt_key(tmp_path: Path) -> None:
    p = example_with(tmp_path, 'client_id = "edged-gw1"', 'client_id = "edged-gw1"\nprot = 1')
    r = run_cli("check-config", "-c", str(p))
    assert r.returncode != 0
    assert f"{p}: mqtt.prot: unknown key" in r.stderr
    # The hint lists the real keys, so the typo is easy to spot.
    assert "protocol" in r.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "absent.toml"
    r = run_cli("check-config", "-c", str(p))
    assert r.returncode == 2
    assert f"{p}: file not found" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------
# Error paths through loads_dict / load


def test_unknown_top_level_section() -> None:
    msg = error_of({"mqqt": {"url": "mqtt://x"}})
    assert msg.startswith("f.toml: mqqt: unknown key")
    assert "mqtt" in msg.split("known keys:", 1)[1]


def test_unknown_key_inside_named_model() -> None:
    # Two models so that the failing one has to be found, not guessed.
    msg = error_of({"models": {
        "big": {"backend": "llama_cpp", "path": "b.gguf"},
        "small": {"backend": "llama_cpp", "path": "s.gguf", "ctx": 512},
    }})
    assert msg.startswith("f.toml: models.small.ctx: unknown key"), msg
    assert "[...]" not in msg
    assert "context" in msg  # the key that was meant


def test_bad_value_inside_named_agent_names_that_agent() -> None:
    msg = error_of({"agents": {"a": {}, "b": {"max_steps": 99}}})
    assert msg == "f.toml: agents.b.max_steps: expected int <= 32, got int 99"


def test_bad_enum_lists_choices() -> None:
    msg = error_of({"models": {"small": {"backend": "nope", "path": "x"}}})
    assert msg.startswith("f.toml: models.small.backend: expected one of ")
    for choice in ("'llama_cpp'", "'onnx_genai'", "'openai'"):
        assert choice in msg
    assert msg.endswith("got str 'nope'")


def test_missing_required_key() -> None:
    msg = error_of({"models": {"small": {"path": "x"}}})
    assert msg == "f.toml: models.small.backend: required key is missing"


def test_wrong_table_type() -> None:
    assert error_of({"mqtt": 5}) == "f.toml: mqtt: expected table, got int 5"
    assert error_of({"routes": {"topic": "a"}}) == "f.toml: routes: expected array, got table"


def test_list_item_path() -> None:
    msg = error_of({"agents": {"house": {"tools": ["home.*", 3]}}})
    assert msg == "f.toml: agents.house.tools[1]: expected str, got int 3"


@pytest.mark.parametrize("topic, why", [
    ("home/#/say", "'#' must be a whole last level"),
    ("home/kitchen+/say", "'+' must be a whole level"),
])
def test_route_topic_bad_wildcard(topic: str, why: str) -> None:
    msg = error_of({"routes": [
        {"topic": "home/+/say", "agent": "echo"},
        {"topic": topic, "agent": "echo"},
    ]})
    assert msg == f"f.toml: routes[1].topic: {why}, got {topic!r}"


def test_route_unknown_agent() -> None:
    msg = error_of({
        "agents": {"house": {}},
        "routes": [{"topic": "a/b", "agent": "house"}, {"topic": "c/d", "agent": "garden"}],
    })
    assert msg.startswith("f.toml: routes[1].agent: expected one of ")
    assert "'house'" in msg and "'echo'" in msg
    assert msg.endswith("got 'garden'")


def test_agent_model_undefined() -> None:
    msg = error_of({
        "models": {"small": {"backend": "llama_cpp", "path": "s.gguf"}},
        "agents": {"house": {"model": "big"}},
    })
    assert msg == "f.toml: agents.house.model: expected one of [models] (small), got 'big'"


def test_several_cross_field_problems_reported_together() -> None:
    msg = error_of({
        "agents": {"house": {"model": "big"}},
        "routes": [{"topic": "a/#/b", "agent": "house"}],
    })
    lines = msg.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("f.toml: ") for line in lines)
    assert "agents.house.model" in lines[0] and "routes[0].topic" in lines[1]


def test_invalid_table_name() -> None:
    msg = error_of({"models": {"ok": {"backend": "llama_cpp", "path": "x"},
                               "bad name": {"backend": "llama_cpp", "path": "x"}}})
    assert msg.startswith("f.toml: models: invalid name 'bad name': expected str matching")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("[mqtt]\nurl = \n")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: invalid TOML")
    assert "line 2" in msg


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="file not found") as ei:
        config.load(p)
    assert str(p) in str(ei.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.toml"
    p.write_bytes('[mqtt]\nclient_id = "gw-\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert str(ei.value).startswith(f"{p}: not UTF-8 text")


def test_load_reports_path_of_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[resources]\nidle_unload_s = -5\n")
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert str(ei.value) == f"{p}: resources.idle_unload_s: expected int >= 0, got int -5"


# --------------------------------------------------------------------------------------------
# Defaults and paths


def test_load_none_gives_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cfg = config.load(None)
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1883"
    assert cfg.resources.idle_unload_s == 300
    assert cfg.models == {} and cfg.routes == []
    assert cfg.db_path == tmp_path / "state" / "edged" / "edged.db"


def test_db_path_state_directory_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'svc'}:{tmp_path / 'other'}")
    assert config.load(None).db_path == tmp_path / "svc" / "edged.db"
    # An explicit storage.path beats both.
    cfg = loads_dict({"storage": {"path": str(tmp_path / "my.db")}}, "f.toml")
    assert cfg.db_path == tmp_path / "my.db"


def test_default_config_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = tmp_path / "from-env.toml"
    monkeypatch.setenv("EDGED_CONFIG", str(p))
    assert config.default_config_path() == p


def test_check_config_uses_edged_config_env(tmp_path: Path) -> None:
    p = example_with(tmp_path, 'client_id = "edged-gw1"', 'client_id = "from-env-gw"')
    r = run_cli("check-config", env={"EDGED_CONFIG": str(p)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{p}: OK: ") and "from-env-gw" in r.stdout


# --------------------------------------------------------------------------------------------
# Secrets


def _cfg_with_password_file(path: Path | str) -> config.Config:
    return loads_dict({"mqtt": {"username": "edged", "password_file": str(path)}}, "f.toml")


def test_password_file_is_read(tmp_path: Path) -> None:
    pw = tmp_path / "mqtt.password"
    pw.write_text("s3cr3t-from-file\n")
    secret = config.mqtt_password(_cfg_with_password_file(pw))
    assert secret is not None and secret.get() == "s3cr3t-from-file"


def test_no_password_configured() -> None:
    assert config.mqtt_password(config.load(None)) is None


def test_password_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "mqtt.password"
    pw.write_text("from-file")
    monkeypatch.setenv("EDGED_MQTT_PASSWORD", "from-env")
    secret = config.mqtt_password(_cfg_with_password_file(pw))
    assert secret is not None and secret.get() == "from-env"


def test_password_file_env_overrides_config(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").write_text("from-config-file")
    (tmp_path / "b").write_text("from-env-file")
    monkeypatch.setenv("EDGED_MQTT_PASSWORD_FILE", str(tmp_path / "b"))
    secret = config.mqtt_password(_cfg_with_password_file(tmp_path / "a"))
    assert secret is not None and secret.get() == "from-env-file"


def test_secret_never_shows_itself() -> None:
    s = config.Secret("hunter2-very-secret")
    for text in (repr(s), str(s), f"{s}", f"{s!r}", repr([s]), repr({"pw": s})):
        assert "hunter2" not in text
    assert s.get() == "hunter2-very-secret"
    assert bool(s) and not config.Secret("")


@pytest.mark.parametrize("make_bad", [
    lambda d: d / "missing.password",   # does not exist
    lambda d: d,                        # a directory (root can read any file, so not chmod)
])
def test_unreadable_password_file(tmp_path: Path, make_bad: Any) -> None:
    bad = make_bad(tmp_path)
    with pytest.raises(ConfigError) as ei:
        config.mqtt_password(_cfg_with_password_file(bad))
    assert str(ei.value).startswith("mqtt.password_file: cannot read secret file")
    assert str(bad) in str(ei.value)


def test_check_config_reads_secret_but_never_prints_it(tmp_path: Path) -> None:
    pw = tmp_path / "mqtt.password"
    pw.write_text("hunter2-do-not-print")
    p = example_with(tmp_path, "# password_file =", f'password_file = "{pw}" #')
    r = run_cli("check-config", "-c", str(p), "-vv")
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    # The same config with a password file that cannot be read is rejected.
    pw.unlink()
    r = run_cli("check-config", "-c", str(p))
    assert r.returncode == 2
    assert "mqtt.password_file" in r.stderr


@pytest.mark.parametrize("raw, key", [
    ({"mqtt": {"password": "hunter2-inline"}}, "mqtt.password"),           # inline: not allowed
    ({"mqtt": {"tls": {"key": "hunter2-inline"}}}, "mqtt.tls.key"),
    ({"cloud": {"api_key": "hunter2-inline"}}, "cloud.api_key"),
])
def test_error_for_secret_like_key_does_not_echo_value(raw: dict[str, Any], key: str) -> None:
    msg = error_of(raw)
    assert key in msg
    assert "hunter2" not in msg


def test_error_for_ordinary_key_does_echo_value() -> None:
    # The contrast that makes the test above meaningful: values are shown where harmless.
    msg = error_of({"cloud": {"daily_requests": "hunter2-inline"}})
    assert msg == "f.toml: cloud.daily_requests: expected int >= 0, got str 'hunter2-inline'"


def test_the_house_example_config_is_valid() -> None:
    """The config that scripts/run (the README's main command) starts must stay valid."""
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "edged", "check-config", "-c",
                        str(root / "examples" / "house.toml")], capture_output=True, text=True,
                       timeout=60, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "1 agent(s)" in r.stdout


def test_agent_tiers_and_chat_keys_name_their_path() -> None:
    base = {"models": {"small": {"backend": "llama_cpp", "path": "x.gguf"},
                       "lan": {"backend": "openai", "base_url": "http://h:1/v1"}},
            "agents": {"house": {"models": ["small", "nope"]}}}
    assert "agents.house.models[1]: expected one of [models]" in error_of(base)
    cfg = loads_dict({**base, "agents": {"house": {"models": ["small", "lan"], "tools": []}}})
    house = cfg.agents["house"]
    assert house.tiers == ["small", "lan"] and house.tools == []
    assert not cfg.models["small"].talks and cfg.models["lan"].talks
    assert loads_dict({**base, "agents": {"house": {"model": "small"}}}).agents["house"] \
        .tools is None  # unset: every tool
    assert "agents.house.answer_tokens" in error_of(
        {**base, "agents": {"house": {"model": "small", "answer_tokens": 5}}})
    assert "models.lan.chat" in error_of(
        {"models": {"lan": {"backend": "openai", "chat": "yes"}}})


def test_a_model_assists_the_rules_only_when_it_talks_or_is_told_to() -> None:
    """The bundled 135M model is not asked to pick tools or fill spans (measured worse than
    asking the user); a talking model is; either can be set."""
    models = {"small": {"backend": "llama_cpp", "path": "bundled:smollm2-135m"},
              "lan": {"backend": "openai", "base_url": "http://h:1/v1"},
              "local3b": {"backend": "llama_cpp", "path": "x.gguf", "chat": True},
              "forced": {"backend": "llama_cpp", "path": "x.gguf", "assist": True},
              "quiet": {"backend": "openai", "base_url": "http://h:1/v1", "assist": False}}
    cfg = loads_dict({"models": models})
    assert [cfg.models[m].assists for m in models] == [False, True, True, True, False]
    assert "models.small.assist" in error_of(
        {"models": {"small": {"backend": "llama_cpp", "assist": "sometimes"}}})
