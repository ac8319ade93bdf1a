"""Regenerate tests/data/tiny-llama-onnx: a tiny, randomly initialised Llama for ONNX Runtime GenAI.

The fixture exists so that the onnx_genai backend is tested against the real runtime (load,
chat template, streaming, stop strings, max_tokens, seeds, JSON-schema / Lark guidance) in
well under a second and without any download. Its weights are random, so its text is
gibberish; only the mechanics matter.

What it builds (nothing comes from a model hub):
- a byte-level BPE tokenizer (GPT-2/Qwen2 style, any UTF-8 text encodes) trained with the
  ``tokenizers`` library on the short corpus below, vocabulary ~384, with the ChatML special
  tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` and a ChatML ``chat_template``;
- a LlamaForCausalLM (hidden 64, 2 layers, 4 heads / 2 KV heads, context 2048) with seeded
  random weights, saved with transformers to a temporary folder;
- the ONNX model + genai_config.json from ``python -m onnxruntime_genai.models.builder``
  (int4 MatMulNBits weights like a real edge model, CPU EP; ``--precision fp32`` also works
  and gives ~640 KiB instead of ~320 KiB), after which the hand-written tokenizer files
  replace the builder's re-saved copies, so the fixture does not depend on the transformers
  version (transformers 5, for one, moves the chat template into chat_template.jinja).

How to run it (torch and transformers must NOT go into the project venv; use a throwaway one).
On this machine ``torch==2.13.0`` resolves to a local CPU-only wheel; on another machine add
``--index-url https://download.pytorch.org/whl/cpu`` for torch, else pip fetches GBs of CUDA::

    python3 -m venv /tmp/buildenv
    /tmp/buildenv/bin/pip install torch==2.13.0 transformers onnx onnx_ir \\
        onnxruntime-genai==0.18.0 onnxruntime numpy tokenizers
    /tmp/buildenv/bin/python scripts/make_tiny_onnx_model.py [--out tests/data/tiny-llama-onnx]

The committed fixture was built with torch 2.13.0+cpu, transformers 5.23.0, tokenizers 0.23.3,
onnx 1.23.2, onnx_ir 1.1.0 (the 0.18 builder imports it but the wheel does not depend on it)
and onnxruntime-genai 0.18.0; ``python -m onnxruntime_genai.models.builder --help`` crashes in
0.18 (a stray ``%`` in its help text), the options are in builder.py's get_args().

Then check it with the project venv: ``.venv/bin/python -m pytest tests/test_onnx_genai.py``.
The output is deterministic up to the builder version (seeded weights, fixed corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
INTERMEDIATE = 128
CONTEXT = 2048
VOCAB = 384
SEED = 1234

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Turn on the kitchen light and set the thermostat to 21 degrees.",
    "What is the temperature in the living room? It is 22.5 C and the humidity is 40 %.",
    "You are a helpful assistant running on an edge gateway.",
    "The sensor reported motion at the front door at 07:45.",
    "yes no true false null on off open closed high low",
    '{"name": "lamp", "state": "on", "brightness": 80, "ok": true}',
    '{"room": "kitchen", "value": 21, "unit": "celsius", "active": false}',
    "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, -1, 3.14, 1e3]",
    "Hello, world! How are you today? I am fine, thank you.",
    "system user assistant tool function arguments result",
    "Please summarise the last hour of events from the garden sensors.",
]


def build_tokenizer(out: Path) -> dict[str, int]:
    """Write tokenizer.json and tokenizer_config.json into ``out``; return the special ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for t, i in ids.items()
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": CONTEXT,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    }, indent=2) + "\n")
    return {"vocab": tok.get_vocab_size(), **ids}


def build_hf_model(src: Path, special: dict[str, int]) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=special["vocab"], hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=special["<|endoftext|>"],
        eos_token_id=[special["<|im_end|>"], special["<|endoftext|>"]],
        pad_token_id=special["<|endoftext|>"], torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.save_pretrained(src, safe_serialization=True)
    GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id, do_sample=False,
    ).save_pretrained(src)


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(repo / "tests" / "data" / "tiny-llama-onnx"))
    ap.add_argument("--precision", default="int4", choices=["fp32", "int4"])
    args = ap.parse_args()
    out = Path(args.out)

    with tempfile.TemporaryDirectory(prefix="tiny-llama-") as tmp:
        src = Path(tmp) / "hf"
        build = Path(tmp) / "onnx"
        src.mkdir()
        special = build_tokenizer(src)
        build_hf_model(src, special)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        subprocess.run(
            [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src),
             "-o", str(build), "-p", args.precision, "-e", "cpu",
             "-c", str(Path(tmp) / "cache"), "--extra_options", "hf_token=false"],
            check=True, env=env,
        )
        # The builder re-saves the tokenizer through transformers; ours is what we ship.
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(src / name, build / name)
        for stray in ("chat_template.jinja", "vocab.json", "merges.txt"):
            (build / stray).unlink(missing_ok=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(build, out)

    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB):")
    for p in sorted(out.iterdir()):
        print(f"  {p.name:32s} {p.stat().st_size:>9d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
