#!/usr/bin/env python3
"""Forward-pass goldens of the architectures beyond plain Llama, recorded by `transformers` over
the tiny random models that tests/fixtures/make_test_fixtures.cpp writes into the build tree
(the committed tests/golden/<name>/*/ text files plus generated safetensors weights):

- hf_tiny_qwen2/{f32,bf16}/: a Qwen2ForCausalLM (Q/K/V biases, NEOX RoPE, tied embeddings) with
  the qwen2 tokenizer of tests/golden/hf_tokenizers;
- hf_tiny_llama31/{f32,bf16}/: a LlamaForCausalLM with Llama-3.1's rope_scaling (rope_type
  llama3; original_max_position_embeddings 64 below max_position_embeddings 512, so that low,
  smoothed and high frequencies all occur) with the llama-bpe tokenizer;
- tests/golden/<name>.json: transformers' logits (f32 compute; for bf16 the bf16 weights widened
  to f32) for a few prompts (one past the original context) and its greedy continuations, in
  the format of tests/golden/hf_tiny_llama.json.

The generator draws biases and norms away from transformers' initial 0 and 1 so that a dropped
bias or a misplaced norm shows. scripts/goldens/hf_arch_gguf.py checks the generated GGUF copy of
the f32 Qwen2. tests/model/hf_golden_test.cpp compares lightserve against them.

    cmake --build build --target test_fixtures
    .venv-hf/bin/python scripts/goldens/hf_arch_goldens.py build/test_fixtures
    .venv-gguf/bin/python scripts/goldens/hf_arch_gguf.py build/test_fixtures
"""
import json
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hf_goldens  # noqa: E402  (its prompts and paths; runs nothing)

GOLDEN = hf_goldens.GOLDEN
LONG = ("Rotary position embeddings turn each pair of query and key values by an angle that "
        "grows with the position; Llama 3.1 stretches the slow pairs by a factor so that the "
        "model reads far beyond the context it was trained on. ") * 3
PROMPTS = hf_goldens.PROMPTS + [LONG]


def record(fixtures, name, cls, tok_family):
    tok = Tokenizer.from_file(os.path.join(GOLDEN, "hf_tokenizers", tok_family, "tokenizer.json"))
    result = {"prompts": PROMPTS, "variants": {}}
    for variant in ["f32", "bf16"]:
        folder = os.path.join(fixtures, name, variant)
        # The saved weights, loaded in f32: the f32-compute reference.
        reference = cls.from_pretrained(folder, dtype=torch.float32).eval()
        assert tok.get_vocab_size() == reference.config.vocab_size, folder
        result["variants"][variant] = hf_goldens.reference_runs(reference, tok, PROMPTS)
    with open(os.path.join(GOLDEN, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(hf_goldens.REPO, "build",
                                                                   "test_fixtures")
    record(fixtures, "hf_tiny_qwen2", Qwen2ForCausalLM, "qwen2")
    record(fixtures, "hf_tiny_llama31", LlamaForCausalLM, "llama-bpe")


if __name__ == "__main__":
    main()
