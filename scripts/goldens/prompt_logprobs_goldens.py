#!/usr/bin/env python3
"""Prompt-logprob goldens (echo with logprobs, issue 16), written by `transformers`:

tests/golden/prompt_logprobs.json holds, for the tiny random Llama-3.1 of hf_tiny_llama31/f32
(generated into the build tree by tests/fixtures/make_test_fixtures.cpp; see hf_arch_goldens.py)
and the prompts of
tests/golden/hf_tiny_llama31.json, each prompt token's log-probability given the tokens before it
(log_softmax of transformers' f32 logits, the first token has none) and the 3 most likely
alternatives. tests/executor/prompt_logprobs_golden_test.cpp compares the engine's prompt
logprobs (RequestParams::prompt_logprobs) against them.

    .venv-hf/bin/python scripts/goldens/prompt_logprobs_goldens.py build/test_fixtures
"""
import json
import os
import sys

import torch
from transformers import LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
TOP = 3


def main():
    source = json.load(open(os.path.join(GOLDEN, "hf_tiny_llama31.json")))
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "test_fixtures")
    model = LlamaForCausalLM.from_pretrained(os.path.join(fixtures, "hf_tiny_llama31", "f32"),
                                             dtype=torch.float32).eval()
    runs = []
    for prompt, run in zip(source["prompts"], source["variants"]["f32"]):
        ids = run["ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        entries = []
        for t in range(1, len(ids)):
            row = logprobs[t - 1]
            top = torch.topk(row, TOP)
            entries.append({"logprob": round(float(row[ids[t]]), 6),
                            "top_ids": [int(i) for i in top.indices],
                            "top_logprobs": [round(float(v), 6) for v in top.values]})
        runs.append({"prompt": prompt, "ids": ids, "prompt_logprobs": entries})
    out = {"model": "hf_tiny_llama31/f32", "top": TOP, "runs": runs}
    with open(os.path.join(GOLDEN, "prompt_logprobs.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
