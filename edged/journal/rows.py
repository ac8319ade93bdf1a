"""The values that cross the journal's seams: what goes in (Incoming, OutRow, Escalation),
what comes out (InboxRow, OutboxRow), and the settings the table functions read."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from ..messages import DeadLetter

DLQ_PAYLOAD_MAX = 4096  # bytes of a payload a dead letter carries; beyond: size + SHA-256

# Outbox priorities: higher drains first.
PRIO_STATUS = 9
PRIO_DLQ = 4
PRIO_EVENT = 1


@dataclass(frozen=True, slots=True)
class Settings:
    """The journal's knobs, fixed at construction; the table functions take them as an
    argument rather than reaching into the Journal."""

    clock: Callable[[], float]
    dedup_window_s: float  # how long a fingerprint recognises a DUP
    correlation_window_s: float
    retention_s: float
    outbox_max_rows: int
    outbox_ttl_s: float


class Meta(msgspec.Struct, omit_defaults=True):
    """Per-message facts kept next to the raw payload."""

    device: str = ""
    reply_topic: str = ""
    correlation: bytes | None = None
    agent: str = ""
    confidence: float = 1.0
    qos: int = 1


@dataclass(slots=True)
class Incoming:
    """One message as the ingest stage classified it, ready to be journaled."""

    key: str
    key_is_content: bool
    topic: str
    payload: bytes
    meta: Meta
    priority: int = 5
    # None: to be processed; "sink": journal only; else an error to answer right away.
    outcome: str | None = None
    error_code: str = ""
    error_message: str = ""
    outbox: list[OutRow] = field(default_factory=list)
    route: str = ""  # the route filter it came in on (metrics label), not journaled
    # Dedup (see inbox.accept). The broker's DUP flag: only a redelivery is matched by
    # fingerprint.
    redelivered: bool = False
    # the delivery's fingerprint (messages.content_key) when ``key`` is a request key
    fingerprint: str = ""
    # False for a refusal the device may retry with the same key (rate_limited, overloaded)
    consumes_key: bool = True


@dataclass(slots=True)
class OutRow:
    topic: str
    payload: bytes
    priority: int
    kind: str  # reply | error | dlq | event
    props: bytes | None = None  # msgpack: correlation data etc.
    qos: int = 1
    retain: bool = False


@dataclass(slots=True)
class Escalation:
    """A cloud escalation waiting for connectivity (see :mod:`edged.escalation`)."""

    request_id: str
    agent: str
    device: str
    reply_topic: str
    props: bytes | None
    body: bytes
    priority: int
    created: float
    expires: float
    attempts: int = 0
    id: int = 0


@dataclass(slots=True)
class InboxRow:
    id: int
    key: str
    topic: str
    payload: bytes
    meta: Meta
    priority: int
    attempts: int


@dataclass(slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    props: bytes | None
    qos: int
    retain: bool
    priority: int
    kind: str


def dead_letter_payload(
    topic: str, payload: bytes, reason: str, code: str, msg_id: str | None, attempts: int
) -> bytes:
    """A dead letter; an oversized payload is kept as a prefix with its size and hash (a
    20 MiB message must not cost 27 MiB of base64 in the outbox and on the broker)."""
    size, digest = None, None
    if len(payload) > DLQ_PAYLOAD_MAX:
        size, digest = len(payload), hashlib.sha256(payload).hexdigest()
        payload = payload[:DLQ_PAYLOAD_MAX]
    try:
        body, enc = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, enc = base64.b64encode(payload).decode(), "base64"
    return msgspec.json.encode(
        DeadLetter(id=msg_id, topic=topic[:1024], reason=reason, code=code, payload=body,
                   payload_encoding=enc, attempts=attempts, ts=round(time.time(), 3),
                   payload_bytes=size, payload_sha256=digest)
    )
