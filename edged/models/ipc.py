"""The messages between the daemon and a model worker process, and their framing.

One request at a time goes down a Unix stream socket; the worker answers with any number of
``Token`` frames (streaming) and then exactly one final frame. A frame is a 4-byte
big-endian length and a msgpack body (msgspec, tagged structs). Frames are bounded, so a
broken peer cannot make the other side allocate without limit.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Generic, Literal, TypeVar

import msgspec

from ..config import ModelConfig
from .base import Generation, GenerationRequest

MAX_FRAME = 64 << 20
_LEN = struct.Struct(">I")


class Start(msgspec.Struct, tag=True):
    """The first message: what this worker runs. ``what`` is a chat backend or an embedder."""

    what: Literal["backend", "embedder"]
    alias: str
    cfg: ModelConfig | None = None
    path: str = ""
    embedder_spec: str = ""
    embedder_threads: int = 1
    memory_limit_mb: int = 0


class Generate(msgspec.Struct, tag=True):
    req: GenerationRequest
    stream: bool = False


class Embed(msgspec.Struct, tag=True):
    texts: list[str]


class CountTokens(msgspec.Struct, tag=True):
    text: str


class SetThreads(msgspec.Struct, tag=True):
    n: int


class Stop(msgspec.Struct, tag=True):
    pass


Request = Start | Generate | Embed | CountTokens | SetThreads | Stop


class Token(msgspec.Struct, tag=True):
    text: str


class Loaded(msgspec.Struct, tag=True):
    pid: int
    dim: int = 0
    system_info: str = ""
    seconds: float = 0.0


class Generated(msgspec.Struct, tag=True):
    gen: Generation


class Vectors(msgspec.Struct, tag=True):
    vectors: list[list[float]]


class Count(msgspec.Struct, tag=True):
    n: int


class Done(msgspec.Struct, tag=True):
    pass


class Failed(msgspec.Struct, tag=True):
    """An error the worker survived. ``kind``: model | not_supported | memory | internal."""

    kind: str
    message: str


Reply = Token | Loaded | Generated | Vectors | Count | Done | Failed
# what a call ends with when it succeeds (Token frames come before it, Failed instead of it)
Answer = Loaded | Generated | Vectors | Count | Done


In = TypeVar("In", Request, Reply)
Out = TypeVar("Out", Request, Reply)


class Closed(Exception):
    """The peer closed the socket (or it broke) before a whole frame arrived."""


class Channel(Generic[In, Out]):
    """Framed msgspec messages over one connected stream socket (blocking): ``In`` comes in
    (``incoming``, the type the frames are decoded as), ``Out`` goes out. The daemon's end is
    ``Channel[Reply, Request]``, the worker's ``Channel[Request, Reply]``."""

    def __init__(self, sock: socket.socket, incoming: Any) -> None:
        self.sock = sock
        self._enc = msgspec.msgpack.Encoder()
        self._dec: msgspec.msgpack.Decoder[In] = msgspec.msgpack.Decoder(incoming)

    def send(self, msg: Out) -> None:
        body = self._enc.encode(msg)
        try:
            self.sock.sendall(_LEN.pack(len(body)) + body)
        except OSError as e:
            raise Closed(str(e)) from None

    def recv(self) -> In:
        (n,) = _LEN.unpack(self._exact(_LEN.size))
        if n > MAX_FRAME:
            raise Closed(f"frame of {n} bytes exceeds {MAX_FRAME}")
        try:
            return self._dec.decode(self._exact(n))
        except msgspec.DecodeError as e:
            raise Closed(f"undecodable frame: {e}") from None

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except OSError as e:
                raise Closed(str(e)) from None
            if not chunk:
                raise Closed("end of stream")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()
