"""A BERT sentence encoder (all-MiniLM-L6-v2 and the like) on plain onnxruntime, no torch.

The pipeline of sentence-transformers for these models: WordPiece tokens (``tokenizers``,
truncated to ``max_length``, 256 for all-MiniLM-L6-v2), the encoder's ``last_hidden_state``,
mean pooling over the attention mask, L2 normalisation.

``onnxruntime``, ``tokenizers`` and ``numpy`` are imported in ``load()`` only, through
:func:`edged.extras.require` (``pip install 'edged[embed]'``).

Batching: texts are tokenized in one call, sorted by length and run in batches of at most
``batch_size`` texts, padded to the longest text of their batch, so little is padded; a
batch is also kept under ``max_batch_cells`` (texts x length^2), since the attention
tensors grow with the square of the length. Padding is masked, so a text gets the same
vector (to float rounding) whatever else is in its batch.

Memory, measured with onnxruntime 1.32 and the bundled int8 model (23 MB file): +95 MB RSS
once loaded (onnxruntime folds the int8 weights' dequantisation into fp32 constants at load,
so the weights are held as int8 and as fp32; without that folding a sentence takes 67 ms
instead of 5), +215 MB peak while loading: ``malloc_trim`` after the load gives the ~60 MB
of the peak that glibc would otherwise keep back to the OS. The CPU memory
arena is off: with it on, one batch of 32 texts of 256 tokens left +900 MB allocated for the
life of the session; with it off that memory goes back after the call, for the same speed
on short texts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from typing import Any

from ..extras import require
from .base import ModelError, file_size
from .embed import Embedder

_HIDDEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxMiniLMEmbedder(Embedder):
    kind = "onnx_minilm"

    def __init__(self, name: str, model_path: str, tokenizer_path: str, *, dim: int = 0,
                 threads: int = 1, max_length: int = 256, batch_size: int = 16,
                 max_batch_cells: int = 2 * 256 * 256) -> None:
        super().__init__(name, dim=dim)
        if not 2 <= max_length <= 512:
            raise ModelError(f"embedder {name!r}: max_length {max_length} not in 2..512")
        if batch_size < 1 or max_batch_cells < 1:
            raise ModelError(f"embedder {name!r}: batch_size and max_batch_cells must be >= 1")
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.threads = max(1, int(threads))
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_cells = max_batch_cells
        self._np: Any = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()
        self._output = ""
        self._pad_id = 0

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        if self.loaded:
            return
        ort = require("onnxruntime")
        tokenizers = require("tokenizers")
        np = require("numpy")
        try:
            tok = tokenizers.Tokenizer.from_file(self.tokenizer_path)
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise ModelError(f"embedder {self.name!r}: cannot read tokenizer "
                             f"{self.tokenizer_path}: {e}") from None
        # tokenizer.json of all-MiniLM-L6-v2 says truncate at 128 and pad to 128 always:
        # truncate at max_length instead, and pad per batch in embed().
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_length)
        pad = tok.token_to_id("[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = False  # see the module docstring
        opts.log_severity_level = 3
        # no busy-waiting worker threads between calls (idle CPU on a gateway)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(self.model_path, sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's Fail, InvalidGraph, NoSuchFile...
            raise ModelError(f"embedder {self.name!r}: cannot load {self.model_path}: "
                             f"{e}") from None
        inputs = tuple(i.name for i in session.get_inputs())
        unknown = [n for n in inputs if n not in _KNOWN_INPUTS]
        if "input_ids" not in inputs or unknown:
            raise ModelError(f"embedder {self.name!r}: {self.model_path} is not a BERT "
                             f"encoder (inputs {list(inputs)}, expected "
                             f"{list(_KNOWN_INPUTS)})")
        outputs = {o.name: o for o in session.get_outputs()}
        output = next((n for n in _HIDDEN_OUTPUTS if n in outputs), None) or next(
            (n for n, o in outputs.items() if len(o.shape) == 3), None)
        if output is None:
            raise ModelError(f"embedder {self.name!r}: {self.model_path} has no token "
                             f"output [batch, sequence, hidden] (outputs {list(outputs)})")
        self._np, self._session, self._tokenizer = np, session, tok
        self._inputs, self._output = inputs, output
        self._pad_id = pad if pad is not None else 0
        self.loaded = True
        try:
            probe = self._run(["probe"])  # warm-up, and the size when the graph hides it
        except Exception:
            self.unload()
            raise
        dim = int(probe.shape[1])
        if self.dim and dim != self.dim:
            self.unload()
            raise ModelError(f"embedder {self.name!r}: vectors have {dim} dimensions, "
                             f"expected {self.dim}")
        self.dim = dim
        _trim_heap()  # loading peaks ~60 MB above what the session keeps; glibc holds it

    def unload(self) -> None:
        self._session = None
        self._tokenizer = None
        self._np = None
        self.loaded = False
        gc.collect()
        _trim_heap()

    def set_threads(self, n: int) -> None:
        """Intra-op threads are a session option: takes effect at the next load."""
        self.threads = max(1, int(n))

    # -- embedding -----------------------------------------------------------------------

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if not self.loaded:
            raise ModelError(f"embedder {self.name!r} is not loaded")
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"embed() takes strings, got {type(t).__name__}")
        vectors: list[list[float]] = self._run(list(texts)).tolist()  # numpy, loaded lazily
        return vectors

    def _run(self, texts: list[str]) -> Any:
        """[len(texts), dim] float32, L2-normalised, in the order of ``texts``."""
        np = self._np
        tok = self._tokenizer
        encode = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
        ids_list = [e.ids for e in encode(texts)]
        lens = [len(i) for i in ids_list]
        order = sorted(range(len(texts)), key=lens.__getitem__)
        out: Any = None
        i = 0
        while i < len(order):
            j = i + 1  # grow the batch while it fits (sorted: the last text is the longest)
            while (j < len(order) and j - i < self.batch_size
                   and (j - i + 1) * lens[order[j]] ** 2 <= self.max_batch_cells):
                j += 1
            idx = order[i:j]
            width = lens[idx[-1]]
            ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, k in enumerate(idx):
                ids[row, :lens[k]] = ids_list[k]
                mask[row, :lens[k]] = 1
            vecs = self._pool(self._forward(ids, mask), mask)
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            i = j
        return out

    def _forward(self, ids: Any, mask: Any) -> Any:
        """The model's token vectors [batch, sequence, hidden] for padded ids and mask."""
        feeds = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feeds["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = self._np.zeros_like(ids)
        try:
            return self._session.run([self._output], feeds)[0]
        except Exception as e:
            raise ModelError(f"embedder {self.name!r}: inference failed: {e}") from None

    def _pool(self, hidden: Any, mask: Any) -> Any:
        """Mean over the unmasked tokens, then L2 normalisation."""
        np = self._np
        w = mask.astype(np.float32)
        summed = np.matmul(w[:, None, :], hidden)[:, 0, :]  # [batch, hidden]
        pooled = summed / np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
        norms = np.sqrt((pooled * pooled).sum(axis=1, keepdims=True))
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)

    # -- accounting ----------------------------------------------------------------------

    def memory_estimate(self) -> int:
        """Bytes when loaded, batch peak included (over- rather than under-estimated).

        Weights: the file, plus 4x its size when onnxruntime turns int8 weights into fp32 at
        load (an fp32 file is over-counted, on purpose). Tokenizer: ~16x its JSON. A batch:
        ~24 live float tensors of [texts, 12 heads, length, length] at the peak (measured
        +250 MB for 4 texts of 256 tokens with all-MiniLM-L6-v2).
        """
        cells = min(self.batch_size * self.max_length ** 2,
                    max(self.max_batch_cells, self.max_length ** 2))
        return (5 * file_size(self.model_path) + 16 * file_size(self.tokenizer_path)
                + cells * 12 * 4 * 24)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(path=self.model_path, tokenizer=self.tokenizer_path, threads=self.threads,
                 max_length=self.max_length, batch_size=self.batch_size,
                 size_bytes=file_size(self.model_path))
        return d


def _trim_heap() -> None:
    """Give freed C-heap pages back to the OS (glibc only)."""
    name = ctypes.util.find_library("c")
    if not name or os.name != "posix":
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass
