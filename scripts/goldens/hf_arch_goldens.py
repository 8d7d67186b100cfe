#!/usr/bin/env python3
"""Forward-pass goldens of the architectures beyond plain Llama, written by `transformers`:

- tests/golden/hf_tiny_qwen2/{f32,bf16}/: a tiny random Qwen2ForCausalLM (Q/K/V biases, NEOX
  RoPE, tied embeddings) with the qwen2 tokenizer of tests/golden/hf_tokenizers;
- tests/golden/hf_tiny_llama31/{f32,bf16}/: a tiny random LlamaForCausalLM with Llama-3.1's
  rope_scaling (rope_type llama3; original_max_position_embeddings 64 below
  max_position_embeddings 512, so that low, smoothed and high frequencies all occur) with the
  llama-bpe tokenizer;
- tests/golden/<name>.json: transformers' logits (f32 compute; for bf16 the bf16 weights widened
  to f32) for a few prompts (one past the original context) and its greedy continuations, in
  the format of tests/golden/hf_tiny_llama.json.

Biases and norms are drawn away from transformers' initial 0 and 1 so that a dropped bias or a
misplaced norm shows. scripts/goldens/hf_arch_gguf.py then writes the f32 Qwen2 as a GGUF file.
tests/model/hf_golden_test.cpp compares lightserve against them.

    .venv-hf/bin/python scripts/goldens/hf_arch_goldens.py
    .venv-gguf/bin/python scripts/goldens/hf_arch_gguf.py
"""
import json
import os
import shutil
import sys

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hf_goldens  # noqa: E402  (its prompts and paths; runs nothing)

GOLDEN = hf_goldens.GOLDEN
LONG = ("Rotary position embeddings turn each pair of query and key values by an angle that "
        "grows with the position; Llama 3.1 stretches the slow pairs by a factor so that the "
        "model reads far beyond the context it was trained on. ") * 3
PROMPTS = hf_goldens.PROMPTS + [LONG]


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))


def write_model(name, cls, config, tok_family):
    tok_dir = os.path.join(GOLDEN, "hf_tokenizers", tok_family)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    assert tok.get_vocab_size() == config.vocab_size, (tok.get_vocab_size(), config.vocab_size)
    torch.manual_seed(0)
    model = cls(config).eval()
    randomize(model)
    root = os.path.join(GOLDEN, name)
    shutil.rmtree(root, ignore_errors=True)
    result = {"prompts": PROMPTS, "variants": {}}
    for variant, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
        folder = os.path.join(root, variant)
        m = cls(config).eval()
        m.load_state_dict(model.state_dict())
        m = m.to(dtype)
        m.save_pretrained(folder, safe_serialization=True)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(tok_dir, f), folder)
        # The saved weights, loaded in f32: the f32-compute reference. (Not m.to(float32): the
        # rotary inv_freq buffer would keep the bf16 rounding of m.to(bfloat16), which moves the
        # angles of a long prompt by up to 2^-9 of themselves.)
        reference = cls.from_pretrained(folder, dtype=torch.float32).eval()
        runs = hf_goldens.reference_runs(reference, tok, PROMPTS)
        result["variants"][variant] = runs
    with open(os.path.join(GOLDEN, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))


def special(family, text):
    return Tokenizer.from_file(
        os.path.join(GOLDEN, "hf_tokenizers", family, "tokenizer.json")).token_to_id(text)


def main():
    qwen2 = Qwen2Config(vocab_size=800, hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-6,
                        tie_word_embeddings=True, initializer_range=0.1,
                        use_sliding_window=False,
                        bos_token_id=special("qwen2", "<|endoftext|>"),
                        eos_token_id=special("qwen2", "<|im_end|>"))
    write_model("hf_tiny_qwen2", Qwen2ForCausalLM, qwen2, "qwen2")
    llama31 = LlamaConfig(vocab_size=800, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-5,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 64},
                          tie_word_embeddings=False, initializer_range=0.1,
                          bos_token_id=special("llama-bpe", "<|im_start|>"),
                          eos_token_id=special("llama-bpe", "<|im_end|>"))
    write_model("hf_tiny_llama31", LlamaForCausalLM, llama31, "llama-bpe")


if __name__ == "__main__":
    main()
