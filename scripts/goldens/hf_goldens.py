#!/usr/bin/env python3
"""Writes the Hugging Face folder goldens, with the reference writers themselves:

- tests/golden/hf_tokenizers/<family>/tokenizer.json (+ tokenizer_config.json): small
  tokenizers trained with the `tokenizers` package in each supported tokenizer.json form
  (GPT-2 ByteLevel, SmolLM2's Digits + ByteLevel, Llama-3's and Qwen2's Split regexes, and a
  Llama-2-style SentencePiece BPE with byte fallback, merges rebuilt as transformers' SpmConverter
  writes them), and tests/golden/hf_tokenizers.json: their ids for a few hundred strings
  (`tokenizers`, add_special_tokens=False; special tokens in the text are split out);
- tests/golden/hf_tiny_llama.json: transformers' logits (f32 compute; for bf16 the bf16 weights
  widened to f32) for a few prompts and its greedy continuations, on the tiny random
  LlamaForCausalLM with the smollm tokenizer that tests/fixtures/make_test_fixtures.cpp writes
  into the build tree (build/test_fixtures/hf_tiny_llama/{f32,bf16}/: the committed
  tests/golden/hf_tiny_llama/*/ text files and generated safetensors weights, the bf16 copy
  sharded as its committed index says). transformers reads that folder as it is.

tests/model/hf_golden_test.cpp compares lightserve against them.

    python3 -m venv .venv-hf && .venv-hf/bin/pip install torch transformers tokenizers
    cmake --build build --target test_fixtures
    .venv-hf/bin/python scripts/goldens/hf_goldens.py build/test_fixtures   # hf_tiny_llama.json
    .venv-hf/bin/python scripts/goldens/hf_goldens.py --tokenizers          # retrains them

Retraining the tokenizers is not reproducible (the `tokenizers` trainer gives another vocabulary
each run): it changes every tokenizer golden and the tiny models' vocabularies, so their folders'
tokenizer.json copies, the fixtures and every model golden must then be redone.
"""
import argparse
import json
import os
import sys

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(REPO, "tests", "golden")
sys.path.insert(0, HERE)
import tokenizer_families_goldens as families  # noqa: E402  (its strings; runs nothing)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def corpus():
    """Training text: this repository's documentation and the test strings' words."""
    lines = []
    for root in ["README.md", "docs"]:
        path = os.path.join(REPO, root)
        paths = [path] if os.path.isfile(path) else sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith(".md"))
        for p in paths:
            lines += open(p, encoding="utf-8").read().splitlines()
    lines += [" ".join(families.WORDS)] * 20
    return lines


def strings():
    out = list(families.base_strings()) + families.SPECIAL_CONTEXT + families.random_strings(
        260, seed=11)
    out += ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b",
            "1234567 89", "   leading", "trailing   ", "\n\n\n", "tab\tand\t\ttabs"]
    return out


def byte_level(pre, vocab_size, ignore_merges=False):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = ignore_merges
    return data


def sentencepiece_style(vocab_size):
    """A Llama-2-style tokenizer.json: <unk> <s> </s>, 256 byte tokens, pieces trained with
    U+2581 for spaces, merges rebuilt from the vocabulary as transformers' SpmConverter does."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    trained = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in trained:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = []
    for piece, piece_id in vocab.items():
        if piece_id < 259 or len(piece) < 2:
            continue
        pairs = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        pairs = [(vocab[a], vocab[b], a, b) for a, b in pairs if a in vocab and b in vocab]
        merges += [(piece_id, ia, ib, a, b) for ia, ib, a, b in sorted(pairs)]
    merges.sort()
    data = json.loads(tok.to_str())
    data["model"] = {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                     "continuing_subword_prefix": None, "end_of_word_suffix": None,
                     "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                     "vocab": vocab, "merges": [[a, b] for _, _, _, a, b in merges]}
    data["pre_tokenizer"] = None
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return data


FAMILIES = {
    "gpt2": lambda: byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), 800),
    "smollm": lambda: byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)]), 1000),
    "llama-bpe": lambda: byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 800, True),
    "qwen2": lambda: byte_level(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), 800),
    "spm": lambda: sentencepiece_style(800),
}


def write_tokenizers():
    out = {"strings": strings(), "families": {}}
    for name, make in FAMILIES.items():
        folder = os.path.join(GOLDEN, "hf_tokenizers", name)
        os.makedirs(folder, exist_ok=True)
        data = make()
        text = json.dumps(data, ensure_ascii=False)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(text)
        spm = name == "spm"
        config = {"add_bos_token": spm, "bos_token": "<s>" if spm else None,
                  "eos_token": "</s>" if spm else "<|im_end|>", "chat_template": CHATML}
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
        tok = Tokenizer.from_str(text)
        ids = [tok.encode(s, add_special_tokens=False).ids for s in out["strings"]]
        out["families"][name] = {"vocab_size": tok.get_vocab_size(), "ids": ids}
    with open(os.path.join(GOLDEN, "hf_tokenizers.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


PROMPTS = ["The capital of France is", "def fib(n):\n    return", "Hello, world! 123",
           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]


def reference_runs(reference, tok, prompts=None):
    """Per prompt: its ids, the f32-compute reference's last-position logits, each position's
    argmax and top-2 gap, and 8 greedy tokens with their top-2 gaps (what hf_golden_test reads)."""
    runs = []
    for prompt in PROMPTS if prompts is None else prompts:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        with torch.no_grad():
            logits = reference(torch.tensor([ids])).logits[0]
            out = reference.generate(torch.tensor([ids]), max_new_tokens=8,
                                     do_sample=False, eos_token_id=None, pad_token_id=0,
                                     output_scores=True, return_dict_in_generate=True)
        generated = out.sequences[0][len(ids):].tolist()
        greedy_gaps = [float(v[0] - v[1]) for v in
                       (torch.topk(s[0], 2).values for s in out.scores)]
        top2 = torch.topk(logits, 2, dim=-1)
        runs.append({"ids": ids, "last_logits": [round(v, 6) for v in logits[-1].tolist()],
                     "argmax": logits.argmax(-1).tolist(),
                     "top2_gap": [round(float(a - b), 6) for a, b in top2.values.tolist()],
                     "greedy": generated,
                     "greedy_gaps": [round(g, 6) for g in greedy_gaps]})
    return runs


def write_tiny_llama(fixtures):
    tok = Tokenizer.from_file(os.path.join(GOLDEN, "hf_tokenizers", "smollm", "tokenizer.json"))
    result = {"prompts": PROMPTS, "variants": {}}
    for variant in ["f32", "bf16"]:
        folder = os.path.join(fixtures, "hf_tiny_llama", variant)
        # The saved weights loaded in f32 (bf16 widened): the f32-compute reference.
        reference = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        result["variants"][variant] = reference_runs(reference, tok)
    with open(os.path.join(GOLDEN, "hf_tiny_llama.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixtures", nargs="?", help="the generated fixture directory")
    parser.add_argument("--tokenizers", action="store_true", help="retrain the tokenizers")
    args = parser.parse_args()
    if args.tokenizers:
        write_tokenizers()
    elif args.fixtures:
        write_tiny_llama(args.fixtures)
    else:
        parser.error("give the fixture directory (build/test_fixtures) or --tokenizers")
