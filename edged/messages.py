"""The MQTT message contract (DESIGN.md) as msgspec Structs, and the request parser.

Parsing never raises anything but :class:`BadRequest`, whose ``code`` and ``message`` go into
the error reply and the dead-letter copy.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec


class BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Envelope(msgspec.Struct, forbid_unknown_fields=False, kw_only=True, omit_defaults=True):
    """A JSON request. Unknown keys are tolerated: device firmware adds fields."""

    id: str | None = None
    text: str | None = None
    device: str | None = None
    session: str | None = None
    data: dict[str, Any] | None = None
    agent: str | None = None
    reply_to: str | None = None
    priority: int | None = None
    stream: bool = False  # the answer's words to <reply topic>/partial as they come


class Request(msgspec.Struct, kw_only=True):
    """What a processing stage sees: the parsed request plus where it came from."""

    id: str
    topic: str
    device: str
    text: str
    data: dict[str, Any] | None = None
    agent: str | None = None  # explicit agent from the envelope
    session: str | None = None
    reply_topic: str | None = None
    correlation: bytes | None = None
    priority: int = 5
    attempt: int = 1
    route_confidence: float | None = None  # the router's, when it classified the request
    stream: bool = False  # the device asked for the words as they come


class ToolCall(msgspec.Struct, kw_only=True):
    tool: str
    arguments: dict[str, Any]
    result: Any = None


class Reply(msgspec.Struct, kw_only=True):
    id: str
    agent: str
    text: str
    tool_calls: list[ToolCall] = []
    escalated: bool = False
    model: str | None = None
    latency_ms: float = 0.0
    confidence: float | None = None
    followup: bool = False  # a second reply: the cloud's answer after it was unreachable
    # the model tier that answered: 0 the cheapest local one, then the next, "cloud" last
    tier: int | str | None = None


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorReply(msgspec.Struct, kw_only=True):
    id: str | None
    error: ErrorBody


class DeadLetter(msgspec.Struct, kw_only=True):
    id: str | None
    topic: str
    reason: str
    code: str
    payload: str
    payload_encoding: str  # "utf-8" or "base64"
    attempts: int = 0
    ts: float = 0.0
    # set when only a prefix of the payload is kept: its full size and SHA-256
    payload_bytes: int | None = None
    payload_sha256: str | None = None


class Status(msgspec.Struct, kw_only=True):
    state: str  # online | offline | stopping
    client_id: str
    pid: int = 0
    ts: float = 0.0
    version: str = ""
    health: str = "ok"
    pending: int = 0
    outbox: int = 0
    models_loaded: list[str] = []
    detail: dict[str, Any] = {}


class Event(msgspec.Struct, kw_only=True):
    kind: str
    ts: float
    data: dict[str, Any] = {}


_ENVELOPE_DECODER = msgspec.json.Decoder(Envelope)
MAX_JSON_DEPTH = 32


def _depth_ok(payload: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Cheap nesting check before decoding; brackets inside strings only over-count."""
    if payload.count(b"{") + payload.count(b"[") <= limit:
        return True  # cannot nest deeper than the brackets it has (almost every request)
    depth = 0
    for b in payload:
        if b in (0x7B, 0x5B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x7D, 0x5D):
            depth -= 1
    return True


def parse(payload: bytes, *, max_bytes: int) -> tuple[Envelope | None, str]:
    """Decode a payload into (envelope or None for plain text, text). Raises BadRequest."""
    if len(payload) > max_bytes:
        raise BadRequest("too_large", f"payload is {len(payload)} bytes, limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest("bad_encoding", f"payload is not UTF-8 (byte {e.start})") from None
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not stripped:
            raise BadRequest("empty", "payload is empty; send text or a JSON object")
        if "\x00" in stripped:
            raise BadRequest("bad_encoding", "payload contains NUL characters")
        return None, stripped
    if not _depth_ok(payload):
        raise BadRequest("too_deep", f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        env = _ENVELOPE_DECODER.decode(payload)
    except msgspec.ValidationError as e:
        raise BadRequest("bad_request", f"invalid request envelope: {e}") from None
    except msgspec.DecodeError as e:
        raise BadRequest("bad_json", f"payload starts with '{{' but is not JSON: {e}") from None
    if env.text is None and env.data is None:
        raise BadRequest("bad_request", "request envelope needs 'text' or 'data'")
    if env.text is not None and len(env.text) > max_bytes:
        raise BadRequest("too_large", "text is too long")
    if env.id is not None and not (0 < len(env.id) <= 256):
        raise BadRequest("bad_request", "'id' must be 1-256 characters")
    if env.priority is not None and not (0 <= env.priority <= 9):
        raise BadRequest("bad_request", "'priority' must be 0-9")
    return env, (env.text or "").strip()


def content_key(topic: str, payload: bytes, mid: int = 0) -> str:
    """A delivery's fingerprint: topic, payload and MQTT packet id. The broker redelivers an
    unacknowledged message with the DUP flag and its original packet id, so a redelivery has
    the original's fingerprint; the same words published again travel under another packet id
    (and a fingerprint is looked up only for a DUP delivery anyway)."""
    head = f"{mid}\x00{topic}\x00".encode()
    return "h:" + hashlib.blake2b(head + payload, digest_size=16).hexdigest()


def message_key(envelope_id: str | None, correlation: bytes | None, *, device: str,
                topic: str, payload: bytes, mid: int = 0) -> tuple[str, bool]:
    """The device's request key, and whether it is only a delivery fingerprint.

    ``i:`` the envelope id, per device: remembered for ``delivery.retention_s``, so that a
    redelivery, however late, is processed once. ``c:`` the v5 correlation data, per device:
    remembered for ``delivery.correlation_window_s`` only, because devices often send constant
    correlation data, and that must not block them. Neither: the request has no key (the same
    words sent again are a new request) and the fingerprint only recognises the broker's
    redelivery (DUP) of this very packet."""
    if envelope_id:
        return f"i:{device}\x00{envelope_id}", False
    if correlation:
        return f"c:{device}\x00{correlation.hex()}", False
    return content_key(topic, payload, mid), True
