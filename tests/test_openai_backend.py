"""The OpenAI-compatible backend against real servers.

Model behaviour (generation, streaming, stops, constrained output, tokenizer, API key) is
tested against a real ``python -m llama_cpp.server`` serving the bundled SmolLM2-135M GGUF.
Faults (a server that is down, slow, failing, rate limiting) are tested against a small
stdlib ``http.server`` in a thread that answers from a script.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edged.config import ModelConfig
from edged.models.base import GenerationRequest, ModelError
from edged.models.openai import OpenAIBackend, api_key_env, estimate_tokens

KEY = "sk-edged-test-4f9a1c"  # the real server's key
FAKE_KEY = "sk-fake-secret-77e2d0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backend(base_url: str, alias: str = "m", **kw: Any) -> OpenAIBackend:
    opts = {k: kw.pop(k) for k in ("max_attempts", "backoff_s", "max_backoff_s",
                                    "max_retry_after_s") if k in kw}
    cfg = ModelConfig(backend="openai", base_url=base_url, **kw)
    return OpenAIBackend(alias, cfg, "", **opts)


def chat(text: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)


# -------------------------------------------------------------------------------------------
# The real server


@dataclass
class LlamaServer:
    url: str
    key_file: str
    startup_s: float
    proc: subprocess.Popen[bytes]


def _model_path() -> str:
    from edged.models.bundled import resolve
    try:
        return resolve("bundled:smollm2-135m")
    except Exception as e:  # noqa: BLE001 - any reason the model is missing
        pytest.skip(f"bundled SmolLM2 not available: {e}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    for mod in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} missing: pip install 'edged[llama,dev]'")
    model = _model_path()
    tmp = tmp_path_factory.mktemp("llama_server")
    key_file = tmp / "key"
    key_file.write_text(KEY + "\n")
    port = free_port()
    log_path = tmp / "server.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
             "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1",
             "--n_ctx", "1024", "--api_key", KEY],
            stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = t0 + 60
        while True:  # ready when /v1/models answers (or the process died)
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n"
                            f"{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(url + "/models", headers={"Authorization": f"Bearer {KEY}"},
                              timeout=2)
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready after 60 s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        startup = time.monotonic() - t0
        print(f"\nllama_cpp.server ready in {startup:.2f} s")
        yield LlamaServer(url, str(key_file), startup, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def real(llama_server: LlamaServer) -> Iterator[OpenAIBackend]:
    b = backend(llama_server.url, alias="smol", api_key_file=llama_server.key_file,
                timeout_s=60)
    b.load()
    yield b
    b.unload()


# -------------------------------------------------------------------------------------------
# Real-model behaviour


def test_chat_generation_returns_text_and_usage(real: OpenAIBackend) -> None:
    assert real.loaded and real.memory_estimate() == 0
    t0 = time.perf_counter()
    g = real.generate(chat("What is the capital of France?", max_tokens=24))
    print(f"\nchat, {g.prompt_tokens}+{g.completion_tokens} tokens: "
          f"{time.perf_counter() - t0:.2f} s ({g.tokens_per_s:.0f} tok/s)")
    assert g.text.strip()
    assert g.prompt_tokens > 10  # from the server's usage: the chat template adds tokens
    assert 0 < g.completion_tokens <= 24
    assert g.finish_reason in ("stop", "length")
    assert g.model == "smol" and g.seconds > 0


def test_plain_completion(real: OpenAIBackend) -> None:
    g = real.generate(GenerationRequest(prompt="The capital of France is", max_tokens=6))
    assert g.text.strip()
    assert g.prompt_tokens == 5 and g.completion_tokens <= 6  # server usage, no template


def test_streaming_pieces_concatenate_to_the_text(real: OpenAIBackend) -> None:
    pieces: list[str] = []
    req = chat("Tell me about the sea.", max_tokens=20)
    g = real.generate(req, on_token=pieces.append)
    assert len(pieces) > 3
    assert "".join(pieces) == g.text and g.text.strip()
    # llama_cpp.server sends no usage in streams: one chunk a token, estimated prompt
    assert g.finish_reason == "length" and g.completion_tokens == 20
    assert g.prompt_tokens > 0
    assert real.generate(req).text == g.text  # greedy: the same text without streaming


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_is_respected(real: OpenAIBackend, stream: bool) -> None:
    pieces: list[str] = []
    g = real.generate(chat("Write a long story about a dragon.", max_tokens=5),
                      on_token=pieces.append if stream else None)
    assert g.finish_reason == "length"
    assert g.completion_tokens == 5
    assert real.count_tokens(g.text) <= 5
    if stream:
        assert len(pieces) <= 5


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings(real: OpenAIBackend, stream: bool) -> None:
    req = chat("List three fruits.", max_tokens=30)
    base = real.generate(req).text
    words = base.split()
    assert len(words) >= 4, base
    stop = words[2]  # cut at the third word
    cut = base[: base.index(stop)]
    pieces: list[str] = []
    g = real.generate(chat("List three fruits.", max_tokens=30, stop=[stop]),
                      on_token=pieces.append if stream else None)
    assert stop not in g.text
    assert g.text == cut and g.finish_reason == "stop"
    if stream:
        assert "".join(pieces) == g.text


LIGHT = {
    "type": "object",
    "properties": {
        "room": {"type": "string", "enum": ["kitchen", "bedroom", "hall"]},
        "on": {"type": "boolean"},
        "brightness": {"type": "integer"},
        "note": {"type": "string", "maxLength": 16},
    },
    "required": ["room", "on", "brightness", "note"],
    "additionalProperties": False,
}


def check_light(text: str) -> None:
    obj = json.loads(text)
    assert set(obj) == {"room", "on", "brightness", "note"}, obj
    assert obj["room"] in ("kitchen", "bedroom", "hall")
    assert isinstance(obj["on"], bool)
    assert isinstance(obj["brightness"], int) and not isinstance(obj["brightness"], bool)
    assert isinstance(obj["note"], str) and len(obj["note"]) <= 16


def test_json_schema_output_parses_and_matches(real: OpenAIBackend) -> None:
    prompts = ["Turn on the kitchen light at 70%.", "Switch off the bedroom lamp.",
               "Dim the hall to 20 percent, it is late."]
    for i, text in enumerate(prompts):
        g = real.generate(chat(text, max_tokens=80, json_schema=LIGHT, temperature=0.8,
                               seed=i + 1))
        assert g.finish_reason == "stop", g.text
        check_light(g.text)
    # llama_cpp.server 0.3.x rejects the json_schema form: the backend fell back and kept it
    assert real.schema_style == "json_object"
    pieces: list[str] = []
    g = real.generate(chat("Kitchen light on.", max_tokens=80, json_schema=LIGHT),
                      on_token=pieces.append)
    check_light(g.text)
    assert "".join(pieces) == g.text


def test_grammar_is_passed_to_llama_cpp(real: OpenAIBackend) -> None:
    g = real.generate(chat("Is the sky blue? Answer yes or no.", max_tokens=5,
                           grammar='root ::= "yes" | "no"'))
    assert g.text in ("yes", "no")


def test_count_tokens_uses_the_server_tokenizer(real: OpenAIBackend) -> None:
    assert real.count_tokens("hello world") == 2  # SmolLM2's tokenizer, not len/4 (3)
    assert real.count_tokens("") == 0
    n = real.count_tokens("The quick brown fox jumps over the lazy dog. " * 3)
    assert 20 < n < 45


def test_real_server_rejects_a_missing_key(llama_server: LlamaServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(api_key_env("nokey"), raising=False)
    b = backend(llama_server.url, alias="nokey", max_attempts=3)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as ei:
        b.load()
    assert time.monotonic() - t0 < 2  # 401 is not retried
    assert "401" in str(ei.value) and "EDGED_MODEL_NOKEY_API_KEY" in str(ei.value)
    assert not b.loaded
    monkeypatch.setenv(api_key_env("nokey"), KEY)  # the environment variable works too
    b.load()
    assert b.generate(chat("Hi", max_tokens=2)).completion_tokens <= 2
    b.unload()


# -------------------------------------------------------------------------------------------
# A scripted stdlib server for faults


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def ok_chat(text: str = "hello", **usage: int) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 7, "completion_tokens": 1}}


class FakeServer:
    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()  # ends slow replies at teardown
        self.conns: set[socket.socket] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                fake.conns.add(self.connection)

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                fake.seen.append(Seen(self.command, self.path, dict(self.headers),
                                      json.loads(raw) if raw else None))
                queue = fake.script.get(self.path) or []
                reply = queue.pop(0) if queue else fake.default(self.path)
                if reply.delay:
                    fake.release.wait(reply.delay)
                body = reply.body
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def default(self, path: str) -> Reply:
        if path == "/v1/models":
            return Reply(body={"object": "list", "data": [{"id": "fake-model"}]})
        if path == "/v1/chat/completions":
            return Reply(body=ok_chat())
        return Reply(404, {"detail": "Not Found"})

    def on(self, path: str, *replies: Reply) -> None:
        self.script.setdefault("/v1/" + path, []).extend(replies)

    def posts(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and s.path == "/v1/" + path]

    def stop(self) -> None:
        """Like a process that died: no listener and every open connection closed."""
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for c in list(self.conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.stop()


def loaded(url: str, **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.02)
    kw.setdefault("timeout_s", 5)
    b = backend(url, **kw)
    b.load()
    return b


def test_nothing_listening_fails_load_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # bound, closed: nothing listens
    b = backend(url, max_attempts=3, backoff_s=0.05)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as ei:
        b.load()
    assert time.monotonic() - t0 < 2
    msg = str(ei.value)
    assert "cannot connect" in msg and "after 3 attempts" in msg and url in msg
    assert not b.loaded


def test_server_stopped_after_load(fake: FakeServer) -> None:
    b = loaded(fake.url, max_attempts=2)
    assert b.generate(chat("hi")).text == "hello"
    fake.stop()
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="cannot connect.*after 2 attempts"):
        b.generate(chat("hi"))
    with pytest.raises(ModelError, match="cannot connect"):
        b.generate(chat("hi"), on_token=lambda _: None)
    assert time.monotonic() - t0 < 2
    assert b.count_tokens("abcdefgh") == 2  # no tokenizer reachable: the estimate


@pytest.mark.parametrize("stream", [False, True])
def test_slow_server_times_out(fake: FakeServer, stream: bool) -> None:
    b = loaded(fake.url, timeout_s=0.3, max_attempts=2)
    fake.on("chat/completions", Reply(body=ok_chat(), delay=5), Reply(body=ok_chat(), delay=5))
    t0 = time.monotonic()
    with pytest.raises(ModelError) as ei:
        b.generate(chat("hi"), on_token=(lambda _: None) if stream else None)
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 2.0, elapsed  # two attempts of 0.3 s, not 5 s
    assert "timed out after 0.3s" in str(ei.value) and "after 2 attempts" in str(ei.value)
    assert len(fake.posts("chat/completions")) == 2


def test_500_then_200_is_retried(fake: FakeServer) -> None:
    fake.on("chat/completions", Reply(500, {"error": {"message": "overloaded"}}),
            Reply(502, "Bad Gateway", content_type="text/plain"),
            Reply(body=ok_chat("fine", prompt_tokens=3, completion_tokens=1)))
    b = loaded(fake.url)
    g = b.generate(chat("hi"))
    assert g.text == "fine" and (g.prompt_tokens, g.completion_tokens) == (3, 1)
    assert len(fake.posts("chat/completions")) == 3


def test_5xx_retries_are_bounded(fake: FakeServer) -> None:
    fake.on("chat/completions", *[Reply(503, {"error": {"message": "busy"}})] * 5)
    b = loaded(fake.url, max_attempts=3)
    with pytest.raises(ModelError) as ei:
        b.generate(chat("hi"))
    assert "HTTP 503 after 3 attempts: busy" in str(ei.value)
    assert len(fake.posts("chat/completions")) == 3


def test_400_is_not_retried(fake: FakeServer) -> None:
    fake.on("chat/completions", Reply(400, {"error": {"message": "max_tokens is too large",
                                                      "type": "invalid_request_error"}}))
    b = loaded(fake.url)
    with pytest.raises(ModelError) as ei:
        b.generate(chat("hi"))
    assert "HTTP 400" in str(ei.value) and "max_tokens is too large" in str(ei.value)
    assert len(fake.posts("chat/completions")) == 1


def test_429_honours_retry_after(fake: FakeServer) -> None:
    fake.on("chat/completions", Reply(429, {"error": {"message": "slow down"}},
                                      headers={"Retry-After": "1"}), Reply(body=ok_chat()))
    b = loaded(fake.url, backoff_s=0.01)
    t0 = time.monotonic()
    assert b.generate(chat("hi")).text == "hello"
    assert 0.95 <= time.monotonic() - t0 < 3
    assert len(fake.posts("chat/completions")) == 2
    # a longer wait than the backend accepts fails at once, saying how long
    fake.on("chat/completions", Reply(429, {"error": {"message": "quota"}},
                                      headers={"Retry-After": "3600"}))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="HTTP 429: quota.*retry after 3600s"):
        b.generate(chat("hi"))
    assert time.monotonic() - t0 < 1


def test_api_key_is_sent_and_never_shown(fake: FakeServer, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx and httpcore included
    monkeypatch.delenv(api_key_env("cloud"), raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(FAKE_KEY + "\n")
    b = loaded(fake.url, alias="cloud", api_key_file=str(key_file), max_attempts=2)
    b.generate(chat("hi"))
    assert {s.headers.get("Authorization") for s in fake.seen} == {f"Bearer {FAKE_KEY}"}
    # servers that echo the key back in errors, retried or not
    fake.on("chat/completions",
            Reply(401, {"error": {"message": f"Incorrect API key provided: {FAKE_KEY}"}}))
    with pytest.raises(ModelError) as e401:
        b.generate(chat("hi"))
    fake.on("chat/completions", *[Reply(500, {"error": {"message": f"boom {FAKE_KEY}"}})] * 2)
    with pytest.raises(ModelError) as e500:
        b.generate(chat("hi"), on_token=lambda _: None)
    for e in (e401, e500):
        assert FAKE_KEY not in str(e.value) and FAKE_KEY not in repr(e.value)
        assert "***" in str(e.value)
    assert "HTTP 401" in str(e401.value) and "check the API key" in str(e401.value)
    assert FAKE_KEY not in repr(b.describe()) and FAKE_KEY not in repr(vars(b))
    b.unload()
    assert caplog.records  # the retry was logged
    assert FAKE_KEY not in caplog.text
    assert all(FAKE_KEY not in str(r.args) for r in caplog.records)
    # the environment variable wins over the file
    monkeypatch.setenv(api_key_env("cloud"), "sk-from-env")
    fake.seen.clear()
    b.load()
    assert fake.seen[0].headers.get("Authorization") == "Bearer sk-from-env"


def test_unreadable_key_file_is_a_clear_error(fake: FakeServer, tmp_path: Path) -> None:
    b = backend(fake.url, alias="k", api_key_file=str(tmp_path / "missing"))
    with pytest.raises(ModelError, match=r"models\.k\.api_key_file: cannot read secret file"):
        b.load()


def test_load_without_models_endpoint(fake: FakeServer) -> None:
    fake.on("models", Reply(404, {"detail": "Not Found"}))
    b = loaded(fake.url, model="mine")
    b.generate(chat("hi"))
    assert fake.posts("chat/completions")[0].body["model"] == "mine"


def test_request_body(fake: FakeServer) -> None:
    b = loaded(fake.url)
    b.generate(chat("hi", max_tokens=9, temperature=0.5, top_p=0.9, stop=["\n"], seed=4))
    body = fake.posts("chat/completions")[0].body
    assert body == {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "stop": ["\n"],
                    "seed": 4}
    fake.on("completions", Reply(body={"choices": [{"text": " there", "finish_reason":
                                                    "length"}]}))
    g = b.generate(GenerationRequest(prompt="hello", max_tokens=3, grammar='root ::= "x"'))
    assert g.text == " there" and g.finish_reason == "length"
    assert g.completion_tokens == 3 and g.prompt_tokens == estimate_tokens("hello")
    assert fake.posts("completions")[0].body["grammar"] == 'root ::= "x"'


def sse(*events: Any, done: bool = True) -> str:
    out = ": ping\n\n"
    for e in events:
        out += f"data: {json.dumps(e)}\n\n"
    return out + ("data: [DONE]\n\n" if done else "")


def delta(text: str | None, finish: str | None = None) -> dict[str, Any]:
    d = {} if text is None else {"content": text}
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def test_stream_parsing(fake: FakeServer) -> None:
    fake.on("chat/completions", Reply(content_type="text/event-stream", body=sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        delta("Hel"), delta("lo"), delta(None, "stop"),
        {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}})))
    b = loaded(fake.url)
    pieces: list[str] = []
    g = b.generate(chat("hi"), on_token=pieces.append)
    assert pieces == ["Hel", "lo"] and g.text == "Hello"
    assert (g.prompt_tokens, g.completion_tokens, g.finish_reason) == (11, 2, "stop")
    body = fake.posts("chat/completions")[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_stream_broken_midway_is_not_retried(fake: FakeServer) -> None:
    body = sse(delta("Hel"), done=False) + "data: {not json\n\n"
    fake.on("chat/completions", Reply(content_type="text/event-stream", body=body))
    b = loaded(fake.url)
    pieces: list[str] = []
    with pytest.raises(ModelError, match="stream .* broke after 1 pieces"):
        b.generate(chat("hi"), on_token=pieces.append)
    assert pieces == ["Hel"] and len(fake.posts("chat/completions")) == 1


def test_stream_options_rejected_is_dropped(fake: FakeServer) -> None:
    fake.on("chat/completions",
            Reply(400, {"error": {"message": "Unrecognized request argument supplied: "
                                             "stream_options"}}),
            Reply(content_type="text/event-stream", body=sse(delta("ok", "stop"))))
    b = loaded(fake.url)
    g = b.generate(chat("hi"), on_token=lambda _: None)
    assert g.text == "ok" and g.completion_tokens == 1
    first, second = fake.posts("chat/completions")
    assert "stream_options" in first.body and "stream_options" not in second.body


def test_json_schema_falls_back_to_json_object(fake: FakeServer) -> None:
    # llama_cpp.server's way to reject it: a 500 wrapping a validation error; not retried
    fake.on("chat/completions",
            Reply(500, {"error": {"message": "1 validation error:\n  {'loc': ('body', "
                                             "'response_format', 'type')}"}}),
            Reply(body=ok_chat('{"a": 1}')), Reply(body=ok_chat('{"a": 2}')))
    b = loaded(fake.url, max_attempts=3)
    schema = {"title": "My Thing", "type": "object"}
    assert b.generate(chat("hi", json_schema=schema)).text == '{"a": 1}'
    assert b.generate(chat("hi", json_schema=schema)).text == '{"a": 2}'
    rf = [s.body["response_format"] for s in fake.posts("chat/completions")]
    assert rf == [{"type": "json_schema", "json_schema": {"name": "My_Thing", "schema": schema,
                                                          "strict": True}},
                  {"type": "json_object", "schema": schema},
                  {"type": "json_object", "schema": schema}]  # remembered
    # a plain 400 triggers the fallback too; a server that accepts neither is an error
    b2 = loaded(fake.url)
    fake.on("chat/completions", Reply(400, {"error": {"message": "unsupported json_schema"}}),
            Reply(400, {"error": {"message": "unsupported response_format"}}))
    with pytest.raises(ModelError, match="HTTP 400: unsupported response_format"):
        b2.generate(chat("hi", json_schema=schema))
    assert b2.schema_style == "json_schema"  # only a fallback that worked is remembered


def test_json_schema_ignored_by_the_server_is_an_error(fake: FakeServer) -> None:
    b = loaded(fake.url)
    fake.on("chat/completions", Reply(body=ok_chat("Sure! Here is the JSON")))
    with pytest.raises(ModelError, match="did not apply the JSON schema"):
        b.generate(chat("hi", json_schema={"type": "object"}))


def test_count_tokens_without_tokenizer_estimates(fake: FakeServer) -> None:
    b = loaded(fake.url)
    assert b.count_tokens("x" * 10) == 3
    tried = [s.path for s in fake.seen if s.method == "POST"]
    assert tried == ["/extras/tokenize/count", "/tokenize"]
    assert b.count_tokens("x" * 10) == 3
    assert len([s for s in fake.seen if s.method == "POST"]) == 2  # not asked again


def test_embeddings(fake: FakeServer) -> None:
    fake.on("embeddings", Reply(body={"data": [{"index": 1, "embedding": [0, 1]},
                                               {"index": 0, "embedding": [1, 0]}]}))
    b = loaded(fake.url)
    assert b.embed(["a", "b"]) == [[1.0, 0.0], [0.0, 1.0]]
    assert fake.posts("embeddings")[0].body == {"model": "fake-model", "input": ["a", "b"]}
    assert b.embed([]) == []


def test_not_loaded_and_bad_url() -> None:
    b = backend("http://127.0.0.1:9/v1")
    with pytest.raises(ModelError, match="not loaded"):
        b.generate(chat("hi"))
    with pytest.raises(ModelError, match="must start with http"):
        backend("127.0.0.1:8080/v1").load()
