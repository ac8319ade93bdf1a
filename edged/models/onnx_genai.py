"""ONNX models through ONNX Runtime GenAI (a folder made by ``onnxruntime_genai.models.builder``).

The folder holds ``genai_config.json``, the ONNX graph(s) and the Hugging Face tokenizer files;
the chat template comes from ``tokenizer_config.json`` (or ``chat_template.jinja``).
Constrained decoding uses the runtime's llguidance integration: a JSON schema, or a Lark
grammar (``GenerationRequest.grammar``). llguidance reads ``tokenizer.json`` from the model
folder, so a model without it (SentencePiece-only) cannot be constrained.

``onnxruntime_genai`` is imported in ``load()`` only.

Notes on onnxruntime-genai 0.18:
- intra-op threads are a session option: they are set through ``Config.overlay`` at load and
  cannot change on a live session, so ``set_threads`` takes effect at the next load;
- ``random_seed`` must fit in an int32 (-1 means "random"), so seeds are folded into 31 bits;
- guidance fast-forward tokens (``set_guidance(..., enable_ff_tokens=True)``) are not returned
  by ``get_next_tokens`` one by one and garble a token-by-token stream: left off;
- the KV cache is allocated for ``max_length`` when the generator is created, so
  ``max_length`` is the prompt plus ``max_tokens``, not the whole context.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..extras import require
from .base import (
    Backend,
    Generation,
    GenerationRequest,
    ModelError,
    TokenCallback,
    file_size,
    kv_cache_estimate,
)

_CONFIG = "genai_config.json"


class OnnxGenAIBackend(Backend):
    kind = "onnx_genai"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._og: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._generator: Any = None
        self._threads = self.cfg.threads
        self._max_length = self.cfg.context
        self._eos: frozenset[int] = frozenset()
        self._bos = -1
        self._adds_bos = False

    # -- loading -------------------------------------------------------------------------

    def _genai_config(self) -> dict[str, Any]:
        """The folder's genai_config.json; ModelError when it is not an ONNX GenAI folder."""
        if not self.path or not os.path.isdir(self.path):
            what = "is a file, not a folder" if self.path and os.path.isfile(self.path) \
                else "not found"
            raise ModelError(f"model {self.alias!r}: ONNX GenAI model folder {what}: "
                             f"{self.path or '<empty>'}")
        cfg_path = os.path.join(self.path, _CONFIG)
        if not os.path.isfile(cfg_path):
            raise ModelError(
                f"model {self.alias!r}: {self.path} is not an ONNX Runtime GenAI model folder "
                f"(no {_CONFIG}); build one with python -m onnxruntime_genai.models.builder")
        try:
            with open(cfg_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ModelError(f"model {self.alias!r}: cannot read {cfg_path}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ModelError(f"model {self.alias!r}: {cfg_path} has no \"model\" section")
        return data

    def load(self) -> None:
        if self._model is not None:
            return
        genai_cfg = self._genai_config()
        og = require("onnxruntime_genai")
        try:
            config = og.Config(self.path)
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": self._threads, "inter_op_num_threads": 1}}}}))
            model = og.Model(config)
            tokenizer = og.Tokenizer(model)
        except RuntimeError as e:
            raise ModelError(f"model {self.alias!r}: cannot load {self.path}: {e}") from None
        context = genai_cfg["model"].get("context_length")
        self._max_length = min(self.cfg.context, context) if isinstance(context, int) \
            and context > 0 else self.cfg.context
        self._eos = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._bos = int(tokenizer.bos_token_id)
        probe = tokenizer.encode("a")
        self._adds_bos = self._bos >= 0 and len(probe) > 1 and int(probe[0]) == self._bos
        self._og, self._model, self._tokenizer = og, model, tokenizer
        self.loaded = True

    def unload(self) -> None:
        # No close() in the bindings: dropping the last reference frees the session.
        self._generator = None
        self._tokenizer = None
        self._model = None
        self._og = None
        self.loaded = False

    def _loaded(self) -> tuple[Any, Any, Any]:
        if self._model is None:
            raise ModelError(f"model {self.alias!r} is not loaded")
        return self._og, self._model, self._tokenizer

    # -- generation ----------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text)]

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        tok = self._tokenizer
        if req.messages is not None:
            try:
                text = tok.apply_chat_template(json.dumps(req.messages),
                                               add_generation_prompt=True)
            except RuntimeError as e:
                raise ModelError(f"model {self.alias!r}: cannot apply the chat template "
                                 f"({e}); send a plain prompt instead") from None
        else:
            text = req.prompt or ""
        ids = self._encode(text)
        # A template that writes the BOS text, encoded by a tokenizer that adds BOS: one BOS.
        if self._bos >= 0 and len(ids) >= 2 and ids[0] == ids[1] == self._bos:
            ids = ids[1:]
        if not ids:
            if self._bos < 0:
                raise ModelError(f"model {self.alias!r}: the prompt is empty")
            ids = [self._bos]
        return ids

    def _guidance(self, params: Any, req: GenerationRequest) -> str | None:
        if req.json_schema is None and req.grammar is None:
            return None
        if not os.path.isfile(os.path.join(self.path, "tokenizer.json")):
            raise ModelError(f"model {self.alias!r}: constrained decoding (json_schema/grammar) "
                             f"needs tokenizer.json in {self.path}, which this model lacks")
        if req.grammar is not None:
            kind, data = "lark_grammar", req.grammar
        else:
            schema = dict(req.json_schema or {})
            # llguidance allows any whitespace between JSON tokens by default; a small model
            # then wastes its token budget on blanks. Compact JSON unless the caller says so.
            schema.setdefault("x-guidance", {"whitespace_flexible": False})
            kind, data = "json_schema", json.dumps(schema)
        try:
            params.set_guidance(kind, data)
        except RuntimeError as e:
            raise ModelError(f"model {self.alias!r}: cannot use this {kind}: {e}") from None
        return kind

    def generate(self, req: GenerationRequest, on_token: TokenCallback | None = None
                 ) -> Generation:
        og, model, tok = self._loaded()
        t0 = time.perf_counter()
        ids = self._prompt_ids(req)
        n_prompt = len(ids)
        if n_prompt >= self._max_length:
            raise ModelError(f"model {self.alias!r}: the prompt has {n_prompt} tokens, the "
                             f"context is {self._max_length}")
        max_new = min(req.max_tokens, self._max_length - n_prompt)
        if max_new <= 0:
            return Generation(text="", prompt_tokens=n_prompt, completion_tokens=0,
                              finish_reason="length", seconds=0.0, model=self.alias)
        opts: dict[str, Any] = {"max_length": n_prompt + max_new, "batch_size": 1}
        if req.temperature <= 0:
            opts["do_sample"] = False
        else:
            opts.update(do_sample=True, temperature=float(req.temperature),
                        top_p=float(req.top_p))
        if req.seed is not None:
            opts["random_seed"] = int(req.seed) & 0x7FFFFFFF  # the runtime takes an int32
        params = og.GeneratorParams(model)
        params.set_search_options(**opts)
        guided = self._guidance(params, req)
        try:
            gen = og.Generator(model, params)
        except RuntimeError as e:
            what = f"cannot use this {guided}" if guided else "cannot start generating"
            raise ModelError(f"model {self.alias!r}: {what}: {e}") from None
        self._generator = gen
        out = _StopFilter(req.stop, on_token)
        stream = tok.create_stream()
        tokens: list[int] = []
        finish = "length"
        try:
            gen.append_tokens(ids)
            while not gen.is_done():
                gen.generate_next_token()
                t = int(gen.get_next_tokens()[0])
                if t in self._eos:
                    finish = "stop"
                    break
                tokens.append(t)
                if out.feed(stream.decode(t)):
                    finish = "stop"
                    break
            else:
                if len(tokens) < max_new:
                    finish = "stop"  # the runtime ended it (an EOS it does not report)
            if not out.stopped and tokens:
                # Text the stream still holds comes out here; not a cut multi-byte
                # character, which would decode to U+FFFD.
                full = tok.decode(tokens)
                if full.startswith(out.raw) and out.feed(full[len(out.raw):].rstrip("\ufffd")):
                    finish = "stop"
            out.close()
        except RuntimeError as e:
            raise ModelError(f"model {self.alias!r}: generation failed: {e}") from None
        finally:
            self._generator = None
            del gen
        seconds = time.perf_counter() - t0
        if finish == "length" and guided is not None:
            # Never hand out half a JSON object: a constrained answer is whole or an error.
            raise ModelError(f"model {self.alias!r}: constrained output was cut at max_tokens="
                             f"{req.max_tokens}; raise max_tokens or bound the schema "
                             "(maxLength, enum, maximum)")
        return Generation(text=out.text, prompt_tokens=n_prompt, completion_tokens=len(tokens),
                          finish_reason=finish, seconds=seconds, model=self.alias)

    def count_tokens(self, text: str) -> int:
        self._loaded()
        ids = self._encode(text)
        if self._adds_bos and ids and ids[0] == self._bos:
            ids = ids[1:]
        return len(ids)

    # -- resources -----------------------------------------------------------------------

    def memory_estimate(self) -> int:
        """Folder size + KV cache for the context, exact from genai_config when readable
        (2 x layers x KV heads x head size x 4 bytes a token: fp32, the CPU worst case)."""
        try:
            model = self._genai_config()["model"]
            dec = model["decoder"]
            per_token = 2 * int(dec["num_hidden_layers"]) * int(dec["num_key_value_heads"]) \
                * int(dec["head_size"]) * 4
            context = min(self.cfg.context, int(model.get("context_length") or self.cfg.context))
            return file_size(self.path) + kv_cache_estimate(context, per_token)
        except (ModelError, KeyError, TypeError, ValueError):
            return file_size(self.path) + kv_cache_estimate(self.cfg.context)

    def set_threads(self, n: int) -> None:
        """ONNX Runtime cannot change intra-op threads on a live session: used at next load."""
        self._threads = max(1, int(n))


class _StopFilter:
    """Streams text to ``on_token`` but holds back what could be the start of a stop string;
    truncates at the first stop string."""

    def __init__(self, stop: list[str], on_token: TokenCallback | None) -> None:
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._on_token = on_token
        self.raw = ""  # everything decoded so far
        self.text = ""  # what was (or will be) handed out
        self.stopped = False

    def _emit(self, upto: int) -> None:
        piece = self.raw[len(self.text):upto]
        if piece:
            self.text += piece
            if self._on_token is not None:
                self._on_token(piece)

    def feed(self, piece: str) -> bool:
        """Add decoded text; True when a stop string was found (text is then final)."""
        if not piece or self.stopped:
            return self.stopped
        start = max(0, len(self.raw) - self._hold)
        self.raw += piece
        cut = min((i for i in (self.raw.find(s, start) for s in self._stop) if i >= 0),
                  default=-1)
        if cut >= 0:
            self._emit(cut)
            self.stopped = True
            return True
        safe = len(self.raw)
        for s in self._stop:  # keep back a tail that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(self.raw)), 0, -1):
                if self.raw.endswith(s[:k]):
                    safe = min(safe, len(self.raw) - k)
                    break
        self._emit(safe)
        return False

    def close(self) -> None:
        if not self.stopped:
            self._emit(len(self.raw))
