"""Typed configuration: one TOML file decoded into msgspec Structs.

Every error names the file, the key path and what was expected, because an operator on a
headless gateway only sees one line in the journal. Unknown keys are errors: a typo must never
be silently ignored. Secrets come from ``*_file`` keys or ``EDGED_*`` environment variables and
are wrapped in :class:`Secret` so they never reach a log line.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PosFloat = Annotated[float, msgspec.Meta(gt=0)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (file: key.path: message)."""


class Secret:
    """A string that never shows itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every section. msgspec passes these options on to subclasses, but type checkers
    (PEP 681) take ``frozen`` per class, so each section repeats ``frozen=True``."""


def default_state_dir() -> Path:
    """systemd's StateDirectory when run as a service, else a per-user directory."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edged"


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "json"] = "auto"


class TLSConfig(_Section, frozen=True):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MQTTConfig(_Section, frozen=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^mqtts?://")] = "mqtt://127.0.0.1:1883"
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "edged"
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password_file: str | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    session_expiry_s: NonNegInt = 7 * 24 * 3600
    topic_prefix: Annotated[str, msgspec.Meta(pattern=r"^[^#+\s]+$")] = "edged"
    shared_group: Annotated[str, msgspec.Meta(pattern=r"^[^/#+\s]+$")] | None = None
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    embedded_broker: bool = False
    # How many QoS 1 messages the broker may have in flight to us (MQTT v5 Receive Maximum):
    # this is the bound of the receive queue, since nothing is acked before it is journaled.
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 256
    reconnect_min_s: PosFloat = 0.5
    reconnect_max_s: PosFloat = 30.0


class StorageConfig(_Section, frozen=True):
    path: str = ""  # empty: <state dir>/edged.db
    # full: a power cut loses nothing acked; normal: a power cut may lose the last commits
    # (a process crash loses nothing either way)
    synchronous: Literal["full", "normal"] = "full"


class DeliveryConfig(_Section, frozen=True):
    """Journal, dedup, retries, outbox and admission (a refinement of DESIGN.md's sections)."""

    # how long the broker's redelivery (DUP, same packet id) of a delivery is recognised; the
    # same words published again are always a new request
    dedup_window_s: PosFloat = 24 * 3600.0
    # v5 correlation data (no envelope id) is a device's request key for this long only:
    # devices that send constant correlation data must not be blocked
    correlation_window_s: PosFloat = 300.0
    retention_s: PosFloat = 7 * 24 * 3600.0  # envelope ids are remembered this long
    max_attempts: PosInt = 3
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=64)] = 64 * 1024
    max_pending: PosInt = 10_000
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 512
    outbox_max_rows: PosInt = 100_000
    outbox_ttl_s: PosFloat = 24 * 3600.0
    # outbox rows published and not yet recorded as sent: a crash repeats at most this many
    # (1: at most one reply per crash, ~45% of the reply rate of 8 on a burst of echoes)
    outbox_max_inflight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1
    rate_per_s: NonNegFloat = 5.0  # per device; 0 disables the limit
    rate_burst: PosInt = 20
    status_interval_s: PosFloat = 30.0
    shutdown_timeout_s: PosFloat = 10.0


class ModelConfig(_Section, frozen=True):
    backend: Literal["llama_cpp", "onnx_genai", "openai"]
    path: str = ""
    context: Annotated[int, msgspec.Meta(ge=128)] = 2048
    threads: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    base_url: str | None = None
    model: str | None = None
    api_key_file: str | None = None
    timeout_s: PosFloat = 60.0
    # llama_cpp: RAM for the model's state after recent prompts, so that a prompt starting
    # like an earlier one (the same tool's examples) skips re-reading that part; 0: off
    prompt_cache_mb: NonNegInt = 32
    # llama_cpp / onnx_genai: run the model in its own supervised worker process (a native
    # crash or a hang costs a model error and a restart, never the daemon); false runs it in
    # the daemon (debugging, benchmarks)
    worker: bool = True
    # the worker's address-space cap in MB (RLIMIT_AS); 0: twice the estimate plus 2 GiB
    memory_limit_mb: NonNegInt = 0
    # the model answers questions and chat in its own words (agents talk with it); unset:
    # yes for openai backends (Ollama, llama.cpp server, vLLM...), no for local files (the
    # bundled 135M model only fills tool arguments; set true for a local 1-3B instruct model)
    chat: bool | None = None
    # the rules ask the model a constrained question (which of two close tools; a span or a
    # number said, for an open argument) before they ask the user; unset: the models that
    # talk. The bundled 135M model does not: measured on seven development sets its answers
    # cost more right calls (and ran more wrong ones) than they saved
    assist: bool | None = None

    @property
    def talks(self) -> bool:
        return self.chat if self.chat is not None else self.backend == "openai"

    @property
    def assists(self) -> bool:
        return self.assist if self.assist is not None else self.talks


class ResourcesConfig(_Section, frozen=True):
    idle_unload_s: NonNegInt = 300
    max_loaded_models: PosInt = 2
    memory_budget_mb: NonNegInt = 0  # 0: derive from available memory
    min_free_memory_mb: NonNegInt = 256
    battery_low_percent: Percent = 20.0
    thermal_high_c: float = 80.0
    # a model held (loading or generating) longer than this is stuck: the systemd watchdog
    # pings stop and systemd restarts the service
    stuck_after_s: PosFloat = 300.0
    # a model whose worker crashes crash_limit times within crash_window_s is marked failed
    # (status degraded, an event) instead of restarting in a loop; `edged models load`
    # or the end of the window lets it try again. Between crashes, restarts back off from
    # restart_backoff_s, doubling.
    crash_limit: PosInt = 3
    crash_window_s: PosFloat = 600.0
    restart_backoff_s: NonNegFloat = 1.0


class AgentConfig(_Section, frozen=True):
    model: str = ""
    description: str = ""
    system_prompt: str = ""
    # tool name patterns ("home.*"); unset: every tool; [] no tool at all (memory tools too)
    tools: list[str] | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    memory: bool = True
    low_power_model: str | None = None
    escalate: Literal["never", "auto", "always"] = "auto"
    # the longest answer in the model's own words (a question, chat), in tokens
    answer_tokens: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 256
    # model tiers, cheapest first ("small" rules model, then "lan" chat models); the agent
    # takes the cheapest tier expected to succeed and climbs on failure, the cloud last;
    # empty: just ``model``
    models: list[str] = []

    @property
    def tiers(self) -> list[str]:
        return list(self.models) or ([self.model] if self.model else [])


class RouteConfig(_Section, frozen=True):
    topic: Annotated[str, msgspec.Meta(min_length=1)]
    agent: Name
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 5
    # the device this route's messages speak for when its filter has no + level (with one,
    # the first + level is the device); never taken from the payload
    device: str | None = None
    # topic filters replies may go to besides <prefix>/out/<device>[/...]
    reply_topics: list[str] = []


class RouterConfig(_Section, frozen=True):
    default_agent: Name = "echo"
    min_confidence: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3


class PluginsConfig(_Section, frozen=True):
    dirs: list[str] = []
    tool_timeout_s: PosFloat = 10.0
    # sync tools run on this many threads of their own; a tool that never returns holds one
    # until it does. When all are busy and as many calls wait, new calls are refused at once.
    tool_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # a plugin whose import takes longer is reported and skipped (its thread is abandoned)
    import_timeout_s: PosFloat = 10.0


Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class MemoryConfig(_Section, frozen=True):
    enabled: bool = True
    # bundled:<name>, a folder with model.onnx + tokenizer.json, or model:<alias> (embeddings
    # from a [models.<alias>] backend)
    embedder: str = "bundled:minilm-l6-int8"
    path: str | None = None  # default: memory.db next to storage.path
    model: str | None = None  # consolidation's model alias; default: the first agent's model
    consolidate_every_s: PosInt = 3600
    retention_days: PosInt = 365
    max_turns: PosInt = 20  # short-term: turns of a session kept in the window
    turn_tokens: PosInt = 600  # short-term: and at most this many tokens of them
    context_tokens: Annotated[int, msgspec.Meta(ge=64)] = 768  # working-memory budget
    recall_k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    min_similarity: Fraction = 0.35
    followup_s: NonNegInt = 300  # a turn this recent is what "it" / "too" refer to
    episode_after_s: PosInt = 86400  # consolidated turns older than this become episodes
    prune_below_importance: Fraction = 0.3


class CloudConfig(_Section, frozen=True):
    enabled: bool = False
    base_url: str = ""
    model: str = ""
    api_key_file: str | None = None  # or $EDGED_CLOUD_API_KEY / $EDGED_CLOUD_API_KEY_FILE
    escalate_below: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.4
    offline: Literal["queue", "local"] = "queue"
    queue_ttl_s: PosInt = 86400  # a queued escalation older than this is dropped
    redact_fields: list[str] = []  # envelope data fields (dotted paths) never sent
    redact_patterns: bool = True  # e-mails, phone numbers, cards, IBANs, IPs, secrets
    # what the cloud_request event carries: ids, counts and sizes only, or also the
    # (redacted) messages sent, which anyone who may subscribe to the events can read
    event_content: Literal["metadata", "redacted"] = "metadata"
    tools: bool = True  # the cloud may call the agent's tools (under the ACL)
    daily_requests: NonNegInt = 200
    daily_tokens: NonNegInt = 200_000
    max_tokens: PosInt = 512  # per cloud answer
    timeout_s: PosFloat = 30.0
    retry_min_s: PosFloat = 5.0  # probe back-off while offline with escalations queued
    retry_max_s: PosFloat = 300.0


class ACLRule(_Section, frozen=True):
    match: Annotated[str, msgspec.Meta(min_length=1)]
    allow: list[str] = []  # tool patterns; admin actions (models.*) need an explicit allow
    deny: list[str] = []
    agents: list[str] = []  # agent patterns an envelope's "agent" may name ([]: any)
    max_priority: Annotated[int, msgspec.Meta(ge=0, le=9)] | None = None  # envelope priority cap
    reply_to: list[str] = []  # topic filters replies may go to besides the device's own


class MetricsConfig(_Section, frozen=True):
    enabled: bool = False
    listen: Annotated[str, msgspec.Meta(pattern=r"^[^:]+:\d+$")] = "127.0.0.1:9108"


class Config(_Section, frozen=True):
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    mqtt: MQTTConfig = msgspec.field(default_factory=MQTTConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    models: dict[Name, ModelConfig] = {}
    resources: ResourcesConfig = msgspec.field(default_factory=ResourcesConfig)
    agents: dict[Name, AgentConfig] = {}
    routes: list[RouteConfig] = []
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    cloud: CloudConfig = msgspec.field(default_factory=CloudConfig)
    acl: list[ACLRule] = []
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    @property
    def db_path(self) -> Path:
        return Path(self.storage.path) if self.storage.path else default_state_dir() / "edged.db"

    @property
    def memory_path(self) -> Path:
        """The memory database: its own file (sqlite-vec, re-embedding and forgetting never
        touch the message journal)."""
        return Path(self.memory.path) if self.memory.path else self.db_path.parent / "memory.db"

    @property
    def memory_model(self) -> str | None:
        if self.memory.model:
            return self.memory.model
        return next((a.model for a in self.agents.values() if a.model), None)

    def summary(self) -> str:
        return (
            f"broker {self.mqtt.url} as {self.mqtt.client_id} (MQTT {self.mqtt.protocol}), "
            f"prefix '{self.mqtt.topic_prefix}', {len(self.models)} model(s), "
            f"{len(self.agents)} agent(s), {len(self.routes)} route(s), "
            f"{len(self.acl)} ACL rule(s), db {self.db_path}"
        )


BUILTIN_AGENTS = frozenset({"echo", "sink"})

# --------------------------------------------------------------------------------------------
# Loading and error phrasing


def default_config_path() -> Path | None:
    """$EDGED_CONFIG, then /etc/edged/edged.toml, then ~/.config/edged/edged.toml."""
    env = os.environ.get("EDGED_CONFIG")
    if env:
        return Path(env)
    for candidate in (
        Path("/etc/edged/edged.toml"),
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edged" / "edged.toml",
    ):
        if candidate.is_file():
            return candidate
    return None


def load(path: str | Path | None) -> Config:
    """Read and validate a config file; ``None`` means built-in defaults."""
    if path is None:
        return _validate(Config(), "<defaults>")
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    return loads_dict(raw, str(p))


def loads_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_phrase(raw, str(e))}") from None
    return _validate(cfg, source)


_AT = re.compile(r"^(?P<msg>.*?)(?: - at (?P<in_key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<key>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<what>[^`]*)`(?P<rest>.*?)(?:, got `(?P<got>[^`]*)`)?$")


def _phrase(raw: Any, message: str) -> str:
    m = _AT.match(message)
    assert m is not None
    msg, path = m.group("msg"), m.group("path") or ""
    steps = _steps(path)
    steps = _resolve_dict_keys(raw, steps, msg)
    here = _join(steps)
    if m.group("in_key"):
        # A table name is invalid (``[models."bad name"]``): msgspec only says "at `key`".
        container = _value_at(raw, steps)
        key_type = (typing.get_args(_strip_annotated(_type_at(steps))) or (None,))[0]
        bad = [k for k in (container if isinstance(container, dict) else ())
               if key_type is not None and not _converts(k, key_type)]
        e = _EXPECTED.match(msg)
        what = f"{e.group('what')}{e.group('rest')}" if e else msg
        name = f" {bad[0]!r}" if bad else ""
        return f"{here or '<top>'}: invalid name{name}: expected {what}"
    if u := _UNKNOWN.match(msg):
        key = ".".join(x for x in (here, u.group("key")) if x)
        known = _known_keys(steps)
        hint = f" (known keys: {', '.join(known)})" if known else ""
        return f"{key}: unknown key{hint}"
    if mm := _MISSING.match(msg):
        key = ".".join(x for x in (here, mm.group("key")) if x)
        return f"{key}: required key is missing"
    value = _value_at(raw, steps)
    got = _describe(value, steps)
    expected_type = _type_at(steps)
    if e := _EXPECTED.match(msg):
        what = {"object": "table", "array": "array"}.get(e.group("what"), e.group("what"))
        rest = e.group("rest").strip() or _constraints(expected_type)
        return f"{here or '<top>'}: expected {what}{' ' + rest if rest else ''}, got {got}"
    if msg.startswith("Invalid enum value"):
        choices = typing.get_args(_strip_annotated(expected_type))
        if choices:
            return f"{here}: expected one of {', '.join(map(repr, choices))}, got {got}"
    return f"{here or '<top>'}: {msg[:1].lower() + msg[1:]}, got {got}"


def _steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for name, idx in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path):
        if name:
            out.append(name)
        elif idx == "...":
            out.append("...")
        else:
            out.append(int(idx))
    return out


def _join(steps: list[str | int]) -> str:
    out = ""
    for s in steps:
        out += f"[{s}]" if isinstance(s, int) else (f".{s}" if out else str(s))
    return out


def _resolve_dict_keys(raw: Any, steps: list[str | int], msg: str) -> list[str | int]:
    """msgspec reports dict keys as ``[...]``: find the entry that fails on its own."""
    if "..." not in steps:
        return steps
    i = steps.index("...")
    container = _value_at(raw, steps[:i])
    value_type = _type_at(steps[:i + 1])
    if isinstance(container, dict) and value_type is not None:
        for key, value in container.items():
            try:
                msgspec.convert(value, value_type)
            except msgspec.ValidationError:
                return steps[:i] + [str(key)] + _resolve_dict_keys(value, steps[i + 1:], msg)
    return steps


def _type_at(steps: list[str | int]) -> Any:
    t: Any = Config
    for s in steps:
        origin = typing.get_origin(t)
        if origin is Annotated:
            t = typing.get_args(t)[0]
            origin = typing.get_origin(t)
        if isinstance(s, str) and s != "..." and isinstance(t, type) and issubclass(
            t, msgspec.Struct
        ):
            t = typing.get_type_hints(t, include_extras=True).get(s)
        elif origin in (list, dict):
            t = typing.get_args(t)[-1]
        else:
            return None
    return t


def _converts(value: Any, t: Any) -> bool:
    try:
        msgspec.convert(value, t)
    except msgspec.ValidationError:
        return False
    return True


def _strip_annotated(t: Any) -> Any:
    while typing.get_origin(t) is Annotated:
        t = typing.get_args(t)[0]
    return t


def _constraints(t: Any) -> str:
    """'>= 0' and the like, from the Annotated msgspec.Meta of a field type."""
    parts: list[str] = []
    for arg in typing.get_args(t)[1:] if typing.get_origin(t) is Annotated else ():
        if isinstance(arg, msgspec.Meta):
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(arg, attr) is not None:
                    parts.append(f"{sym} {getattr(arg, attr)}")
            if arg.pattern is not None:
                parts.append(f"matching {arg.pattern!r}")
            if arg.min_length is not None:
                parts.append(f"of length >= {arg.min_length}")
    return " and ".join(parts)


def _known_keys(steps: list[str | int]) -> list[str]:
    t = _type_at(steps)
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return list(t.__struct_fields__)
    return []


def _value_at(raw: Any, steps: list[str | int]) -> Any:
    cur = raw
    for s in steps:
        try:
            cur = cur[s]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


_SECRETISH = re.compile(r"(^|_)(password|secret|token|api_key|key)$", re.I)


def _describe(value: Any, steps: list[str | int]) -> str:
    tname = {dict: "table", list: "array", str: "str", bool: "bool", int: "int",
             float: "float"}.get(type(value), type(value).__name__)
    if value is None or isinstance(value, (dict, list)):
        return tname
    if steps and isinstance(steps[-1], str) and _SECRETISH.search(steps[-1]):
        return tname
    text = repr(value)
    return f"{tname} {text if len(text) <= 40 else text[:37] + '...'}"


def _validate(cfg: Config, source: str) -> Config:
    """Cross-field checks that a type alone cannot express."""
    problems: list[str] = []
    for name, agent in cfg.agents.items():
        if name in BUILTIN_AGENTS:
            problems.append(f"agents.{name}: '{name}' is a built-in diagnostic agent name")
        if agent.model and agent.model not in cfg.models:
            problems.append(
                f"agents.{name}.model: expected one of [models] ({_names(cfg.models)}), "
                f"got {agent.model!r}"
            )
        for i, alias in enumerate(agent.models):
            if alias not in cfg.models:
                problems.append(
                    f"agents.{name}.models[{i}]: expected one of [models] "
                    f"({_names(cfg.models)}), got {alias!r}")
        if agent.low_power_model and agent.low_power_model not in cfg.models:
            problems.append(
                f"agents.{name}.low_power_model: expected one of [models] "
                f"({_names(cfg.models)}), got {agent.low_power_model!r}"
            )
    known_agents = set(cfg.agents) | BUILTIN_AGENTS
    for i, route in enumerate(cfg.routes):
        if route.agent not in known_agents:
            problems.append(
                f"routes[{i}].agent: expected one of {sorted(known_agents)}, got {route.agent!r}"
            )
        if err := topic_filter_error(route.topic):
            problems.append(f"routes[{i}].topic: {err}, got {route.topic!r}")
    if cfg.router.default_agent not in known_agents:
        problems.append(
            f"router.default_agent: expected one of {sorted(known_agents)}, "
            f"got {cfg.router.default_agent!r}"
        )
    for i, route in enumerate(cfg.routes):
        if route.device is not None and (err := device_id_error(route.device)):
            problems.append(f"routes[{i}].device: {err}, got {route.device!r}")
        for j, f in enumerate(route.reply_topics):
            if err := topic_filter_error(f):
                problems.append(f"routes[{i}].reply_topics[{j}]: {err}, got {f!r}")
    for i, rule in enumerate(cfg.acl):
        if not (rule.allow or rule.deny or rule.agents or rule.reply_to or
                rule.max_priority is not None):
            problems.append(f"acl[{i}]: expected at least one of 'allow', 'deny', 'agents', "
                            "'max_priority' or 'reply_to'")
        for j, f in enumerate(rule.reply_to):
            if err := topic_filter_error(f):
                problems.append(f"acl[{i}].reply_to[{j}]: {err}, got {f!r}")
    for name, model in cfg.models.items():
        if model.backend == "openai" and not model.base_url:
            problems.append(f"models.{name}.base_url: required for backend 'openai'")
        if model.backend != "openai" and not model.path:
            problems.append(f"models.{name}.path: required for backend '{model.backend}'")
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        problems.append("mqtt.reconnect_max_s: expected >= mqtt.reconnect_min_s")
    if bool(cfg.mqtt.tls.cert_file) != bool(cfg.mqtt.tls.key_file):
        problems.append("mqtt.tls: cert_file and key_file must be given together")
    mem = cfg.memory
    if mem.model and mem.model not in cfg.models:
        problems.append(f"memory.model: expected one of [models] ({_names(cfg.models)}), "
                        f"got {mem.model!r}")
    if mem.embedder.startswith("model:") and mem.embedder[6:] not in cfg.models:
        problems.append(f"memory.embedder: 'model:<alias>' expects one of [models] "
                        f"({_names(cfg.models)}), got {mem.embedder!r}")
    if cfg.cloud.enabled and not (cfg.cloud.base_url and cfg.cloud.model):
        problems.append("cloud: base_url and model are required when enabled = true")
    if cfg.cloud.base_url and not re.match(r"^https?://", cfg.cloud.base_url):
        problems.append(f"cloud.base_url: expected http:// or https://, got "
                        f"{cfg.cloud.base_url!r}")
    if cfg.cloud.retry_max_s < cfg.cloud.retry_min_s:
        problems.append("cloud.retry_max_s: expected >= cloud.retry_min_s")
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return cfg


def _names(d: dict[str, Any]) -> str:
    return ", ".join(sorted(d)) or "none defined"


def topic_filter_error(topic: str) -> str | None:
    """Why an MQTT topic filter is invalid, or None."""
    if not topic or len(topic.encode()) > 65535 or "\x00" in topic:
        return "expected a non-empty MQTT topic filter"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return "'#' must be a whole last level"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


MAX_DEVICE_ID = 128  # bytes: an id is a topic level and a key in every table


def device_id_error(device: str) -> str | None:
    """Why a device id is refused (the identity every decision hangs on), or None."""
    if not device:
        return "expected a non-empty device id"
    if any(c in device for c in "+#/\x00"):
        return "a device id must not contain '+', '#', '/' or NUL"
    if len(device.encode()) > MAX_DEVICE_ID:
        return f"a device id must be at most {MAX_DEVICE_ID} bytes"
    return None


# --------------------------------------------------------------------------------------------
# Secrets


def read_secret(file_key: str, file_value: str | None, env_name: str) -> Secret | None:
    """A secret from ``$<env_name>``, ``$<env_name>_FILE`` or the config's ``*_file`` key."""
    if os.environ.get(env_name):
        return Secret(os.environ[env_name])
    path = os.environ.get(env_name + "_FILE") or file_value
    if not path:
        return None
    try:
        return Secret(Path(path).read_text(encoding="utf-8").strip())
    except OSError as e:
        raise ConfigError(f"{file_key}: cannot read secret file {path}: {e.strerror}") from None


def mqtt_password(cfg: Config) -> Secret | None:
    return read_secret("mqtt.password_file", cfg.mqtt.password_file, "EDGED_MQTT_PASSWORD")


def cloud_api_key(cfg: Config) -> Secret | None:
    return read_secret("cloud.api_key_file", cfg.cloud.api_key_file, "EDGED_CLOUD_API_KEY")
