#!/usr/bin/env python3
"""Records the K-quant / Q5 forward-pass goldens with llama.cpp itself:

- the files: tests/fixtures/make_test_fixtures.cpp writes kquant_tiny/tiny-<PRESET>.gguf into the
  build tree (build/test_fixtures/), a tiny random LLaMA (hidden 256 so that every row is whole
  256-value super-blocks, ffn 512 so ffn_down rows are two, 4 heads / 2 KV heads of 64, one
  layer, the byte-level SentencePiece-style "llama" vocabulary of lightserve's dummy models:
  <unk>, <s>, </s>, <0x00>..<0xFF>, U+2581) in the per-tensor types of the pinned
  llama-quantize's Q4_K_M, Q5_K_M, Q6_K, Q5_0, Q5_1, Q8_0 and Q4_0 presets (mixed Q/K/V types
  included), its quantized blocks written directly as random block bytes (no quantizer needed,
  bit-reproducible; tests/fixtures/fixtures.sha256 pins them);
- tests/golden/kquant_tiny.json: llama.cpp's logits for a few token-id prompts on each file,
  from scripts/goldens/llama_logits.cpp built against the pinned libllama (CPU, flash attention
  off, batch decode, 1 thread, llama.cpp's default weight repacking): per prompt the ids, the
  last position's logits (full vocabulary), each position's argmax and top-2 gap, and at every
  position the logits of 16 probe ids (llama.cpp's top 8 and 8 random ids); plus
  llama.cpp's own spread on the same file (2 threads, and --no-repack, against the reference).

tests/model/kquant_golden_test.cpp compares lightserve against them.

    bash scripts/build_llamacpp.sh
    python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf numpy
    cmake --build build --target test_fixtures
    .venv-gguf/bin/python scripts/goldens/kquant_goldens.py build/test_fixtures
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
CACHE = os.path.join(REPO, ".cache", "llama.cpp")
BIN = os.path.join(CACHE, "bin")
SDIST = os.path.join(CACHE, "llama_cpp_python-0.3.36.tar.gz")
WORK = os.path.join(REPO, ".cache", "kquant_tiny")  # git-ignored: the tool

TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q5_0", "Q5_1", "Q8_0", "Q4_0"]
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 256, 512, 1, 4, 2  # the generated files' shape
SEED = 11
PROMPT_LENGTHS = [8, 23, 40]


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
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "test_fixtures")
    os.makedirs(WORK, exist_ok=True)
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
        path = os.path.join(fixtures, "kquant_tiny", "tiny-%s.gguf" % qtype)
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
