"""GGUF models through llama-cpp-python.

The chat template comes from the GGUF metadata (llama-cpp-python reads it); JSON schemas are
turned into a GBNF grammar by llama.cpp's own converter. ``llama_cpp`` is imported in
``load()`` only.

Prompt cache: reading the prompt is most of a small model's time on a gateway CPU (SmolLM2-135M
on one core: ~100 prompt tokens take ~0.6 s, the ~8 answer tokens ~0.15 s). The agents'
prompts share long prefixes (a tool's examples, then the request), so the model's state after
each prompt is kept in a bounded RAM cache (``prompt_cache_mb``, llama-cpp-python's
``LlamaRAMCache``: least recently used out); a new prompt resumes from the state with the
longest common prefix and reads only the rest. RAM only: writing states to an SD card after
every generation would wear it, and they are cheap to rebuild.

llama-cpp-python's own ``LlamaRAMCache`` counts only the KV part of a state (~1.4 MB after a
100-token prompt for this model) but each state also holds the logits of every prompt token
(n_tokens x vocabulary floats: ~19 MB for the same prompt), so "32 MB" held ~450 MB (found by
the soak benchmark). :func:`_prompt_cache` keeps only the last row of logits (the next
prompt always evaluates at least its last token, so earlier rows are never read) and counts
every byte it holds against the capacity.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..extras import require
from .base import Backend, Generation, GenerationRequest, ModelError, TokenCallback


class LlamaCppBackend(Backend):
    kind = "llama_cpp"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._llm: Any = None
        self._embedder: Any = None
        self._grammars: dict[str, Any] = {}  # schema/grammar text -> compiled grammar

    def _check_path(self) -> None:
        if not self.path or not os.path.isfile(self.path):
            raise ModelError(f"model {self.alias!r}: GGUF file not found: {self.path or '<empty>'}")

    def load(self) -> None:
        self._check_path()
        llama_cpp = require("llama_cpp")
        try:
            self._llm = llama_cpp.Llama(
                model_path=self.path, n_ctx=self.cfg.context, n_threads=self.cfg.threads,
                n_threads_batch=self.cfg.threads, verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"model {self.alias!r}: cannot load {self.path}: {e}") from None
        if self.cfg.prompt_cache_mb > 0:
            self._llm.set_cache(_prompt_cache(llama_cpp, self.cfg.prompt_cache_mb << 20))
        self.loaded = True

    def memory_estimate(self) -> int:
        return super().memory_estimate() + (self.cfg.prompt_cache_mb << 20)

    def unload(self) -> None:
        for attr in ("_llm", "_embedder"):
            obj = getattr(self, attr)
            if obj is not None:
                close = getattr(obj, "close", None)
                if callable(close):
                    close()
            setattr(self, attr, None)
        self._grammars.clear()
        self.loaded = False

    def _grammar(self, req: GenerationRequest) -> Any:
        if req.json_schema is None and req.grammar is None:
            return None
        key = req.grammar if req.grammar is not None else json.dumps(req.json_schema,
                                                                      sort_keys=True)
        g = self._grammars.get(key)
        if g is None:
            llama_cpp = require("llama_cpp")
            try:
                if req.grammar is not None:
                    g = llama_cpp.LlamaGrammar.from_string(req.grammar, verbose=False)
                else:
                    g = llama_cpp.LlamaGrammar.from_json_schema(key, verbose=False)
            except (ValueError, RuntimeError) as e:
                raise ModelError(f"invalid grammar or schema for {self.alias!r}: {e}") from None
            if len(self._grammars) > 64:
                self._grammars.clear()
            self._grammars[key] = g
        return g

    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        if self._llm is None:
            raise ModelError(f"model {self.alias!r} is not loaded")
        llm = self._llm
        kw: dict[str, Any] = dict(
            max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
            stop=req.stop or None, grammar=self._grammar(req),
        )
        if req.seed is not None:
            kw["seed"] = req.seed
        t0 = time.perf_counter()
        if req.messages is not None:
            stream = llm.create_chat_completion(messages=req.messages, stream=True, **kw)
            pieces, completion, finish = _drain(stream, on_token, chat=True)
        else:
            stream = llm.create_completion(prompt=req.prompt, stream=True, **kw)
            pieces, completion, finish = _drain(stream, on_token, chat=False)
        seconds = time.perf_counter() - t0
        text = "".join(pieces)
        # Stream chunks merge tokens that only decode together (emoji, CJK): count exactly
        # where we can (a length stop means max_tokens), else re-tokenize the text.
        if finish == "length":
            completion = req.max_tokens
        elif text:
            completion = max(completion, len(llm.tokenize(text.encode(), add_bos=False,
                                                          special=True)))
        prompt = max(0, int(llm.n_tokens) - completion)
        if finish == "length" and (req.json_schema is not None or req.grammar is not None):
            # Never hand out half a JSON object: a constrained answer is whole or an error.
            raise ModelError(f"model {self.alias!r}: constrained output was cut at max_tokens="
                             f"{req.max_tokens}; raise max_tokens or bound the schema "
                             "(maxLength, enum)")
        return Generation(text=text, prompt_tokens=prompt, completion_tokens=completion,
                          finish_reason=finish, seconds=seconds, model=self.alias)

    def count_tokens(self, text: str) -> int:
        if self._llm is None:
            raise ModelError(f"model {self.alias!r} is not loaded")
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Mean-pooled embeddings from a second, embedding-mode context of the same file."""
        if not texts:
            return []
        if self._embedder is None:
            self._check_path()
            llama_cpp = require("llama_cpp")
            self._embedder = llama_cpp.Llama(
                model_path=self.path, n_ctx=min(self.cfg.context, 512), embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_threads=self.cfg.threads,
                verbose=False,
            )
        out = self._embedder.embed(texts, normalize=True)
        return [list(map(float, v)) for v in out]

    def set_threads(self, n: int) -> None:
        if self._llm is None:
            return
        try:
            llama_cpp = require("llama_cpp")
            llama_cpp.llama_set_n_threads(self._llm.ctx, n, n)
        except (AttributeError, TypeError, ModelError):
            pass  # older bindings: keeps its thread count until reloaded


def _drain(stream: Any, on_token: TokenCallback | None, *, chat: bool
           ) -> tuple[list[str], int, str]:
    """Collect a stream: (text pieces, tokens generated, finish reason)."""
    pieces: list[str] = []
    tokens = 0
    finish = "stop"
    for chunk in stream:
        choice = chunk["choices"][0]
        if chat and "role" in (choice.get("delta") or {}) and not choice["delta"].get("content"):
            continue  # the opening chunk of a chat stream carries the role, not a token
        if not choice.get("finish_reason") or choice.get("text") or choice.get("delta"):
            tokens += 1
        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        if piece:
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        if choice.get("finish_reason"):
            finish = "length" if choice["finish_reason"] == "length" else "stop"
    return pieces, tokens, finish


def _prompt_cache(llama_cpp: Any, capacity_bytes: int) -> Any:
    """A ``LlamaRAMCache`` whose capacity bounds the memory it really holds."""

    class PromptCache(llama_cpp.LlamaRAMCache):
        @property
        def cache_size(self) -> int:
            return sum(_state_bytes(s) for s in self.cache_state.values())

        def __setitem__(self, key: Any, value: Any) -> None:
            if value.scores is not None and len(value.scores) > 1:
                value.scores = value.scores[-1:].copy()
            if _state_bytes(value) > self.capacity_bytes:
                return  # a state larger than the whole cache is not kept
            super().__setitem__(key, value)

    return PromptCache(capacity_bytes=capacity_bytes)


def _state_bytes(state: Any) -> int:
    return int(state.llama_state_size) + int(getattr(state.scores, "nbytes", 0)) + \
        int(getattr(state.input_ids, "nbytes", 0))
