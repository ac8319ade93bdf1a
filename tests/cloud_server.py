"""A real OpenAI-compatible "cloud" for tests: llama-cpp-python's server app serving the
bundled SmolLM2-135M, plus a request log.

The app is llama_cpp.server's own (``create_app``); a middleware appends each request, as the
server received it, to a JSON-lines file before the app handles it, so tests can check what
actually left edged (redaction). Run as a script in a subprocess; :class:`CloudServer` starts,
stops (to cut connectivity) and restarts it on the same port.

    python tests/cloud_server.py --port P --log FILE [--api-key KEY] [--chat-format FMT]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _model_path() -> str:
    sys.path.insert(0, str(ROOT))
    from edged.models.bundled import resolve

    return resolve("bundled:smollm2-135m")


def serve(port: int, log: Path, api_key: str | None, chat_format: str | None,
          n_ctx: int) -> None:
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = {"model": _model_path(), "model_alias": "cloud-model", "n_ctx": n_ctx,
             "n_threads": 1, "n_threads_batch": 1, "verbose": False}
    if chat_format:
        model["chat_format"] = chat_format
    app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port,
                                                    api_key=api_key),
                     model_settings=[ModelSettings(**model)])

    class RequestLog:
        """ASGI middleware: record the request (body included) before the app sees it."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            chunks: list[bytes] = []
            more = True
            while more:
                msg = await receive()
                chunks.append(msg.get("body", b""))
                more = msg.get("more_body", False)
            raw = b"".join(chunks)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            names = {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}
            # whether a key was sent, never the key itself
            entry = {"ts": time.time(), "method": scope["method"], "path": scope["path"],
                     "auth": "authorization" in names, "body": body}
            with open(log, "a", encoding="utf-8") as f:  # noqa: ASYNC230 - tiny append
                f.write(json.dumps(entry) + "\n")
            sent = False

            async def replay() -> Any:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                return await receive()

            await self.inner(scope, replay, send)

    uvicorn.run(RequestLog(app), host="127.0.0.1", port=port, log_level="warning")


class CloudServer:
    """The test cloud as a subprocess on a fixed loopback port."""

    def __init__(self, workdir: Path, *, port: int | None = None, api_key: str | None = None,
                 chat_format: str | None = None, n_ctx: int = 2048) -> None:
        from .harness import free_port

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.api_key = api_key
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.log_path = self.workdir / "requests.jsonl"
        self.out_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 90) -> CloudServer:
        import httpx

        if self.proc is not None and self.proc.poll() is None:
            return self  # already running

        cmd = [sys.executable, str(Path(__file__)), "--port", str(self.port), "--log",
               str(self.log_path), "--n-ctx", str(self.n_ctx)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.chat_format:
            cmd += ["--chat-format", self.chat_format]
        out = open(self.out_path, "ab")  # noqa: SIM115 - kept for the process's life
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=str(ROOT),
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        out.close()
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while True:  # a condition wait: the server answers, or it died, or time is up
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloud server exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            try:
                r = httpx.get(f"{self.base_url}/models", headers=headers, timeout=1.0)
                if r.status_code < 500:
                    return self  # (this readiness probe is in the request log too)
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"cloud server not ready in {timeout:g} s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """The logged requests, oldest first; only those whose path ends with ``path``."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        # a line still being written (no newline yet) is not a request yet
        rows = [json.loads(ln) for ln in text.split("\n")[:-1] if ln]
        return [r for r in rows if path is None or r["path"].endswith(path)]

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.out_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--chat-format", default=None)
    ap.add_argument("--n-ctx", type=int, default=2048)
    a = ap.parse_args()
    serve(a.port, a.log, a.api_key, a.chat_format, a.n_ctx)


if __name__ == "__main__":
    main()
