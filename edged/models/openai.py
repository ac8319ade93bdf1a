"""Any OpenAI-compatible HTTP server: Foundry Local, Ollama, vLLM, llama.cpp's ``llama-server``,
llama-cpp-python's ``python -m llama_cpp.server``, LM Studio, or a cloud API.

Configuration (``[models.<alias>]``, backend ``"openai"``): ``base_url`` up to and including the
API version (``http://127.0.0.1:11434/v1``), ``model`` (omitted: the first id that ``GET
/models`` lists), ``timeout_s`` (connect and per-read timeout of one attempt; a streamed answer
may take longer in total as long as tokens keep coming) and the API key. The key is read, in
this order, from ``$EDGED_MODEL_<ALIAS>_API_KEY``, from the file named by
``$EDGED_MODEL_<ALIAS>_API_KEY_FILE``, or from the file in ``api_key_file`` (``<ALIAS>`` is the
model alias in upper case with every other character than A-Z and 0-9 turned into ``_``:
``[models.cloud-4o]`` reads ``EDGED_MODEL_CLOUD_4O_API_KEY``). With a key every request carries
``Authorization: Bearer <key>``; the key never appears in a log line or an error message.

Behaviour:

* ``load()`` probes ``GET /models``: an unreachable server fails the load with a
  :class:`ModelError`, so does a 401/403 (wrong key); a server without ``/models`` is fine.
* ``generate()`` posts to ``/chat/completions`` (``messages``) or ``/completions`` (``prompt``),
  streaming over server-sent events when an ``on_token`` callback is given.
* ``json_schema`` is sent as the OpenAI structured-output ``response_format`` (``{"type":
  "json_schema", "json_schema": {"name", "schema", "strict": true}}``). When the server rejects
  that (4xx, or llama-cpp-python's 500 "validation error"), the request is repeated once with
  ``{"type": "json_object", "schema": ...}``, the form llama-cpp-python's server and some
  others understand, and that form is then used for the rest of this backend's life. A server
  that accepts neither fails with a ModelError; a JSON-schema request whose answer ends
  normally but does not parse as JSON fails too (the server ignored the constraint: e.g.
  llama-cpp-python's ``/completions`` has no ``response_format``; use ``messages`` there).
* ``grammar`` (GBNF) is passed as the non-standard top-level ``grammar`` field, which the
  llama.cpp servers (``llama-server``, ``llama_cpp.server``) understand; other servers ignore
  or reject it. Beware: llama-cpp-python's server 0.3.x crashes on an invalid grammar.
* Retries: connection errors, timeouts, 429 and 5xx are retried with exponential backoff and
  jitter, honouring ``Retry-After``, up to ``max_attempts`` attempts in all; other 4xx
  are not retried. A stream that breaks after its first token is not retried (the tokens are
  already out). Errors name the HTTP status and the server's own message.
* Token counts come from the response's ``usage``; where the server gives none (streams
  without ``stream_options.include_usage``), completion tokens are counted as stream chunks
  (one token each on llama.cpp) and prompt tokens estimated at 4 characters a token.
* ``count_tokens()`` asks the server when it has a tokenizer endpoint (llama-cpp-python:
  ``/extras/tokenize/count``; llama-server and vLLM: ``/tokenize``, both at the server root),
  else estimates ``ceil(len(text) / 4)``. Which of these works is remembered.
* ``embed()`` posts to ``/embeddings`` (the server must serve an embedding model).
* ``memory_estimate()`` is 0: the weights live elsewhere.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Generator, Iterator
from typing import Any

import httpx

from ..config import ConfigError, ModelConfig, Secret, read_secret
from .base import Backend, Generation, GenerationRequest, ModelError, TokenCallback, Unreachable

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and any other 5xx
_CHARS_PER_TOKEN = 4


def api_key_env(alias: str) -> str:
    """The environment variable that holds the API key of model ``alias``."""
    return "EDGED_MODEL_" + re.sub(r"[^A-Z0-9]", "_", alias.upper()) + "_API_KEY"


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters a token for English and code)."""
    return math.ceil(len(text) / _CHARS_PER_TOKEN) if text else 0


class _Bearer(httpx.Auth):
    """Adds the key per request, so that it is neither in the client's headers nor a repr."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request
                  ) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get()}"
        yield request

    def __repr__(self) -> str:
        return "_Bearer('***')"


class _HTTPError(Exception):
    """A non-2xx answer (internal: turned into ModelError or a fallback)."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return (self.status in _RETRY_STATUS or self.status >= 500) and not self.validation

    @property
    def validation(self) -> bool:
        # llama-cpp-python's server answers 500 to a request body it cannot validate (its
        # error handler wraps FastAPI's RequestValidationError); it is a client error.
        return self.status == 500 and bool(re.match(r"\d+ validation errors?\b", self.message))

    @property
    def rejected_request(self) -> bool:
        return (400 <= self.status < 500
                and self.status not in (401, 403, 404, 408, 429)) or self.validation


class _StreamBroken(Exception):
    """A stream failed after tokens went out: never retried."""


class OpenAIBackend(Backend):
    kind = "openai"

    def __init__(self, alias: str, cfg: ModelConfig, path: str = "", *, max_attempts: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 max_retry_after_s: float = 60.0, key_env: str | None = None,
                 key_file_key: str | None = None) -> None:
        super().__init__(alias, cfg, path)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._client: httpx.Client | None = None
        self._key: Secret | None = None
        self._key_env = key_env or api_key_env(alias)
        self._key_file_key = key_file_key or f"models.{alias}.api_key_file"
        self._tool_calls: list[dict[str, Any]] = []
        self._model: str | None = cfg.model
        # What this server turned out to support (learnt once, kept until unload)
        self.schema_style = "json_schema"  # -> "json_object" after a rejection
        self._tokenize: str | None = None  # "extras" | "native" | "none"
        self._stream_usage = True  # send stream_options.include_usage
        self.base_url = (cfg.base_url or "").rstrip("/")

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    def load(self) -> None:
        if not self.base_url:
            raise ModelError(f"model {self.alias!r}: base_url is required for backend 'openai'")
        if not re.match(r"^https?://", self.base_url):
            raise ModelError(f"model {self.alias!r}: base_url must start with http:// or "
                             f"https://, got {_redact_url(self.base_url)!r}")
        try:
            self._key = read_secret(self._key_file_key, self.cfg.api_key_file, self._key_env)
        except ConfigError as e:
            raise ModelError(f"model {self.alias!r}: {e}") from None
        timeout = float(self.cfg.timeout_s)
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            auth=_Bearer(self._key) if self._key else None,
            headers={"User-Agent": "edged", "Accept": "application/json"},
            follow_redirects=False,
        )
        try:
            data = self._request("GET", "models", None, probe=True)
        except _HTTPError as e:
            if e.status in (401, 403) or (e.status >= 500 and not e.validation):
                self._close()
                raise self._model_error("models", e, 1) from None
            data = None  # no /models here: fine, the first request will tell
        except ModelError:
            self._close()
            raise
        if self._model is None and isinstance(data, dict):
            ids = [m.get("id") for m in data.get("data") or () if isinstance(m, dict)]
            self._model = next((i for i in ids if isinstance(i, str) and i), None)
        self.loaded = True
        log.debug("model %r: %s ready (model %s)", self.alias, _redact_url(self.base_url),
                  self._model or "<server default>")

    def unload(self) -> None:
        self._close()
        self.loaded = False

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._tokenize = None
        self.schema_style = "json_schema"
        self._stream_usage = True
        self._model = self.cfg.model

    def memory_estimate(self) -> int:
        return 0

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "backend": self.kind,
                "base_url": _redact_url(self.base_url), "model": self._model or "",
                "size_bytes": 0, "loaded": self.loaded}

    # ---------------------------------------------------------------------------------------
    # Generation

    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        self._require_loaded()
        chat = req.messages is not None
        body: dict[str, Any] = {"max_tokens": req.max_tokens, "temperature": req.temperature,
                                "top_p": req.top_p}
        if self._model:
            body["model"] = self._model
        if chat:
            body["messages"] = req.messages
        else:
            body["prompt"] = req.prompt
        if req.stop:
            body["stop"] = list(req.stop)
        if req.seed is not None:
            body["seed"] = req.seed
        if req.grammar is not None:
            body["grammar"] = req.grammar  # llama.cpp servers only
        if req.tools:
            if not chat:
                raise ModelError(f"model {self.alias!r}: tools need messages, not a prompt")
            body["tools"] = req.tools
            if req.tool_choice is not None:
                body["tool_choice"] = req.tool_choice
            on_token = None  # tool calls are read from the whole answer
        if on_token is not None:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        path = "chat/completions" if chat else "completions"
        self._tool_calls = []

        t0 = time.perf_counter()
        if req.json_schema is None:
            result = self._complete(path, body, chat, on_token)
        else:
            result = self._complete_with_schema(path, body, chat, on_token, req.json_schema)
        seconds = time.perf_counter() - t0
        text, finish, usage, chunks = result

        if req.json_schema is not None and finish == "stop":
            try:
                json.loads(text)
            except ValueError:
                raise ModelError(
                    f"model {self.alias!r}: the server at {_redact_url(self.base_url)} did not "
                    f"apply the JSON schema (answer is not JSON: {_clip(text, 80)!r})"
                    + ("" if chat else "; many servers constrain only chat requests, "
                                       "use messages instead of prompt")) from None

        prompt_tokens = _int(usage.get("prompt_tokens"))
        completion_tokens = _int(usage.get("completion_tokens"))
        if prompt_tokens is None:
            prompt_tokens = _estimate_prompt(req)
        if completion_tokens is None:
            if finish == "length":
                completion_tokens = req.max_tokens
            else:
                completion_tokens = chunks if on_token is not None else estimate_tokens(text)
        return Generation(text=text, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, finish_reason=finish,
                          seconds=seconds, model=self.alias, tool_calls=self._tool_calls)

    def probe(self, timeout_s: float = 5.0) -> None:
        """One cheap request (``GET /models``, one attempt, a short timeout): returns when
        the server answers at all, raises :class:`Unreachable` when it cannot be reached."""
        client = self._require_loaded()
        try:
            r = client.get("models", timeout=timeout_s)
        except httpx.RequestError as e:
            raise Unreachable(f"model {self.alias!r}: {self._where('models')}: "
                              f"{_transport_reason(e, timeout_s)}") from None
        if r.status_code >= 500:
            raise Unreachable(f"model {self.alias!r}: {self._where('models')} answered HTTP "
                              f"{r.status_code}", status=r.status_code)

    def _complete_with_schema(self, path: str, body: dict[str, Any], chat: bool,
                              on_token: TokenCallback | None, schema: dict[str, Any]
                              ) -> tuple[str, str, dict[str, Any], int]:
        if self.schema_style == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "answer"))[:64]
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": name or "answer", "schema": schema, "strict": True}}
            try:
                return self._complete(path, body, chat, on_token, fallback_ok=True)
            except _HTTPError as e:
                log.info("model %r: the server rejected response_format json_schema (HTTP %d: "
                         "%s); trying json_object with a schema", self.alias, e.status,
                         self._scrub(_clip(e.message, 200)))
            body["response_format"] = {"type": "json_object", "schema": schema}
            result = self._complete(path, body, chat, on_token)
            self.schema_style = "json_object"  # it worked: use it from now on
            return result
        body["response_format"] = {"type": "json_object", "schema": schema}
        return self._complete(path, body, chat, on_token)

    def _complete(self, path: str, body: dict[str, Any], chat: bool,
                  on_token: TokenCallback | None, *, fallback_ok: bool = False
                  ) -> tuple[str, str, dict[str, Any], int]:
        """(text, finish reason, usage, stream chunks). With ``fallback_ok`` a request that the
        server rejected (4xx) raises _HTTPError so that the caller can try another form."""
        while True:
            if on_token is not None and not self._stream_usage:
                body.pop("stream_options", None)
            try:
                if on_token is not None:
                    return self._stream(path, body, chat, on_token)
                data = self._request("POST", path, body)
                choice = self._first_choice(path, data)
                if chat:
                    message = choice.get("message") or {}
                    text = message.get("content") or ""
                    self._tool_calls = _tool_calls(message.get("tool_calls"))
                else:
                    text = choice.get("text") or ""
                return text, _finish(choice.get("finish_reason")), data.get("usage") or {}, 0
            except _HTTPError as e:
                if (e.rejected_request and "stream_options" in e.message
                        and "stream_options" in body):
                    self._stream_usage = False  # a strict server without stream_options
                    continue
                if fallback_ok and e.rejected_request:
                    raise
                raise self._model_error(path, e, 1) from None

    def _first_choice(self, path: str, data: Any) -> dict[str, Any]:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ModelError(f"model {self.alias!r}: {self._where(path)} answered without "
                             f"choices: {self._scrub(_clip(json.dumps(data), 200))}")
        return choices[0]

    # ---------------------------------------------------------------------------------------
    # Tokens and embeddings

    def count_tokens(self, text: str) -> int:
        """Exact count from the server's tokenizer endpoint when it has one (tried once), else
        an estimate of 4 characters a token."""
        self._require_loaded()
        if not text:
            return 0
        root = re.sub(r"/v\d+$", "", self.base_url)
        modes = [self._tokenize] if self._tokenize else ["extras", "native"]
        for mode in modes:
            if mode == "none":
                break
            if mode == "extras":  # llama-cpp-python
                url, body = root + "/extras/tokenize/count", {"input": text}
            else:  # llama-server reads "content", vLLM "prompt" (and "model")
                url, body = root + "/tokenize", {"content": text, "prompt": text}
            try:
                data = self._request("POST", url, {**body, **self._model_field()}, attempts=1,
                                     probe=True)
            except _HTTPError as e:
                if e.retryable:
                    return estimate_tokens(text)  # busy now: ask again next time
                continue  # no such endpoint
            except ModelError:
                return estimate_tokens(text)  # down or slow now: ask again next time
            n = None
            if isinstance(data, dict):
                n = _int(data.get("count"))
                if n is None and isinstance(data.get("tokens"), list):
                    n = len(data["tokens"])
            if n is not None:
                self._tokenize = mode
                return n
        self._tokenize = "none"
        return estimate_tokens(text)

    def embed(self, texts: list[str]) -> list[list[float]]:
        self._require_loaded()
        if not texts:
            return []
        data = self._call("POST", "embeddings", {"input": list(texts), **self._model_field()})
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            raise ModelError(f"model {self.alias!r}: unexpected /embeddings answer "
                             f"({len(items) if isinstance(items, list) else 'no'} vectors "
                             f"for {len(texts)} texts)")
        items = sorted(items, key=lambda d: d.get("index", 0))
        return [list(map(float, d["embedding"])) for d in items]

    # ---------------------------------------------------------------------------------------
    # HTTP with retries

    def _model_field(self) -> dict[str, str]:
        return {"model": self._model} if self._model else {}

    def _require_loaded(self) -> httpx.Client:
        if self._client is None:
            raise ModelError(f"model {self.alias!r} is not loaded")
        return self._client

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """A JSON request with retries; every failure is a ModelError."""
        try:
            return self._request(method, path, body)
        except _HTTPError as e:
            raise self._model_error(path, e, 1) from None

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *,
                 attempts: int | None = None, probe: bool = False) -> Any:
        """A JSON request with retries. Raises ModelError for transport failures and
        exhausted retries, _HTTPError for an error answer that is not worth retrying."""
        client = self._require_loaded()

        def once() -> Any:
            r = client.request(method, path, json=body)
            if r.status_code >= 400:
                raise _error_from(r, r.content)
            try:
                return r.json()
            except ValueError:
                if probe:
                    return None
                raise ModelError(f"model {self.alias!r}: {self._where(path)} answered HTTP "
                                 f"{r.status_code} with something that is not JSON: "
                                 f"{self._scrub(_clip(r.text, 200))!r}") from None

        return self._retrying(once, path, attempts or self.max_attempts)

    def _stream(self, path: str, body: dict[str, Any], chat: bool, on_token: TokenCallback
                ) -> tuple[str, str, dict[str, Any], int]:
        """A streamed completion over server-sent events, with the error contract of
        :meth:`_request`; retried only while no piece has gone out."""
        client = self._require_loaded()
        pieces: list[str] = []
        finish = "stop"
        usage: dict[str, Any] = {}

        def once() -> None:
            nonlocal finish, usage
            with client.stream("POST", path, json=body,
                               headers={"Accept": "text/event-stream"}) as r:
                if r.status_code >= 400:
                    raise _error_from(r, r.read())
                try:
                    if "text/event-stream" not in r.headers.get("content-type", ""):
                        # a server that ignored stream=true and answered in one piece
                        events: Iterator[Any] = iter([json.loads(r.read() or b"null")])
                    else:
                        events = _sse_events(r.iter_lines())
                    for event in events:
                        if not isinstance(event, dict):
                            continue
                        if event.get("error"):
                            raise _StreamBroken(_error_text(event))
                        if isinstance(event.get("usage"), dict):
                            usage = event["usage"]
                        choices = event.get("choices") or []
                        if not choices or not isinstance(choices[0], dict):
                            continue
                        choice = choices[0]
                        if chat:
                            delta = choice.get("delta") or choice.get("message") or {}
                            piece = delta.get("content")
                        else:
                            piece = choice.get("text")
                        if piece:
                            pieces.append(piece)
                            on_token(piece)
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
                except ValueError as e:
                    raise _StreamBroken(f"invalid JSON in the stream: {e}") from None
                except httpx.RequestError as e:
                    if pieces:  # tokens are out: a retry would repeat them
                        raise _StreamBroken(f"{type(e).__name__}: {e}") from None
                    raise

        try:
            self._retrying(once, path, self.max_attempts)
        except _StreamBroken as e:
            raise ModelError(f"model {self.alias!r}: the stream from {self._where(path)} broke "
                             f"after {len(pieces)} pieces: {self._scrub(str(e))}") from None
        return "".join(pieces), finish, usage, len(pieces)

    def _retrying(self, fn: Any, path: str, attempts: int) -> Any:
        """Run ``fn`` with retries; raises ModelError for transport failures and the last
        _HTTPError for HTTP failures (the caller phrases it)."""
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except _HTTPError as e:
                if not e.retryable or attempt == attempts:
                    if attempt > 1 and e.retryable:
                        raise self._model_error(path, e, attempt) from None
                    raise
                delay = self._delay(attempt, e.retry_after)
                if delay is None:
                    raise self._model_error(path, e, attempt) from None
                log.warning("model %r: %s answered HTTP %d (attempt %d/%d), retrying in %.1fs",
                            self.alias, self._where(path), e.status, attempt, attempts, delay)
            except httpx.RequestError as e:
                reason = _transport_reason(e, self.cfg.timeout_s)
                if attempt == attempts:
                    raise Unreachable(
                        f"model {self.alias!r}: {self._where(path)}: {reason}"
                        f"{f' (after {attempts} attempts)' if attempts > 1 else ''}") from None
                delay = self._delay(attempt, None) or 0.0
                log.warning("model %r: %s: %s (attempt %d/%d), retrying in %.1fs", self.alias,
                            self._where(path), reason, attempt, attempts, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next attempt; None when the server asks for a longer wait than
        ``max_retry_after_s`` (better to fail now than to hold the worker)."""
        if retry_after is not None:
            if retry_after > self.max_retry_after_s:
                return None
            return max(0.0, retry_after)
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not crypto

    def _model_error(self, path: str, e: _HTTPError, attempts: int) -> ModelError:
        hint = ""
        if e.status in (401, 403) and self._key is None:
            hint = (f" (no API key configured: set {self._key_env} or "
                    f"{self._key_file_key})")
        elif e.status == 401:
            hint = (f" (check the API key from {self._key_env} or {self._key_file_key})")
        elif e.status == 429 and e.retry_after is not None:
            hint = f" (rate limited; the server asks to retry after {e.retry_after:g}s)"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        cls = Unreachable if e.status >= 500 or e.status == 429 else ModelError
        err = cls(f"model {self.alias!r}: {self._where(path)} answered HTTP {e.status}"
                  f"{tries}: {self._scrub(_clip(e.message, 500))}{hint}")
        if isinstance(err, Unreachable):
            err.status = e.status
        return err

    def _where(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return _redact_url(path)
        return f"{_redact_url(self.base_url)}/{path}"

    def _scrub(self, text: str) -> str:
        """Remove the API key from text that came from the server (some echo it back)."""
        if self._key:
            key = self._key.get()
            if key:
                text = text.replace(key, "***")
        return text


# -------------------------------------------------------------------------------------------
# Helpers


def _sse_events(lines: Iterator[str]) -> Iterator[Any]:
    """Decoded JSON ``data`` of each server-sent event until ``[DONE]``."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    return
                yield json.loads(payload)
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive ping
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
    if data:
        payload = "\n".join(data)
        if payload.strip() != "[DONE]":
            yield json.loads(payload)


def _error_from(r: httpx.Response, content: bytes) -> _HTTPError:
    try:
        message = _error_text(json.loads(content))
    except ValueError:
        message = content.decode("utf-8", "replace").strip() or r.reason_phrase
    return _HTTPError(r.status_code, message or r.reason_phrase,
                      _retry_after(r.headers.get("retry-after")))


def _error_text(data: Any) -> str:
    """The human message of an error body, in the shapes servers use."""
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("msg") or json.dumps(err))
        if isinstance(err, list):  # FastAPI validation detail
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                             for d in err)
        if err is not None:
            return str(err)
    return json.dumps(data)[:500]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_reason(e: httpx.RequestError, timeout_s: float) -> str:
    if isinstance(e, httpx.ConnectTimeout):
        return f"connection timed out after {min(timeout_s, 10.0):g}s"
    if isinstance(e, httpx.TimeoutException):
        return f"timed out after {timeout_s:g}s without an answer"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect (server unreachable: {e})"
    return f"connection failed ({type(e).__name__}: {e})"


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    """OpenAI ``message.tool_calls`` as [{"id", "name", "arguments": str}]."""
    out: list[dict[str, Any]] = []
    for i, call in enumerate(raw if isinstance(raw, list) else []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        args = fn.get("arguments")
        out.append({"id": str(call.get("id") or f"call_{i}"), "name": fn["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args or {})})
    return out


def _finish(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _estimate_prompt(req: GenerationRequest) -> int:
    if req.messages is not None:
        return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in req.messages)
    return estimate_tokens(req.prompt or "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _redact_url(url: str) -> str:
    """A URL without user:password@ (never put credentials in logs)."""
    return re.sub(r"^(https?://)[^/@]*@", r"\1***@", url)
