#!/usr/bin/env python3
"""Generation and logit goldens from the reference llama.cpp (via llama-cpp-python, pinned).

Writes tests/golden/generation.json: for each prompt its token ids, the greedy continuation ids
(argmax over the full logits, lowest id on ties, NOT stopping at EOS) and logits at four
positions (top-32 plus 64 fixed pseudo-random ids, with the max |logit| and the logsumexp).

Run through scripts/gen_goldens.sh (it provides the venv). Usage:
    python generate_goldens.py [--model M] [--out tests/golden/generation.json]

Caveat for consumers: llama.cpp's CPU matmul for Q4_1 weights quantizes the activations to
Q8_1 first, so its logits are not those of an exact f32 computation; compare logits with a
tolerance and greedy ids where the top-2 gap is clear.
"""
import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import llama_cpp
import llama_cpp.llama_cpp as llama_c
from llama_cpp import Llama

# llama.cpp runs with its defaults (extra buffer types on: on this CPU its AMX buffer type takes
# the Q4_1/Q8_0 weights), with one difference: every eval is ONE token (n_batch = n_ubatch = 1).
# With a GCC 12 build (what `pip install llama-cpp-python` compiles here) ggml's AMX tile kernels,
# used for batches of tokens, crash (GCC drops the stores that fill the tile config before
# ldtilecfg). Single-token evals take its AVX-512-VNNI kernels and run fine. Batch size does not
# change llama.cpp's results beyond f32 summation order. Note that llama.cpp's other CPU paths
# (--no-repack, or a clang build) differ from this one by up to ~1% on some activations of this
# model (measured at layer 10's ffn_down, where the SwiGLU output has outliers): llama.cpp has
# no single ground truth here; this path is its default on this machine.

ROOT = Path(__file__).resolve().parents[2]
PY_VERSION_PINNED = "0.3.36"
# The llama.cpp commit vendored in the llama-cpp-python 0.3.36 sdist (its
# .git/modules/vendor/llama.cpp/HEAD); read from the extracted sdist when present.
LLAMACPP_COMMIT_FALLBACK = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

N_CTX = 2048
N_THREADS = 2
N_BATCH = 1
N_GEN = 64
TOP_K = 32
N_RANDOM = 64
RANDOM_SEED = 20250101
GEN_POS_FOR_LOGITS = 32  # logits after this many generated tokens

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

PARAGRAPH = (
    "The old lighthouse stood at the edge of the cliff for more than two hundred years, "
    "watching ships come and go through fog, storms and the long quiet evenings of summer. "
    "Its keeper, a patient woman named Margaret, climbed the spiral staircase every night to "
    "clean the great lens and trim the wick, even after the coast guard installed an automatic "
    "lamp that needed no human hands at all. She kept a notebook in which she wrote down the "
    "names of the vessels she saw, the direction of the wind, the color of the sea at dawn, and "
    "anything else that seemed worth remembering. Over the decades the notebooks filled three "
    "wooden shelves in the small kitchen below the tower. Visitors from the village sometimes "
    "asked her why she bothered, since nobody would ever read such ordinary records. Margaret "
    "would smile and pour them a cup of tea, and then explain that ordinary days are the ones "
    "most easily forgotten, and that a place is made of small events as much as great ones. "
    "When she finally retired, the town council decided to turn the lighthouse into a museum. "
    "The historians who came to catalog her notebooks were astonished: the pages described "
    "changes in bird migration, the slow retreat of the shoreline, the arrival of new fishing "
    "methods, and the gradual warming of the winters, all recorded with the same careful "
    "handwriting. Scientists from the university used her observations to check their climate "
    "models, and a young writer turned her life into a novel that was read across the country. "
    "Margaret, who now lived in a cottage near the harbor, found the attention amusing. She "
    "still walked to the cliff each evening, looked at the light turning in the dark, and wrote "
    "a few lines in a fresh notebook before going to sleep."
)

PLAIN_PROMPTS = [
    ("plain_capital", "The capital of France is"),
    ("plain_code", "def fibonacci(n):"),
    ("plain_paragraph", PARAGRAPH),
]
CHAT_MESSAGES = [
    ("chat_capital", "What is the capital of France?"),
    ("chat_haiku", "Write a haiku about the ocean."),
    ("chat_sky", "Explain in two sentences why the sky is blue."),
]


def chatml(msg: str) -> str:
    # Exactly what the model's ChatML template renders with the default system prompt and
    # add_generation_prompt=True.
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{msg}<|im_end|>\n"
        f"<|im_start|>assistant\n"
    )


def f32(x) -> float:
    # Shortest decimal that round-trips the float32 value.
    return float(str(np.float32(x)))


def llamacpp_commit() -> str:
    head = (ROOT / ".cache/llama.cpp/src" / f"llama_cpp_python-{PY_VERSION_PINNED}"
            / ".git/modules/vendor/llama.cpp/HEAD")
    if head.is_file():
        return head.read_text().strip()
    return LLAMACPP_COMMIT_FALLBACK


def logits_record(row: np.ndarray, position: int, input_token: int, label: str,
                  random_ids: np.ndarray) -> dict:
    row = row.astype(np.float32)
    order = np.argsort(-row, kind="stable")[:TOP_K]
    m = float(row.max())
    lse = m + math.log(float(np.exp(row.astype(np.float64) - m).sum()))
    return {
        "label": label,
        "position": position,          # 0-based position of the input token in the sequence
        "input_token": int(input_token),
        "max_abs_logit": f32(np.abs(row).max()),
        "logsumexp": f32(lse),
        "top_ids": [int(i) for i in order],
        "top_logits": [f32(row[i]) for i in order],
        "random_ids": [int(i) for i in random_ids],
        "random_logits": [f32(row[i]) for i in random_ids],
    }


def run_prompt(llm: Llama, name: str, kind: str, text: str, rng: np.random.Generator) -> dict:
    special = kind == "chat"
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
    n = len(ids)
    assert n + N_GEN <= N_CTX, (name, n)

    llm.reset()
    llm.eval(ids)
    gen = []
    top2_gaps = []
    for step in range(N_GEN):
        row = llm.scores[llm.n_tokens - 1]
        tok = int(np.argmax(row))  # lowest id wins ties
        srt = np.sort(row)[-2:]
        top2_gaps.append(f32(srt[1] - srt[0]))
        gen.append(tok)
        if step + 1 < N_GEN:  # the last token need not be fed back
            llm.eval([tok])
    assert llm.n_tokens >= n + GEN_POS_FOR_LOGITS

    seq = ids + gen
    random_ids = rng.choice(llm.n_vocab(), size=N_RANDOM, replace=False)
    positions = [
        (0, "first_prompt_token"),
        (n // 2, "middle_prompt_token"),
        (n - 1, "last_prompt_token"),
        (n - 1 + GEN_POS_FOR_LOGITS, f"after_{GEN_POS_FOR_LOGITS}_generated"),
    ]
    logits = [logits_record(llm.scores[p], p, seq[p], lbl, random_ids) for p, lbl in positions]

    return {
        "name": name,
        "kind": kind,
        "prompt": text,
        "tokenize": {"add_bos": False, "special": special},
        "prompt_ids": [int(t) for t in ids],
        "continuation_ids": gen,
        "continuation_text": llm.detokenize(gen).decode("utf-8", errors="replace"),
        "continuation_top2_gap": top2_gaps,
        "logits": logits,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=str(ROOT / "tests/golden/generation.json"))
    args = ap.parse_args()

    if llama_cpp.__version__ != PY_VERSION_PINNED:
        print(f"ERROR: llama-cpp-python {llama_cpp.__version__}, want {PY_VERSION_PINNED}",
              file=sys.stderr)
        return 1

    settings = dict(
        n_ctx=N_CTX,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        n_batch=N_BATCH,
        n_ubatch=N_BATCH,
        logits_all=True,
        flash_attn=False,  # Llama() default in 0.3.36 -> LLAMA_FLASH_ATTN_TYPE_DISABLED
        seed=0,
        verbose=False,
    )
    llm = Llama(model_path=args.model, **settings)
    assert llm.model_params.use_extra_bufts
    # SmolLM2's GGUF says add_bos_token = false: no BOS in front of any prompt.
    assert not llm._model.add_bos_token(), "expected add_bos_token=false for SmolLM2"

    rng = np.random.default_rng(RANDOM_SEED)
    prompts = []
    for name, text in PLAIN_PROMPTS:
        prompts.append(run_prompt(llm, name, "plain", text, rng))
        print(f"  {name}: {len(prompts[-1]['prompt_ids'])} prompt tokens -> "
              f"{prompts[-1]['continuation_text'][:60]!r}", file=sys.stderr)
    for name, msg in CHAT_MESSAGES:
        p = run_prompt(llm, name, "chat", chatml(msg), rng)
        p["chat_message"] = msg
        p["chat_system"] = SYSTEM
        prompts.append(p)
        print(f"  {name}: {len(p['prompt_ids'])} prompt tokens -> "
              f"{p['continuation_text'][:60]!r}", file=sys.stderr)

    out = {
        "format": "lightserve generation goldens v1",
        "generator": "scripts/goldens/generate_goldens.py",
        "reference": {
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": llamacpp_commit(),
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
            "machine": platform.machine(),
        },
        "model": {
            "file": Path(args.model).name,
            "n_vocab": llm.n_vocab(),
            "eos_id": llm.token_eos(),
            "bos_id": llm.token_bos(),
            "add_bos_token": False,
        },
        "settings": {
            "n_ctx": N_CTX,
            "n_threads": N_THREADS,
            "n_batch": N_BATCH,
            "n_ubatch": N_BATCH,
            "kv_cache_type": "f16",  # type_k/type_v left at the default
            "use_extra_bufts": True,  # llama.cpp's default: its AMX buffer type on this CPU
            "flash_attn": False,
            "flash_attn_type": int(llm.context_params.flash_attn_type),
            "logits_all": True,
            "greedy": "argmax over full-vocab logits, lowest id on ties, no EOS stop",
            "n_generate": N_GEN,
            "prompt_eval": "one token per llama_decode (n_batch = n_ubatch = 1), see the note at the top",
            "logits_top_k": TOP_K,
            "logits_random_ids": N_RANDOM,
            "random_seed": RANDOM_SEED,
            "random_ids_rng": "numpy.random.default_rng(seed).choice(n_vocab, 64, replace=False), "
                              "one draw per prompt in file order",
            "logits_positions": "first, middle (n//2), last prompt token, and the row after "
                                f"{GEN_POS_FOR_LOGITS} generated tokens (position n-1+{GEN_POS_FOR_LOGITS})",
        },
        "prompts": prompts,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
