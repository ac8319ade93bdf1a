"""The HTTP side of the OpenAI-compatible backend (:mod:`edged.models.openai`).

One ``httpx`` client per load; JSON requests and server-sent-event streams with retries
(exponential backoff with jitter, ``Retry-After`` honoured); every failure phrased for the
operator, naming the URL without credentials and never the API key. Kept apart from the
backend, which builds the requests and reads the answers, so that the retry and error
contract lives in one place.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import httpx

from ..config import Secret
from .base import ModelError, TokenCallback, Unreachable

log = logging.getLogger("edged.models.openai")

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and any other 5xx


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


class StatusError(Exception):
    """A non-2xx answer (internal to the backend: turned into ModelError or a fallback)."""

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


class OpenAIHTTP:
    """The transport of one backend: requests, streams, retries and error phrasing."""

    def __init__(self, alias: str, base_url: str, timeout_s: float, *, key_env: str,
                 key_file_key: str, max_attempts: int, backoff_s: float,
                 max_backoff_s: float, max_retry_after_s: float) -> None:
        self.alias = alias
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.key: Secret | None = None
        self._key_env = key_env  # named in the hint of a 401/403, never the key itself
        self._key_file_key = key_file_key
        self._client: httpx.Client | None = None

    def open(self, key: Secret | None) -> None:
        """A new client for ``base_url``, carrying ``key`` (if any) on every request."""
        self.key = key
        timeout = float(self.timeout_s)
        self._client = httpx.Client(
            base_url=self.base_url + "/",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            auth=_Bearer(key) if key else None,
            headers={"User-Agent": "edged", "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def require(self) -> httpx.Client:
        """The client; a ModelError when the backend is not loaded."""
        if self._client is None:
            raise ModelError(f"model {self.alias!r} is not loaded")
        return self._client

    def probe(self, timeout_s: float) -> None:
        """``GET /models`` once with a short timeout: returns when the server answers at
        all, raises :class:`Unreachable` when it cannot be reached."""
        client = self.require()
        try:
            r = client.get("models", timeout=timeout_s)
        except httpx.RequestError as e:
            raise Unreachable(f"model {self.alias!r}: {self.where('models')}: "
                              f"{_transport_reason(e, timeout_s)}") from None
        if r.status_code >= 500:
            raise Unreachable(f"model {self.alias!r}: {self.where('models')} answered HTTP "
                              f"{r.status_code}", status=r.status_code)

    def call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """A JSON request with retries; every failure is a ModelError."""
        try:
            return self.request(method, path, body)
        except StatusError as e:
            raise self.model_error(path, e, 1) from None

    def request(self, method: str, path: str, body: dict[str, Any] | None, *,
                attempts: int | None = None, probe: bool = False) -> Any:
        """A JSON request with retries. Raises ModelError for transport failures and
        exhausted retries, StatusError for an error answer that is not worth retrying."""
        client = self.require()

        def once() -> Any:
            r = client.request(method, path, json=body)
            if r.status_code >= 400:
                raise _error_from(r, r.content)
            try:
                return r.json()
            except ValueError:
                if probe:
                    return None
                raise ModelError(f"model {self.alias!r}: {self.where(path)} answered HTTP "
                                 f"{r.status_code} with something that is not JSON: "
                                 f"{self.scrub(clip(r.text, 200))!r}") from None

        return self._retrying(once, path, attempts or self.max_attempts)

    def stream(self, path: str, body: dict[str, Any], chat: bool, on_token: TokenCallback
               ) -> tuple[str, str, dict[str, Any], int]:
        """A streamed completion over server-sent events, with the error contract of
        :meth:`request`; retried only while no piece has gone out."""
        client = self.require()
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
                            finish = finish_reason(choice["finish_reason"])
                except ValueError as e:
                    raise _StreamBroken(f"invalid JSON in the stream: {e}") from None
                except httpx.RequestError as e:
                    if pieces:  # tokens are out: a retry would repeat them
                        raise _StreamBroken(f"{type(e).__name__}: {e}") from None
                    raise

        try:
            self._retrying(once, path, self.max_attempts)
        except _StreamBroken as e:
            raise ModelError(f"model {self.alias!r}: the stream from {self.where(path)} broke "
                             f"after {len(pieces)} pieces: {self.scrub(str(e))}") from None
        return "".join(pieces), finish, usage, len(pieces)

    def _retrying(self, fn: Callable[[], Any], path: str, attempts: int) -> Any:
        """Run ``fn`` with retries; raises ModelError for transport failures and the last
        StatusError for HTTP failures (the caller phrases it)."""
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except StatusError as e:
                if not e.retryable or attempt == attempts:
                    if attempt > 1 and e.retryable:
                        raise self.model_error(path, e, attempt) from None
                    raise
                delay = self._delay(attempt, e.retry_after)
                if delay is None:
                    raise self.model_error(path, e, attempt) from None
                log.warning("model %r: %s answered HTTP %d (attempt %d/%d), retrying in %.1fs",
                            self.alias, self.where(path), e.status, attempt, attempts, delay)
            except httpx.RequestError as e:
                reason = _transport_reason(e, self.timeout_s)
                if attempt == attempts:
                    raise Unreachable(
                        f"model {self.alias!r}: {self.where(path)}: {reason}"
                        f"{f' (after {attempts} attempts)' if attempts > 1 else ''}") from None
                delay = self._delay(attempt, None) or 0.0
                log.warning("model %r: %s: %s (attempt %d/%d), retrying in %.1fs", self.alias,
                            self.where(path), reason, attempt, attempts, delay)
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

    def model_error(self, path: str, e: StatusError, attempts: int) -> ModelError:
        """``e`` as the ModelError (or Unreachable, for 5xx and 429) the backend raises."""
        hint = ""
        if e.status in (401, 403) and self.key is None:
            hint = (f" (no API key configured: set {self._key_env} or "
                    f"{self._key_file_key})")
        elif e.status == 401:
            hint = (f" (check the API key from {self._key_env} or {self._key_file_key})")
        elif e.status == 429 and e.retry_after is not None:
            hint = f" (rate limited; the server asks to retry after {e.retry_after:g}s)"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        cls = Unreachable if e.status >= 500 or e.status == 429 else ModelError
        err = cls(f"model {self.alias!r}: {self.where(path)} answered HTTP {e.status}"
                  f"{tries}: {self.scrub(clip(e.message, 500))}{hint}")
        if isinstance(err, Unreachable):
            err.status = e.status
        return err

    def where(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return redact_url(path)
        return f"{redact_url(self.base_url)}/{path}"

    def scrub(self, text: str) -> str:
        """Remove the API key from text that came from the server (some echo it back)."""
        if self.key:
            key = self.key.get()
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


def _error_from(r: httpx.Response, content: bytes) -> StatusError:
    try:
        message = _error_text(json.loads(content))
    except ValueError:
        message = content.decode("utf-8", "replace").strip() or r.reason_phrase
    return StatusError(r.status_code, message or r.reason_phrase,
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


def finish_reason(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def redact_url(url: str) -> str:
    """A URL without user:password@ (never put credentials in logs)."""
    return re.sub(r"^(https?://)[^/@]*@", r"\1***@", url)
