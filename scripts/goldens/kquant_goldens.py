#!/usr/bin/env python3
"""Writes the K-quant / Q5 forward-pass goldens with the reference writers themselves:

- a tiny random LLaMA in F32, written by the `gguf` PyPI package (hidden 256 so that every row
  is whole 256-value super-blocks, ffn 512 so ffn_down rows are two, 4 heads / 2 KV heads of 64,
  one layer, the byte-level SentencePiece-style "llama" vocabulary of lightserve's dummy models:
  <unk>, <s>, </s>, <0x00>..<0xFF>, U+2581);
- quantized by the pinned llama.cpp's own `llama-quantize` (scripts/build_llamacpp.sh) into
  tests/golden/kquant_tiny/tiny-<TYPE>.gguf for Q4_K_M, Q5_K_M, Q6_K, Q5_0, Q5_1, Q8_0, Q4_0
  (its presets as they are: per-tensor types chosen by llama.cpp, mixed Q/K/V types included);
- tests/golden/kquant_tiny.json: llama.cpp's logits for a few token-id prompts on each file,
  from scripts/goldens/llama_logits.cpp built against the pinned libllama (CPU, flash attention
  off, batch decode, 1 thread, llama.cpp's default weight repacking): per prompt the ids, the
  last position's logits (full vocabulary), each position's argmax and top-2 gap, and at every
  position the logits of 16 probe ids (llama.cpp's top 8 and 8 random ids); plus
  llama.cpp's own spread on the same file (2 threads, and --no-repack, against the reference).

tests/model/kquant_golden_test.cpp compares lightserve against them.

    bash scripts/build_llamacpp.sh
    python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf numpy
    .venv-gguf/bin/python scripts/goldens/kquant_goldens.py
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GOLDEN = os.path.join(REPO, "tests", "golden")
OUT_DIR = os.path.join(GOLDEN, "kquant_tiny")
CACHE = os.path.join(REPO, ".cache", "llama.cpp")
BIN = os.path.join(CACHE, "bin")
SDIST = os.path.join(CACHE, "llama_cpp_python-0.3.36.tar.gz")
WORK = os.path.join(REPO, ".cache", "kquant_tiny")  # git-ignored: the F32 file, the tool

TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0", "Q5_1", "Q8_0", "Q4_0"]
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, CONTEXT = 256, 512, 1, 4, 2, 256
HEAD_DIM = HIDDEN // HEADS
SEED = 11
PROMPT_LENGTHS = [8, 23, 40]


def vocabulary():
    tokens, types = ["<unk>", "<s>", "</s>"], [2, 3, 3]  # unknown, control
    for byte in range(256):
        tokens.append("<0x%02X>" % byte)
        types.append(6)  # byte
    tokens.append("\u2581")
    types.append(1)  # normal
    return tokens, types


def write_f32(path):
    rng = np.random.default_rng(SEED)
    tokens, types = vocabulary()
    vocab = len(tokens)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("kquant-tiny-random")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)

    def matrix(rows, cols, scale=1.0):
        # numpy (rows, cols) is GGUF's [cols, rows]: `cols` is the reduced dimension. 1/sqrt(cols)
        # keeps each layer's outputs at unit scale.
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm():
        return rng.uniform(0.5, 1.5, HIDDEN).astype(np.float32)

    w.add_tensor("token_embd.weight", rng.standard_normal((vocab, HIDDEN)).astype(np.float32))
    for i in range(LAYERS):
        p = "blk.%d." % i
        w.add_tensor(p + "attn_norm.weight", norm())
        # Q scaled up so that attention is peaked rather than near-uniform.
        w.add_tensor(p + "attn_q.weight", matrix(HEADS * HEAD_DIM, HIDDEN, 2.0))
        w.add_tensor(p + "attn_k.weight", matrix(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(p + "attn_v.weight", matrix(KV_HEADS * HEAD_DIM, HIDDEN))
        w.add_tensor(p + "attn_output.weight", matrix(HIDDEN, HEADS * HEAD_DIM))
        w.add_tensor(p + "ffn_norm.weight", norm())
        w.add_tensor(p + "ffn_gate.weight", matrix(FFN, HIDDEN, 2.0))
        w.add_tensor(p + "ffn_up.weight", matrix(FFN, HIDDEN))
        w.add_tensor(p + "ffn_down.weight", matrix(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", norm())
    # Logits of standard deviation ~4: well spread, top-2 gaps mostly above the tolerance.
    w.add_tensor("output.weight", matrix(vocab, HIDDEN, 4.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_tool():
    """scripts/goldens/llama_logits.cpp against the pinned llama.cpp's headers and libraries."""
    exe = os.path.join(WORK, "llama_logits")
    src = os.path.join(HERE, "llama_logits.cpp")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(SDIST) as tar:
            members = [m for m in tar.getmembers()
                       if "/vendor/llama.cpp/include/" in m.name
                       or "/vendor/llama.cpp/ggml/include/" in m.name]
            tar.extractall(tmp, members=members)
        root = glob.glob(os.path.join(tmp, "*", "vendor", "llama.cpp"))[0]
        libdir = os.path.realpath(BIN)
        cxx = shutil.which("clang++") or shutil.which("g++")
        subprocess.run([cxx, "-std=c++17", "-O2", "-I", os.path.join(root, "include"),
                        "-I", os.path.join(root, "ggml", "include"), src, "-L", libdir,
                        "-lllama", "-lggml", "-lggml-base", "-Wl,-rpath," + libdir, "-o", exe],
                       check=True)
    return exe


def prompts():
    rng = np.random.default_rng(SEED + 1)
    out = []
    for n in PROMPT_LENGTHS:
        # BOS, then byte tokens and the space piece (ids 3..259).
        out.append([1] + [int(x) for x in rng.integers(3, 260, n - 1)])
    return out


def run_llama(exe, model, ids, threads=1, repack=True):
    cmd = [exe, model, "--threads", str(threads)] + ([] if repack else ["--no-repack"])
    cmd += [",".join(map(str, p)) for p in ids]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [np.array(p["logits"], dtype=np.float64) for p in json.loads(out)["prompts"]]


def tensor_types(path):
    reader = gguf.GGUFReader(path)
    return {t.name: t.tensor_type.name for t in reader.tensors}


def main():
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(OUT_DIR, exist_ok=True)
    f32 = os.path.join(WORK, "tiny-F32.gguf")
    write_f32(f32)
    exe = build_tool()
    ids = prompts()
    golden = {
        "source": "scripts/goldens/kquant_goldens.py",
        "reference": open(os.path.join(CACHE, "VERSION")).read().strip().splitlines(),
        "llama_cpp": "1 thread, default repacking, flash attention off, one batch per prompt",
        "shape": {"hidden": HIDDEN, "ffn": FFN, "layers": LAYERS, "heads": HEADS,
                  "kv_heads": KV_HEADS},
        "prompts": ids,
        "files": {},
    }
    for qtype in TYPES:
        path = os.path.join(OUT_DIR, "tiny-%s.gguf" % qtype)
        subprocess.run([os.path.join(BIN, "llama-quantize"), f32, path, qtype], check=True,
                       capture_output=True)
        reference = run_llama(exe, path, ids)
        spread = {}
        for name, kwargs in [("threads_2", {"threads": 2}), ("no_repack", {"repack": False})]:
            other = run_llama(exe, path, ids, **kwargs)
            spread[name] = {
                "last": max(float(np.abs(a[-1] - b[-1]).max()) for a, b in zip(reference, other)),
                "all_positions": max(float(np.abs(a - b).max())
                                     for a, b in zip(reference, other)),
            }
        runs = []
        probe_rng = np.random.default_rng(SEED + 2)
        for logits in reference:
            top2 = np.sort(logits, axis=1)[:, -2:]
            probes = [[int(x) for x in np.argsort(-row)[:8]] +
                      [int(x) for x in probe_rng.choice(len(row), 8, replace=False)]
                      for row in logits]
            runs.append({
                "last_logits": [round(float(x), 6) for x in logits[-1]],
                "argmax": [int(x) for x in logits.argmax(axis=1)],
                "top2_gap": [round(float(x), 6) for x in top2[:, 1] - top2[:, 0]],
                "logit_std": round(float(logits[-1].std()), 4),
                "probe_ids": probes,
                "probe_logits": [[round(float(row[i]), 6) for i in ids_]
                                 for row, ids_ in zip(logits, probes)],
            })
        golden["files"][qtype] = {
            "file": "kquant_tiny/tiny-%s.gguf" % qtype,
            "bytes": os.path.getsize(path),
            "tensor_types": tensor_types(path),
            "llamacpp_spread": spread,
            "runs": runs,
        }
        print("%-7s %7d bytes  spread %s  min top-2 gap (last) %.3f" % (
            qtype, os.path.getsize(path), json.dumps(spread),
            min(r["top2_gap"][-1] for r in runs)))
    with open(os.path.join(GOLDEN, "kquant_tiny.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
