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

import json
import logging
import math
import re
import time
from typing import Any

from ..config import ConfigError, ModelConfig, read_secret
from .base import Backend, Generation, GenerationRequest, ModelError, TokenCallback
from .openai_http import OpenAIHTTP, StatusError, clip, finish_reason, redact_url

log = logging.getLogger(__name__)

_CHARS_PER_TOKEN = 4


def api_key_env(alias: str) -> str:
    """The environment variable that holds the API key of model ``alias``."""
    return "EDGED_MODEL_" + re.sub(r"[^A-Z0-9]", "_", alias.upper()) + "_API_KEY"


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters a token for English and code)."""
    return math.ceil(len(text) / _CHARS_PER_TOKEN) if text else 0


class OpenAIBackend(Backend):
    """Builds the requests and reads the answers; HTTP, retries and error phrasing are
    :class:`~edged.models.openai_http.OpenAIHTTP`'s (``self.http``)."""

    kind = "openai"

    def __init__(self, alias: str, cfg: ModelConfig, path: str = "", *, max_attempts: int = 3,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 max_retry_after_s: float = 60.0, key_env: str | None = None,
                 key_file_key: str | None = None) -> None:
        super().__init__(alias, cfg, path)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._key_env = key_env or api_key_env(alias)
        self._key_file_key = key_file_key or f"models.{alias}.api_key_file"
        self._tool_calls: list[dict[str, Any]] = []
        self._model: str | None = cfg.model
        # What this server turned out to support (learnt once, kept until unload)
        self.schema_style = "json_schema"  # -> "json_object" after a rejection
        self._tokenize: str | None = None  # "extras" | "native" | "none"
        self._stream_usage = True  # send stream_options.include_usage
        self.base_url = (cfg.base_url or "").rstrip("/")
        self.http = OpenAIHTTP(alias, self.base_url, cfg.timeout_s, key_env=self._key_env,
                               key_file_key=self._key_file_key, max_attempts=max_attempts,
                               backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                               max_retry_after_s=max_retry_after_s)

    # the retry policy lives with the transport
    @property
    def max_attempts(self) -> int:
        return self.http.max_attempts

    @property
    def backoff_s(self) -> float:
        return self.http.backoff_s

    @property
    def max_backoff_s(self) -> float:
        return self.http.max_backoff_s

    @property
    def max_retry_after_s(self) -> float:
        return self.http.max_retry_after_s

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    def load(self) -> None:
        if not self.base_url:
            raise ModelError(f"model {self.alias!r}: base_url is required for backend 'openai'")
        if not re.match(r"^https?://", self.base_url):
            raise ModelError(f"model {self.alias!r}: base_url must start with http:// or "
                             f"https://, got {redact_url(self.base_url)!r}")
        try:
            key = read_secret(self._key_file_key, self.cfg.api_key_file, self._key_env)
        except ConfigError as e:
            raise ModelError(f"model {self.alias!r}: {e}") from None
        self.http.open(key)
        try:
            data = self.http.request("GET", "models", None, probe=True)
        except StatusError as e:
            if e.status in (401, 403) or (e.status >= 500 and not e.validation):
                self._close()
                raise self.http.model_error("models", e, 1) from None
            data = None  # no /models here: fine, the first request will tell
        except ModelError:
            self._close()
            raise
        if self._model is None and isinstance(data, dict):
            ids = [m.get("id") for m in data.get("data") or () if isinstance(m, dict)]
            self._model = next((i for i in ids if isinstance(i, str) and i), None)
        self.loaded = True
        log.debug("model %r: %s ready (model %s)", self.alias, redact_url(self.base_url),
                  self._model or "<server default>")

    def unload(self) -> None:
        self._close()
        self.loaded = False

    def _close(self) -> None:
        self.http.close()
        self._tokenize = None
        self.schema_style = "json_schema"
        self._stream_usage = True
        self._model = self.cfg.model

    def memory_estimate(self) -> int:
        return 0

    def describe(self) -> dict[str, Any]:
        return {"alias": self.alias, "backend": self.kind,
                "base_url": redact_url(self.base_url), "model": self._model or "",
                "size_bytes": 0, "loaded": self.loaded}

    # ---------------------------------------------------------------------------------------
    # Generation

    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        self.http.require()
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
                    f"model {self.alias!r}: the server at {redact_url(self.base_url)} did not "
                    f"apply the JSON schema (answer is not JSON: {clip(text, 80)!r})"
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
        self.http.probe(timeout_s)

    def _complete_with_schema(self, path: str, body: dict[str, Any], chat: bool,
                              on_token: TokenCallback | None, schema: dict[str, Any]
                              ) -> tuple[str, str, dict[str, Any], int]:
        if self.schema_style == "json_schema":
            name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "answer"))[:64]
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": name or "answer", "schema": schema, "strict": True}}
            try:
                return self._complete(path, body, chat, on_token, fallback_ok=True)
            except StatusError as e:
                log.info("model %r: the server rejected response_format json_schema (HTTP %d: "
                         "%s); trying json_object with a schema", self.alias, e.status,
                         self.http.scrub(clip(e.message, 200)))
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
        server rejected (4xx) raises StatusError so that the caller can try another form."""
        while True:
            if on_token is not None and not self._stream_usage:
                body.pop("stream_options", None)
            try:
                if on_token is not None:
                    return self.http.stream(path, body, chat, on_token)
                data = self.http.request("POST", path, body)
                choice = self._first_choice(path, data)
                if chat:
                    message = choice.get("message") or {}
                    text = message.get("content") or ""
                    self._tool_calls = _tool_calls(message.get("tool_calls"))
                else:
                    text = choice.get("text") or ""
                finish = finish_reason(choice.get("finish_reason"))
                return text, finish, data.get("usage") or {}, 0
            except StatusError as e:
                if (e.rejected_request and "stream_options" in e.message
                        and "stream_options" in body):
                    self._stream_usage = False  # a strict server without stream_options
                    continue
                if fallback_ok and e.rejected_request:
                    raise
                raise self.http.model_error(path, e, 1) from None

    def _first_choice(self, path: str, data: Any) -> dict[str, Any]:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise ModelError(f"model {self.alias!r}: {self.http.where(path)} answered without "
                             f"choices: {self.http.scrub(clip(json.dumps(data), 200))}")
        return choices[0]

    # ---------------------------------------------------------------------------------------
    # Tokens and embeddings

    def count_tokens(self, text: str) -> int:
        """Exact count from the server's tokenizer endpoint when it has one (tried once), else
        an estimate of 4 characters a token."""
        self.http.require()
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
                data = self.http.request("POST", url, {**body, **self._model_field()},
                                         attempts=1, probe=True)
            except StatusError as e:
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
        self.http.require()
        if not texts:
            return []
        data = self.http.call("POST", "embeddings",
                              {"input": list(texts), **self._model_field()})
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            raise ModelError(f"model {self.alias!r}: unexpected /embeddings answer "
                             f"({len(items) if isinstance(items, list) else 'no'} vectors "
                             f"for {len(texts)} texts)")
        items = sorted(items, key=lambda d: d.get("index", 0))
        return [list(map(float, d["embedding"])) for d in items]

    def _model_field(self) -> dict[str, str]:
        return {"model": self._model} if self._model else {}


# -------------------------------------------------------------------------------------------
# Helpers


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


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _estimate_prompt(req: GenerationRequest) -> int:
    if req.messages is not None:
        return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in req.messages)
    return estimate_tokens(req.prompt or "")
