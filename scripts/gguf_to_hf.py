#!/usr/bin/env python3
"""Convert a GGUF model to a Hugging Face folder (config.json, tokenizer.json, model.safetensors).

Peers that only read Hugging Face folders (vLLM's CPU build) then serve exactly the weights lightserve
serves: the GGUF's tensors dequantized (Q4_1 etc. -> bf16), its tokenizer and its chat template.
A reference tool for benchmarks (scripts/bench_serving.sh), never a dependency of the product.

    .venv-hf/bin/python scripts/gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype bfloat16] [--check]

Needs torch, transformers, accelerate and gguf (the goldens venv: python3 -m venv .venv-hf &&
.venv-hf/bin/pip install torch transformers accelerate gguf). transformers reads the GGUF (undoing
llama.cpp's Q/K row permutation) and writes the folder.

--check verifies the folder against lightserve (build/lightserve):
  1. perplexity: transformers on the folder, `lightserve eval --task perplexity --modes full` on the
     GGUF and the same on the folder (lightserve's own safetensors loader) score the same tokens of a
     real text; each must be within --ppl-tol (default 2%) of transformers'. A logit-level check over
     every scored token; exact equality is not expected: lightserve multiplies Q4_1 weights by
     Q8-quantized activations, and bf16 rounds the dequantized weights;
  2. greedy text (reported, not judged: one near-tie flips a whole continuation): how many tokens of
     transformers' greedy continuation of a few prompts lightserve reproduces, on the GGUF and on
     the folder.
Exit 0 when every perplexity is within the bound, 1 otherwise, with a table of what was compared.
"""

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village by the sea,",
    "The three primary colors are",
]


def convert(gguf_path, out_dir, dtype_name):
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    # transformers keeps a GGUF-loaded model "quantized" and refuses to save it: rebuild a plain model
    # of the same config and move the (already dequantized) weights into it.
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=dtype)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    os.makedirs(out_dir, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"[gguf_to_hf] {gguf_path} -> {out_dir} ({dtype_name}, transformers {transformers.__version__}): "
          f"{', '.join(sorted(os.listdir(out_dir)))}", file=sys.stderr)


def lightserve_generate(model, prompt, tokens):
    cmd = [os.path.join(ROOT, "build", "lightserve"), "generate", "-q", "-m", model, "-p", prompt,
           "-n", str(tokens), "-t", "0", "--lt-mode", "full"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def lightserve_perplexity(model_path, text_path, length, prefix):
    out = os.path.join(ROOT, ".cache", "gguf_to_hf_ppl.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = [os.path.join(ROOT, "build", "lightserve"), "eval", "-q", "-m", model_path, "--task", "perplexity",
           "--modes", "full", "--lengths", str(length), "--prefix", str(prefix), "--text", text_path,
           "--json", out]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    with open(out) as f:
        result = json.load(f)
    # The JSON's first mode is full; its one point is the requested length.
    points = [p for mode in result["modes"] for p in mode["points"]]
    return points[0]["mean_nll"]


def check(gguf_path, out_dir, args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    model.eval()
    ok = True

    # 1. Perplexity on the same tokens. lightserve eval encodes the text with the GGUF's BOS rule;
    # transformers' tokenizer.json carries the same rule, so encode(text) gives the same ids (the
    # tokenizer goldens check the encoders against each other).
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][: args.length]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    # Position p predicts ids[p + 1]; lightserve scores tokens prefix .. length-1.
    targets = torch.tensor(ids[args.prefix:])
    nll_hf = -logp[args.prefix - 1 : len(ids) - 1].gather(1, targets[:, None]).mean().item()
    ppl_hf = math.exp(nll_hf)
    span = f"tokens {args.prefix}..{args.length} of {os.path.basename(args.text)}"
    print(f"| perplexity, {span} | transformers (folder, f32 compute) | {ppl_hf:.4f} | | |")
    for label, path in (("GGUF", gguf_path), ("folder", out_dir)):
        ppl_ls = math.exp(lightserve_perplexity(path, args.text, args.length, args.prefix))
        rel = abs(ppl_ls - ppl_hf) / ppl_hf
        good = rel <= args.ppl_tol
        ok &= good
        print(f"| perplexity, {span} | lightserve ({label}) | {ppl_ls:.4f} | {100 * rel:.2f}% | "
              f"{'ok' if good else 'FAIL'} |")

    # 2. Greedy continuations.
    for prompt in PROMPTS:
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=args.greedy_tokens, do_sample=False)
        hf_ids = gen[0, enc["input_ids"].shape[1]:].tolist()
        ls_gguf = lightserve_generate(gguf_path, prompt, args.greedy_tokens)
        ls_folder = lightserve_generate(out_dir, prompt, args.greedy_tokens)
        cells = []
        for text in (ls_gguf, ls_folder):
            ls_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            same = 0
            while same < min(len(hf_ids), len(ls_ids)) and hf_ids[same] == ls_ids[same]:
                same += 1
            cells.append(f"{same} / {len(hf_ids)}")
        print(f"| greedy {json.dumps(prompt)[:40]} | tokens equal to transformers' | GGUF {cells[0]} | "
              f"folder {cells[1]} | |")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--check", action="store_true", help="verify the folder against lightserve")
    parser.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--length", type=int, default=768)
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--ppl-tol", type=float, default=0.02)
    parser.add_argument("--greedy-tokens", type=int, default=24)
    args = parser.parse_args()
    if not os.path.isfile(args.gguf):
        sys.exit(f"gguf_to_hf: {args.gguf}: no such file")
    convert(args.gguf, args.out_dir, args.dtype)
    if args.check:
        sys.exit(0 if check(args.gguf, args.out_dir, args) else 1)


if __name__ == "__main__":
    main()
