"""The rows the spine writes for a request it cannot answer: its error reply and its
dead-letter copy, and the reply properties (MQTT v5 correlation data) they carry."""

from __future__ import annotations

from typing import Any

import msgspec

from ..bus.topics import Topics
from ..journal import PRIO_DLQ, Meta, OutRow, dead_letter_payload
from ..messages import ErrorBody, ErrorReply

_PROPS_ENC = msgspec.msgpack.Encoder()
PROPS_DEC = msgspec.msgpack.Decoder(dict[str, Any])


def props(meta: Meta) -> bytes | None:
    """What the sender needs to answer in kind (v5 correlation data), stored with the row."""
    return _PROPS_ENC.encode({"c": meta.correlation}) if meta.correlation else None


def error_row(meta: Meta, msg_id: str | None, code: str, message: str,
              priority: int) -> OutRow:
    body = msgspec.json.encode(ErrorReply(id=msg_id, error=ErrorBody(code, message)))
    return OutRow(topic=meta.reply_topic, payload=body, priority=priority, kind="error",
                  props=props(meta))


def dead_letter(topics: Topics, topic: str, payload: bytes, message: str, code: str,
                msg_id: str | None, attempts: int) -> OutRow:
    """A bounded copy on ``<prefix>/dlq`` (see journal.dead_letter_payload)."""
    return OutRow(topic=topics.dlq, priority=PRIO_DLQ, kind="dlq",
                  payload=dead_letter_payload(topic, payload, message, code, msg_id, attempts))


def correlation_id(c: bytes | None) -> str | None:
    """v5 correlation data as a request id: text when printable, else hex."""
    if not c:
        return None
    try:
        s = c.decode("utf-8")
        if s.isprintable() and 0 < len(s) <= 256:
            return s
    except UnicodeDecodeError:
        pass
    return c.hex()
