#!/usr/bin/env python3
"""Writes tests/golden/tokenizer_families.json: the pinned llama.cpp's tokenization (its
llama-tokenize tool, parse_special on, the vocabulary's own BOS rule) of a few hundred strings
with the vocabulary-only GGUF files of other model families (Llama-2 and Phi-3 SentencePiece,
Llama-3 and Qwen2 BPE). tests/model/tokenizer_families_test.cpp compares lightserve against it.

    bash scripts/fetch_vocabs.sh && bash scripts/build_llamacpp.sh
    python3 scripts/goldens/tokenizer_families_goldens.py

The strings: the default model's golden strings (scripts/goldens/tokenizer_goldens.py), every
family's special tokens in context, and seeded random mixtures of words from many scripts,
code, whitespace runs and emoji.
"""
import json
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
VOCABS = ["llama-spm", "phi-3", "llama-bpe", "qwen2"]
TOKENIZE = os.path.join(REPO, ".cache", "llama.cpp", "bin", "llama-tokenize")


def base_strings():
    # tokenizer_goldens.py imports llama_cpp at the top; read its STRINGS without running it.
    source = open(os.path.join(HERE, "tokenizer_goldens.py"), encoding="utf-8").read()
    start = source.index("LONG_PARAGRAPH = (")
    end = source.index("SPECIAL_FALSE = {")
    scope = {}
    exec(source[start:end], scope)  # noqa: S102 -- our own file: two literal assignments
    return scope["STRINGS"]


SPECIAL_CONTEXT = [
    "<s>Hello</s>", "<s> <s>x", "</s></s>", "a<unk>b", "<s>[INST] Hi [/INST]",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|eot_id|><|eot_id|>", "x<|end_of_text|>y",
    "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>", "<|user|>\nHi<|end|>\n<|assistant|>", "<|system|>You are helpful.<|end|>",
]

WORDS = [
    "the", "The", "quick", "brown", "fox", "don't", "I'm", "we'll", "CAPS", "mIxEd", "naïve",
    "Straße", "Привет", "мир", "你好", "世界", "こんにちは", "안녕", "مرحبا", "שלום", "नमस्ते",
    "Ελλάδα", "ไทย", "Tiếng", "🦙", "🚀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "∑", "½", "²", "1", "42", "3.14",
    "1,000", "2024-12-04", "0x1F", "foo_bar", "camelCase", "snake_case()", "a+b", "x[i]",
    "{\"k\": [1, 2]}", "<tag>", "</tag>", "http://a.b/c?d=e", "user@example.com", "...", "!!!",
    "--", "#", "$100", "€5", "¿Qué?", "«quote»", "“smart”", "—", "\\n", "'", "\"",
]
SEPARATORS = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\r\n", "", ",", ". ", " - "]


def random_strings(count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 12)):
            parts.append(rng.choice(WORDS))
            parts.append(rng.choice(SEPARATORS))
        text = "".join(parts)
        if rng.random() < 0.2:
            text = rng.choice([" ", "  ", "\n", "\t"]) + text
        out.append(text)
    return out


def tokenize(vocab, text):
    path = os.path.join("/tmp", f"tokenizer_families_{os.getpid()}.txt")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    result = subprocess.run(
        [TOKENIZE, "-m", os.path.join(REPO, "models", "vocab", f"ggml-vocab-{vocab}.gguf"),
         "-f", path, "--no-escape", "--ids", "--log-disable"],
        capture_output=True, text=True, check=True)
    line = result.stdout.strip().splitlines()[-1]
    return json.loads(line)


def main():
    strings = base_strings() + SPECIAL_CONTEXT + random_strings(200, seed=20261204)
    strings = [s for s in strings if s]  # llama-tokenize refuses an empty prompt file
    golden = {
        "generator": "scripts/goldens/tokenizer_families_goldens.py",
        "llama_cpp": open(os.path.join(REPO, ".cache", "llama.cpp", "VERSION")).read().strip(),
        "strings": strings,
        "vocabs": {},
    }
    for vocab in VOCABS:
        cases = []
        for index, text in enumerate(strings):
            cases.append({"string": index, "parse_special": True, "ids": tokenize(vocab, text)})
        # vocab size from the tokenization of nothing is not available; read it from the file.
        golden["vocabs"][vocab] = {"vocab_size": vocab_size(vocab), "cases": cases}
        print(f"{vocab}: {len(cases)} cases", file=sys.stderr)
    out = os.path.join(REPO, "tests", "golden", "tokenizer_families.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}", file=sys.stderr)


def vocab_size(vocab):
    # The GGUF header: the tokens array is the first string array named tokenizer.ggml.tokens.
    import struct
    path = os.path.join(REPO, "models", "vocab", f"ggml-vocab-{vocab}.gguf")
    data = open(path, "rb").read()
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key)
    value_type, element_type, count = struct.unpack_from("<IIQ", data, at)
    assert value_type == 9 and element_type == 8, (value_type, element_type)
    return count


if __name__ == "__main__":
    main()
