"""The test cloud itself (tests/cloud_server.py): llama_cpp.server's app on loopback with a
request log of exactly what it received."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from .cloud_server import CloudServer

KEY = "test-cloud-key"


@pytest.fixture(autouse=True)
def _needs_llama_server() -> None:
    for mod in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} missing: pip install 'edged[llama,dev]'")
    from edged.models.bundled import resolve
    try:
        resolve("bundled:smollm2-135m")
    except Exception as e:  # noqa: BLE001 - any reason the model is missing
        pytest.skip(f"bundled SmolLM2 not available: {e}")


def _chat(text: str) -> dict:
    return {"model": "cloud-model", "max_tokens": 4, "temperature": 0.0,
            "messages": [{"role": "user", "content": text}]}


def test_answers_and_logs_the_exact_body_and_restarts_on_the_same_port(tmp_path: Path):
    cloud = CloudServer(tmp_path, chat_format="chatml", n_ctx=1024).start()
    try:
        port = cloud.port
        body = _chat("Say hi. (unicode: café ☕)")
        r = httpx.post(f"{cloud.base_url}/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["object"] == "chat.completion"
        assert isinstance(reply["choices"][0]["message"]["content"], str)
        [logged] = cloud.requests("/chat/completions")
        assert logged["body"] == body and logged["method"] == "POST"
        assert logged["path"] == "/v1/chat/completions" and logged["auth"] is False

        cloud.stop()  # connectivity cut: nothing answers on the port
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{cloud.base_url}/models", timeout=2)
        cloud.start()  # and back, on the same port, with the log kept
        assert cloud.port == port and cloud.base_url == f"http://127.0.0.1:{port}/v1"
        r = httpx.post(f"{cloud.base_url}/chat/completions", json=_chat("Again."), timeout=60)
        assert r.status_code == 200, r.text
        assert [q["body"] for q in cloud.requests("/chat/completions")] == [body, _chat("Again.")]
        assert all(q["path"] == "/v1/models" for q in cloud.requests("/models"))
    finally:
        cloud.kill()


def test_api_key_is_required_and_requests_without_it_are_logged(tmp_path: Path):
    cloud = CloudServer(tmp_path, api_key=KEY, n_ctx=1024).start()
    try:
        body = _chat("hello")
        r = httpx.post(f"{cloud.base_url}/chat/completions", json=body, timeout=30)
        assert r.status_code == 401
        r = httpx.get(f"{cloud.base_url}/models", timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "cloud-model"
        [denied] = cloud.requests("/chat/completions")
        assert denied["body"] == body and denied["auth"] is False
        assert cloud.requests("/models")[-1]["auth"] is True
        assert KEY not in cloud.log_path.read_text()  # the key itself is never logged
    finally:
        cloud.kill()
