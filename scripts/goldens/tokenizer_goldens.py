#!/usr/bin/env python3
"""Writes tests/golden/tokenizer.json: llama.cpp's tokenization of many strings with the default
model, its detokenization, its end-of-generation set, and the model's own Jinja chat template
rendered by llama-cpp-python. tests/model/tokenizer_test.cpp compares lightserve against it.

    python -m venv venv && venv/bin/pip install -r scripts/goldens/requirements.txt
    venv/bin/python scripts/goldens/tokenizer_goldens.py [--model PATH] [--out PATH]
"""
import argparse
import ctypes
import json
import os
import sys

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

LONG_PARAGRAPH = (
    "The history of computing is longer than the history of computing hardware and modern "
    "computing technology and includes the history of methods intended for pen and paper or for "
    "chalk and slate, with or without the aid of tables. In 1642, Blaise Pascal (aged 19) built a "
    "mechanical calculator; by the 1830s Charles Babbage had designed the Analytical Engine, which "
    "Ada Lovelace described as able to \"act upon other things besides number\". Today's "
    "processors execute ~10^9 instructions per second - that's 1,000,000,000 ops/s!\n\n"
    "    Indented line with\ttabs, trailing spaces   \n"
    "Last line: e-mail someone@example.com or visit https://example.org/a?b=c&d=e#frag."
)

# Every string is tokenized with special=True; those in SPECIAL_FALSE also with special=False.
STRINGS = [
    "",
    " ",
    "  ",
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "12345678",
    "3.14159",
    "1,000,000",
    "In 2024 there were 365 days; 42 is the answer.",
    "a    b",
    "   leading spaces",
    "trailing spaces   ",
    "\n",
    "\n\n\n",
    "line one\nline two\r\nline three\n\n",
    "\ttab\tseparated\t\tvalues\t",
    " \t \n mixed \n\t whitespace \t\n ",
    "don't",
    "I'll go, you'd stay, we've been, they're here, it's mine",
    "'s",
    "DON'T SHOUT, I'M HERE",
    "Hello!!! What?! ... (parenthesised) [brackets] {braces} <angle>",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2",
    "Café, naïve, façade, résumé, crème brûlée",
    "Grüße aus München, Straße und Fußgänger",
    "Tiếng Việt có dấu: Xin chào thế giới",
    "Ελληνικά: Καλημέρα κόσμε",
    "Русский текст: Привет, мир!",
    "中文测试：你好，世界！",
    "日本語のテキスト：こんにちは",
    "한국어 텍스트: 안녕하세요 세계",
    "العربية: مرحبا بالعالم",
    "Emoji: 😀🎉👍🏽",
    "Family: 👨‍👩‍👧‍👦 and flags 🇫🇷🇩🇪🇯🇵",
    "Math: ∑ x² ≤ ∞, ½ + ¼ = ¾, 2³ = 8",
    "<|im_start|>user\nhi<|im_end|>",
    "a<|endoftext|>b",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|im_end|><|im_end|>",
    "text <jupyter_code>print(1)<jupyter_output>",
    "<|im_start",
    "zero-width\u200bspace and non\u00a0breaking",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "----------------------------------------",
    LONG_PARAGRAPH,
]

SPECIAL_FALSE = {
    "<|im_start|>user\nhi<|im_end|>",
    "a<|endoftext|>b",
    "<|im_end|><|im_end|>",
    "text <jupyter_code>print(1)<jupyter_output>",
    "Hello world",
}

# Not valid UTF-8: llama.cpp turns each byte that starts no complete sequence into U+FFFD and
# accepts overlong forms and surrogates. (A 4-byte form above U+10FFFF, e.g. f4 90 80 80, makes
# llama.cpp 0.3.36 throw, so it has no golden.)
BYTE_STRINGS = [
    b"\xff", b"\xc3", b"abc\x80xyz", b"\xed\xa0\x80", b"x\xed\xa0\x80y", b" \xed\xa0\x80!",
    b"\xf0\x9f\x98", b"\xf0\x9f\x98 end", b"caf\xc3 \xa9", b"nul\x00byte", b"\xc0\xaf",
    b"\xe0\x80\x80z", b"<|im_start\xff|>", b"a\xfeb\xffc", b"\x04\x06\x13\x14\x16\x1d",
    b"12\xff34",
]

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "user", "content": "Hello!"}], False),
    ([{"role": "system", "content": "You are a pirate."},
      {"role": "user", "content": "Where is the treasure?"}], True),
    ([{"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4"},
      {"role": "user", "content": "And times 3?\nExplain."}], True),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "x"}], False),
]


def token_piece(vocab, token, special):
    size = 256
    buf = (ctypes.c_char * size)()
    n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(token), buf, size, 0, special)
    if n < 0:
        raise RuntimeError(f"piece of token {token} longer than {size} bytes")
    return bytes(buf[:n])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=os.environ.get("LIGHTSERVE_TEST_MODEL", DEFAULT_MODEL))
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "tokenizer.json"))
    args = parser.parse_args()

    llm = Llama(args.model, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    cases = []
    for text in STRINGS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        case = {
            "text": text,
            "ids": ids,
            # bytes, as hex: a token may end inside a UTF-8 character
            "pieces": [token_piece(vocab, t, False).hex() for t in ids],
            "detokenized_special": b"".join(token_piece(vocab, t, True) for t in ids).decode(
                "utf-8", errors="strict"),
        }
        if text in SPECIAL_FALSE:
            case["ids_no_special"] = llm.tokenize(text.encode("utf-8"), add_bos=False,
                                                  special=False)
        cases.append(case)

    byte_cases = []
    for raw in BYTE_STRINGS:
        ids = llm.tokenize(raw, add_bos=False, special=True)
        byte_cases.append({"hex": raw.hex(), "ids": ids,
                           "detokenized": b"".join(token_piece(vocab, t, False)
                                                   for t in ids).hex()})

    template = llm.metadata["tokenizer.chat_template"]
    eos_id = llama_cpp.llama_vocab_eos(vocab)
    bos_id = llama_cpp.llama_vocab_bos(vocab)
    eos_text = llama_cpp.llama_vocab_get_text(vocab, eos_id).decode("utf-8")
    bos_text = llama_cpp.llama_vocab_get_text(vocab, bos_id).decode("utf-8")
    chats = []
    for messages, add_generation_prompt in CONVERSATIONS:
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text,
                                        add_generation_prompt=add_generation_prompt)
        rendered = formatter(messages=messages).prompt
        chats.append({"messages": messages, "add_generation_prompt": add_generation_prompt,
                      "rendered": rendered})

    golden = {
        "generator": "scripts/goldens/tokenizer_goldens.py",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(args.model),
        "vocab_size": n_vocab,
        "bos_id": bos_id,
        "eos_id": eos_id,
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "end_of_generation": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
        "control": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_control(vocab, t)],
        "cases": cases,
        "byte_cases": byte_cases,
        "chats": chats,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} strings, {len(chats)} chats to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
